"""FBNetBuilder: width ratio, basic args, stage filtering, traces."""

from __future__ import annotations

import pytest
import torch

from fbnas.arch import ArchDefError, unify_arch_def
from fbnas.builder import FBNetBuilder


def test_builder_width_ratio_and_divisor_rounding() -> None:
    from fbnas.arch import unify_arch_def

    spec = unify_arch_def({"blocks": [[("conv_k3", 32, 2, 1)], [("ir_k3", 17, 1, 1)]]})
    builder = FBNetBuilder(width_ratio=0.5, width_divisor=8)
    traces = builder.trace(spec)
    assert [t.out_channels for t in traces] == [16, 8]
    seq = builder.build_blocks(spec, dim_in=3)
    assert seq.out_channels == 8 and list(dict(seq.named_children())) == ["xif0_0", "xif1_0"]
    only_stage1 = builder.build_blocks(spec, dim_in=16, stage_indices=[1])
    assert list(dict(only_stage1.named_children())) == ["xif1_0"]


def test_basic_args_merge_recursively_and_unknown_keys_are_errors() -> None:
    builder = FBNetBuilder(bn_args={"name": "bn", "momentum": 0.1})
    builder.add_basic_args({"bn_args": {"eps": 1e-3}, "relu_args": "swish"})
    assert builder.basic_args["bn_args"] == {"name": "bn", "momentum": 0.1, "eps": 1e-3}
    with pytest.raises(ArchDefError, match="basic_args key 'colour'"):
        builder.add_basic_args({"colour": "red"})


def test_bn_args_reach_every_norm() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3", 16, 1, 1)]]})
    builder = FBNetBuilder(bn_args={"name": "bn", "momentum": 0.003})
    seq = builder.build_blocks(spec)
    momenta = {m.momentum for m in seq.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.003}


def test_trace_with_resolution_gives_shapes_and_names_a_too_small_input() -> None:
    spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)], [("maxpool", 8, 2, 1)]]})
    traces = FBNetBuilder().trace(spec, resolution=32)
    assert [t.out_hw for t in traces] == [(16, 16), (7, 7)]
    with pytest.raises(ArchDefError, match="stage 1, block 0, op 'maxpool'.*too small"):
        FBNetBuilder().trace(spec, resolution=2)


def test_build_blocks_refuses_raw_entries_and_incomplete_unified_dicts() -> None:
    with pytest.raises(TypeError, match="unify_arch_def"):
        FBNetBuilder().build_blocks([("conv_k3", 8, 2, 1)])  # an arch-def entry, not unified
    with pytest.raises(ArchDefError, match="block 0, key 'block_cfg': a unified block needs"):
        FBNetBuilder().build_blocks([{"block_op": "conv_k3"}])
