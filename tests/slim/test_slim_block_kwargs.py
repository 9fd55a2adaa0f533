"""The fbnas block options that subnet extraction writes: mid_channels, always_projection.

They change nothing unless set (the zoo tests check every model is unchanged); set, they
give the static blocks the widths a slimmed block has.
"""

from __future__ import annotations

import pytest

from fbnas import ArchDefError
from fbnas.blocks import BLOCKS


def _plan(op: str, in_c: int, out_c: int, stride: int = 1, **options):
    return BLOCKS.get(op).plan(in_c, out_c, stride, options, {"width_divisor": 8})


def test_irf_mid_channels_replaces_the_expansion_rule() -> None:
    plan = _plan("ir_k3_se", 16, 24, expansion=6, mid_channels=20)
    assert plan.pw.out_channels == plan.dw.conv.groups == plan.pwl.conv.in_channels == 20
    assert plan.se.channels == 20 and plan.se.hidden == 8  # round_channels(int(20 / 4), 8)
    # equal to the input: the pw conv is left out, as for expansion 1
    assert _plan("ir_k3", 16, 24, mid_channels=16).pw is None
    assert _plan("ir_k3", 16, 24, mid_channels=16, always_pw=True).pw is not None


def test_irf_less_se_channels_keeps_its_ratio_with_mid_channels() -> None:
    plan = _plan("ir_k3_se", 24, 24, expansion=6, less_se_channels=True, mid_channels=96,
                 width_divisor=1)
    assert plan.se.hidden == 4  # int(96 * 0.25 / 6)


def test_ir_pool_mid_channels() -> None:
    plan = _plan("ir_pool_hs", 16, 64, expansion=6, mid_channels=40)
    assert plan.pw.out_channels == plan.pwl.conv.in_channels == 40


def test_basic_block_mid_channels_and_always_projection() -> None:
    plan = _plan("res_k3", 16, 16, mid_channels=24)
    conv1, conv2 = (conv for _, conv in plan.convs)
    assert (conv1.out_channels, conv1.norm.channels, conv2.conv.in_channels) == (24, 24, 24)
    assert plan.shortcut is None
    plan = _plan("res_k3", 16, 16, always_projection=True)
    assert plan.shortcut.conv.in_channels == plan.shortcut.out_channels == 16


def test_bottleneck_mid_channels_and_always_projection() -> None:
    plan = _plan("res_block_k3", 64, 64, mid_channels=24, always_projection=True)
    assert [conv.out_channels for _, conv in plan.convs] == [24, 24, 64]
    assert plan.shortcut is not None
    assert [c.out_channels for _, c in _plan("res_block_k3", 64, 64).convs] == [16, 16, 64]


@pytest.mark.parametrize("op", ["ir_k3", "ir_pool", "res_k3", "res_block_k3"])
@pytest.mark.parametrize("value, message", [(0, "mid_channels must be >= 1, got 0"),
                                            (True, "option 'mid_channels' must be int"),
                                            (2.5, "option 'mid_channels' must be int")])
def test_bad_mid_channels_are_arch_def_errors(op: str, value, message: str) -> None:
    with pytest.raises(ArchDefError, match=message):
        _plan(op, 16, 32, mid_channels=value)
