"""Slim models are made from the zoo arch defs: at full width they are the zoo models."""

from __future__ import annotations

import pytest
import torch

import fbnas
from fbnas.cost import count_macs, count_params
from fbnas.slim import (
    SLIM_MODELS,
    SlimBasicBlock,
    SlimBottleNeck,
    SlimConfigError,
    SlimDWSConv,
    SlimInvertedResidual,
    SlimIRPool,
    build_slim_model,
)


@pytest.mark.parametrize("name", sorted(SLIM_MODELS))
def test_full_width_has_the_zoo_models_params_and_macs(name: str) -> None:
    with torch.device("meta"):
        slim = build_slim_model(name)
        zoo = fbnas.build_model(SLIM_MODELS[name])
    assert count_params(slim) == count_params(zoo)
    assert count_macs(slim, 224) == count_macs(zoo, 224)


def test_published_reference_figures() -> None:
    # The zoo's recorded reference builds (fbnas/zoo/defs: params_total, macs_224).
    for name, params, macs in [("slim_resnet18", 11689512, 1814073344),
                               ("slim_resnet50", 25557032, 4089184256),
                               ("slim_mbv3", 5481768, 216589760),
                               ("slim_effnet_b0", 5325232, 385850080)]:
        with torch.device("meta"):
            slim = build_slim_model(name)
        assert (count_params(slim), count_macs(slim, 224)) == (params, macs), name


@pytest.mark.parametrize("name, search_dim, block_types", [
    ("slim_resnet18", 12, {SlimBasicBlock}),
    ("slim_resnet50", 21, {SlimBottleNeck}),
    ("slim_mbv2", 25, {SlimDWSConv, SlimInvertedResidual}),
    ("slim_mbv3", 22, {SlimDWSConv, SlimInvertedResidual, SlimIRPool}),
    ("slim_effnet_b0", 24, {SlimDWSConv, SlimInvertedResidual}),
])
def test_search_dimensions_fuse_residual_and_depthwise_ties(name: str, search_dim: int,
                                                            block_types: set[type]) -> None:
    with torch.device("meta"):
        slim = build_slim_model(name)
    assert slim.search_dim == search_dim
    assert block_types <= {type(b) for stage in slim.stages for b in stage.blocks}


def test_resnet18_dimensions() -> None:
    with torch.device("meta"):
        slim = build_slim_model("slim_resnet18")
    # Stage 1 adds onto the stem's output: its output widths are the stem's dimension, and
    # it owns only its two blocks' inner widths.
    assert slim.channel_space == [[64], [64, 64], [128, 128, 128], [256, 256, 256],
                                  [512, 512, 512]]
    assert slim.describe_dims()[0] == (
        "dimension 0: stage 0, block 0 (conv_k7, SlimConvBlock).out = stage 1, block 0 "
        "(res_k3, SlimBasicBlock).out = stage 1, block 1 (res_k3, SlimBasicBlock).out (max 64)")


def test_mbv2_first_block_is_depthwise_separable_with_the_stems_width() -> None:
    with torch.device("meta"):
        slim = build_slim_model("slim_mbv2", num_classes=10)
    block = slim.stages[1].blocks[0]
    assert isinstance(block, SlimDWSConv) and block.search_dim == 1
    real_ch = slim.decode_ch(slim.decode_wm([0.5] * slim.search_dim))
    slim.set_real_ch(real_ch)
    assert real_ch[0] == [16] and block.dw.conv.groups == 16  # dw follows the stem


def test_any_arch_def_with_slimmable_ops_builds(tiny_arch: dict) -> None:
    arch = {**tiny_arch, "blocks": tiny_arch["blocks"][:3] + tiny_arch["blocks"][4:]}
    slim = build_slim_model(arch, num_classes=5)
    assert slim.name == "custom" and slim.resolution == 32
    slim.set_wm([0.6] * slim.search_dim)
    assert slim.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_backbone_only_model_has_free_last_widths() -> None:
    with torch.device("meta"):
        slim = build_slim_model("slim_resnet18", num_classes=None)
    assert slim.head is None and slim.search_dim == 12
    assert slim(torch.zeros(1, 3, 64, 64, device="meta")).shape == (1, 512, 2, 2)


def test_unknown_names_and_ops_are_refused(tiny_arch: dict) -> None:
    with pytest.raises(SlimConfigError, match="unknown slim model 'slim_mbv4'; did you mean "
                                              "'slim_mbv3', 'slim_mbv2'"):
        build_slim_model("slim_mbv4")
    with pytest.raises(SlimConfigError, match=r"stage 3, block 0: op 'skip': a skip with a "
                                              r"projection conv has no slimmable version"):
        build_slim_model(tiny_arch)
    # ir_k3_g2: a grouped pw conv with a channel shuffle has no first-k-channels slice.
    arch = {"blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3_g2", 24, 1, 1, {"expansion": 2})]]}
    with pytest.raises(SlimConfigError, match=r"stage 1, block 0: op 'ir_k3_g2': a grouped pw "
                                              r"conv \(pw_groups\) has no slimmable version"):
        build_slim_model(arch)
