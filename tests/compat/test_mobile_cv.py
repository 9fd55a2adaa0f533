"""mobile-vision's builder API (``fbnas.compat.mobile_cv``) as a user moving over calls it."""

from __future__ import annotations

import copy

import pytest
import torch

import fbnas
from fbnas import ArchDefError
from fbnas.compat import mobile_cv as mbuilder

E4 = {"expansion": 4}
BN = {"bn_args": {"name": "bn", "momentum": 0.01}}
ARCH = {
    "basic_args": {"relu_args": "hswish", "width_divisor": 8},
    "blocks": [
        [("conv_k3", 8, 2, 1, BN)],
        [("ir_k3", 16, 2, 2, E4, BN), ("ir_k5_sehsig", 16, 1, 0, E4), ("ir_k5_se", 24, 1, 1)],
    ],
    "head_notes": {"my": "data"},  # a user's own key: passed through, not refused
}


def test_unify_gives_unified_block_dicts_and_passes_other_keys_through() -> None:
    original = copy.deepcopy(ARCH)
    unified = mbuilder.unify_arch_def(ARCH, ["blocks"])
    assert ARCH == original  # the caller's dict is not touched
    assert unified["head_notes"] == {"my": "data"} and unified["basic_args"] == ARCH[
        "basic_args"]
    blocks = unified["blocks"]
    assert [(b["block_op"], b["stage_idx"], b["block_idx"], b["block_cfg"]["stride"])
            for b in blocks] == [("conv_k3", 0, 0, 2), ("ir_k3", 1, 0, 2), ("ir_k3", 1, 1, 1),
                                 ("ir_k5_se", 1, 2, 1)]  # n=0 dropped, repeats at stride 1
    assert blocks[1]["block_cfg"] == {"out_channels": 16, "stride": 2, "expansion": 4,
                                      "bn_args": {"name": "bn", "momentum": 0.01}}
    assert set(blocks[0]) == {"block_op", "block_cfg", "stage_idx", "block_idx"}
    assert mbuilder.get_num_stages(blocks) == 2
    assert mbuilder.get_num_blocks_in_stage(blocks) == [1, 3]
    assert mbuilder.get_stages_dim_out(blocks) == [8, 24]
    assert mbuilder.count_strides(blocks) == 4


@pytest.mark.parametrize("keyword_form", [False, True])
def test_the_mobile_vision_call_sequence_builds_the_fbnas_network(keyword_form: bool) -> None:
    arch_def = mbuilder.unify_arch_def(ARCH, ["blocks"])
    builder = mbuilder.FBNetBuilder(1.0)
    if keyword_form:
        builder.add_basic_args(**arch_def["basic_args"])
    else:
        builder.add_basic_args(arch_def["basic_args"])
    torch.manual_seed(0)
    model = builder.build_blocks(arch_def["blocks"], dim_in=3)
    model.eval()
    assert mbuilder.FBNetBuilder is fbnas.FBNetBuilder  # one builder, not a second class

    native = {k: v for k, v in ARCH.items() if k != "head_notes"}
    torch.manual_seed(0)
    reference = fbnas.build_model(native, num_classes=None).backbone.stages.eval()
    assert list(model.state_dict()) == list(reference.state_dict())
    assert [n for n, _ in model.named_children()] == ["xif0_0", "xif1_0", "xif1_1", "xif1_2"]
    assert model.out_channels == 24
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(x))
    # the options reached the blocks: hswish from basic_args, momentum from the block dict
    assert type(model.xif1_0.dw.relu).__name__ == "HSwish"
    assert model.xif0_0.bn.momentum == 0.01


def test_build_blocks_with_a_width_ratio_and_stage_indices() -> None:
    arch_def = mbuilder.unify_arch_def(ARCH, ["blocks"])
    builder = mbuilder.FBNetBuilder(0.5, width_divisor=8)
    model = builder.build_blocks(arch_def["blocks"], dim_in=3, stage_indices=[0])
    assert [n for n, _ in model.named_children()] == ["xif0_0"] and model.out_channels == 8


def test_several_block_lists_unify_and_errors_name_the_list_stage_block_and_key() -> None:
    arch = {"blocks": ARCH["blocks"], "extra": [[("conv_k1", 8, 1, 2)]]}
    unified = mbuilder.unify_arch_def(arch, ["blocks", "extra"])
    assert [b["block_idx"] for b in unified["extra"]] == [0, 1]

    bad = {"blocks": [[("conv_k3", 8, 2, 1)]], "extra": [[("conv_k1", -8, 1, 1)]]}
    with pytest.raises(ArchDefError, match=r"stage 0, block 0, op 'conv_k1', key "
                                           r"'out_channels': in 'extra': out_channels"):
        mbuilder.unify_arch_def(bad, ["blocks", "extra"])
    with pytest.raises(ArchDefError, match=r"no 'blcks' to unify"):
        mbuilder.unify_arch_def(ARCH, ["blcks"])
    with pytest.raises(ArchDefError, match=r"not a string"):
        mbuilder.unify_arch_def(ARCH, "blocks")


def test_bad_unified_dicts_are_named_by_stage_block_and_key() -> None:
    blocks = mbuilder.unify_arch_def(ARCH, ["blocks"])["blocks"]
    builder = mbuilder.FBNetBuilder()
    typo = copy.deepcopy(blocks)
    typo[2]["block_cfg"]["expnsion"] = 4
    with pytest.raises(ArchDefError, match=r"stage 1, block 1, op 'ir_k3', key 'expnsion'"):
        builder.build_blocks(typo)
    extra_key = copy.deepcopy(blocks)
    extra_key[1]["repeat"] = 2
    with pytest.raises(ArchDefError, match=r"stage 1, block 0, key 'repeat': unknown key"):
        builder.build_blocks(extra_key)
    no_width = copy.deepcopy(blocks)
    del no_width[3]["block_cfg"]["out_channels"]
    with pytest.raises(ArchDefError, match=r"stage 1, block 2, key 'out_channels'"):
        builder.build_blocks(no_width)
    with pytest.raises(ArchDefError, match=r"unknown op 'ir_k4'"):
        builder.build_blocks([{"block_op": "ir_k4", "block_cfg": {"out_channels": 8}}])
