"""Bad widths raise SlimConfigError naming the dimension or the layer, and change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fbnas.slim import SlimConfigError, build_slim_model

# stage 1: a residual pair (8 -> 16, then 16 -> 16); stage 2: a depthwise conv block.
ARCH = {
    "input_size": 32,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [("conv_k3", 8, 2, 1)],
        [("ir_k3", 16, 2, 2, {"expansion": 4})],
        [("conv_k3", 16, 1, 1, {"groups": 16})],
    ],
}


@pytest.fixture
def model():
    return build_slim_model(ARCH, num_classes=4)


def test_the_example_network_layout(model) -> None:
    assert model.channel_space == [[8], [16, 32, 64], []]
    assert model.search_dim == 4
    assert model.decode_ch([[8], [16, 32, 64], []]) == [[8], [32, 16, 64, 16], [16]]


def test_a_wm_of_the_wrong_length(model) -> None:
    with pytest.raises(SlimConfigError, match="wm has 3 values but the network has "
                                              "search_dim 4"):
        model.decode_wm([0.5] * 3)


@pytest.mark.parametrize("value, message", [
    (0.0, r"wm\[2\] = 0.0 is outside \(0, 1\]"),
    (1.5, r"wm\[2\] = 1.5 is outside \(0, 1\]"),
    (-0.2, r"wm\[2\] = -0.2 is outside \(0, 1\]"),
    (float("nan"), r"wm\[2\] = nan is outside \(0, 1\]"),
    ("0.5", r"wm\[2\] must be a number, got '0.5'"),
    (True, r"wm\[2\] must be a number, got True"),
])
def test_wm_values_outside_the_unit_interval(model, value, message: str) -> None:
    wm = [0.5, 0.5, value, 0.5]
    with pytest.raises(SlimConfigError, match=message) as info:
        model.decode_wm(wm)
    # ... naming the dimension: the hidden width of stage 1's first block.
    assert "dimension 2: stage 1, block 0 (ir_k3, SlimInvertedResidual).mid (max 32)" in str(
        info.value)


def test_numpy_and_tensor_multipliers_are_accepted(model) -> None:
    # The seed's random search: np.random.rand(search_dim).
    expected = [[8], [8, 16, 32], []]
    assert model.decode_wm(np.full(4, 0.5)) == expected
    assert model.decode_wm(torch.full((4,), 0.5)) == expected
    model.set_real_ch(model.decode_ch(model.decode_wm(np.random.default_rng(0).random(4))))


def test_a_ch_of_the_wrong_shape_or_range(model) -> None:
    with pytest.raises(SlimConfigError, match=r"ch\[1\] \(stage 1\) has 2 values, expected 3"):
        model.decode_ch([[8], [16, 32], []])
    with pytest.raises(SlimConfigError, match=r"ch\[1\]\[1\] = 40 is outside \[1, 32\]"):
        model.decode_ch([[8], [16, 40, 64], []])
    with pytest.raises(SlimConfigError, match="ch has 2 entries but channel_space has 3"):
        model.decode_ch([[8], [16, 32, 64]])


def test_a_broken_residual_tie_names_the_block(model) -> None:
    before = model.real_ch
    bad = [[8], [32, 16, 64, 8], [16]]  # block 1 adds its 16-wide input to an 8-wide output
    with pytest.raises(SlimConfigError, match=(
            r"real_ch\[1\]\[2:4\] \(stage 1, block 1 \(ir_k3, SlimInvertedResidual\)\): the "
            r"residual add needs the out width to equal the input width 16, got 8")):
        model.set_real_ch(bad)
    assert model.real_ch == before  # checked before anything is set
    assert model.stages[1].blocks[1].pwl.conv.out_channels == 16


def test_a_broken_depthwise_tie_names_the_layer(model) -> None:
    bad = [[8], [32, 16, 64, 16], [8]]
    with pytest.raises(SlimConfigError, match=(
            r"stage 2, block 0 \(conv_k3, SlimConvBlock\)\): a depthwise conv \(groups = "
            r"channels\) needs the out width to equal the input width 16, got 8")):
        model.set_real_ch(bad)


def test_real_ch_structure_and_ranges(model) -> None:
    with pytest.raises(SlimConfigError, match=r"real_ch\[1\] \(stage 1\) has 3 widths, "
                                              r"expected 4"):
        model.set_real_ch([[8], [32, 16, 64], [16]])
    with pytest.raises(SlimConfigError, match=r"the mid width must be in \[1, 32\], got 33"):
        model.set_real_ch([[8], [33, 16, 64, 16], [16]])
    with pytest.raises(SlimConfigError, match="the out width must be an int, got 8.0"):
        model.set_real_ch([[8.0], [32, 16, 64, 16], [16]])


def test_block_level_setters_check_too(model) -> None:
    block = model.stages[1].blocks[1]
    with pytest.raises(SlimConfigError, match=r"expected 2 widths \(mid, out\), got 1"):
        block.set_out_ch([16])
    with pytest.raises(SlimConfigError, match=r"the input width must be an int in \[1, 16\]"):
        block.set_in_ch(17)


def test_an_input_of_the_wrong_width_names_the_first_layer(model) -> None:
    with pytest.raises(SlimConfigError, match=r"SlimConv2d 'stages.0.blocks.0.conv': set to 3 "
                                              r"input channels but got a 1-channel input"):
        model(torch.zeros(1, 1, 32, 32))
