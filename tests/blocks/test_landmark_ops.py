"""PFLD's ops in the block registry: eSE, dilation, sep_kK and gh_kK (ALGORITHMS.md §5.2)."""

import pytest
import torch

from fbnas.arch.errors import ArchDefError
from fbnas.blocks import BLOCKS
from fbnas.blocks.counting import count_module

ESE14 = {"name": "ese", "fm_size": 14}


def plan(name, cin, cout, stride, **kwargs):
    return BLOCKS.get(name).plan(cin, cout, stride, kwargs, {"width_divisor": 1})


@pytest.mark.parametrize("name, kwargs, cin, cout, stride", [
    ("ir_k3_ese", {"expansion": 2, "se_args": ESE14}, 32, 32, 1),
    ("ir_k5_ese", {"expansion": 2, "se_args": {"name": "ese", "pool": "avg"}}, 32, 64, 2),
    ("ir_k3_d3", {"expansion": 1}, 32, 32, 1),
    ("sep_k3", {}, 32, 64, 2),
    ("sep_k5", {}, 32, 32, 1),
    ("gh_k3", {}, 32, 32, 1),
    ("gh_k5", {}, 32, 64, 2),
])
def test_analytic_cost_equals_the_built_module(name, kwargs, cin, cout, stride):
    p = plan(name, cin, cout, stride, **kwargs)
    cost, hw = p.cost((14, 14))
    params, macs, shape = count_module(p.build(), (1, cin, 14, 14))
    assert (cost.params, cost.macs) == (params, macs)
    assert shape == (1, cout, *hw) and hw == (14 // stride, 14 // stride)


def test_ese_by_hand():
    # mid 64: dw 3x3 (576 params), eSE: dw 14x14 pooling (64*196) + 1x1 64x64 with bias.
    p = plan("ir_k3_ese", 32, 32, 1, expansion=2, se_args=ESE14)
    assert p.se.cost.params == 64 * 196 + 64 * 64 + 64
    assert p.se.cost.macs == 64 * 196 + 64 * 64
    block = p.build()
    # The eSE sits between the depthwise BN and its activation.
    assert not hasattr(block.dw, "relu") and isinstance(block.se_relu, torch.nn.ReLU)
    assert block.res_conn is not None
    avg = plan("ir_k3_ese", 32, 32, 1, expansion=2, se_args={"name": "ese", "pool": "avg"})
    assert avg.se.cost.params == 64 * 64 + 64


def test_ese_without_feature_size_is_a_clear_error():
    with pytest.raises(ArchDefError, match="se_args.fm_size"):
        plan("ir_k3_ese", 32, 32, 1, expansion=2)
    with pytest.raises(ArchDefError, match="no option 'ratio'"):
        plan("ir_k3_ese", 32, 32, 1, se_args={"name": "ese", "fm_size": 7, "ratio": 4})


def test_dilated_depthwise_keeps_the_size_and_residual():
    p = plan("ir_k3_d3", 32, 32, 1, expansion=1)
    assert p.dw.conv.dilation == (3, 3) and p.dw.conv.padding == (3, 3)
    assert p.residual and p.pw is None


def test_ghost_and_sep_shapes():
    ghost = plan("gh_k5", 32, 64, 2)
    assert ghost.primary.conv.out_channels == 32 and ghost.primary.conv.stride == (2, 2)
    assert ghost.cheap.conv.groups == 32 and ghost.cheap.conv.kernel_size == (5, 5)
    with pytest.raises(ArchDefError, match="even output width"):
        plan("gh_k3", 32, 33, 1)
    sep = plan("sep_k5", 32, 64, 2)
    assert sep.dw.conv.groups == 32 and sep.pw.act is not None
    with pytest.raises(ArchDefError, match="fixes kernel_size"):
        plan("sep_k3", 32, 32, 1, kernel_size=5)
