"""Extracted subnets are plain fbnas models computing exactly what the slim network does."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

import fbnas
from fbnas.arch import unify_arch_def
from fbnas.cost import count_params
from fbnas.export import calibrate_batchnorm, to_onnx
from fbnas.slim import (
    SLIM_MODELS,
    active_state,
    build_slim_model,
    extract_arch_spec,
    extract_subnet,
)
from fbnas.zoo import FBNet, get_arch_def

RESOLUTION = 32


def _random_real_ch(model, seed: int, low: float = 0.05) -> list[Any]:
    rng = random.Random(seed)
    return model.decode_ch(model.decode_wm([rng.uniform(low, 1.0)
                                            for _ in range(model.search_dim)]))


def _assert_same_outputs(slim, real_ch) -> FBNet:
    """Calibrates BN at the widths (untrained nets otherwise output the head's bias), then
    compares the slim network with its extracted subnet in eval mode."""
    slim.set_real_ch(real_ch)
    calibrate_batchnorm(slim, (4, 3, RESOLUTION, RESOLUTION))
    slim.eval()
    subnet = extract_subnet(slim, real_ch)
    assert type(subnet) is FBNet and not subnet.training
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        expected, got = slim(x), subnet(x)
    assert expected.abs().max() > 1e-2  # the comparison means something
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    return subnet


@pytest.mark.parametrize("name", sorted(SLIM_MODELS))
def test_full_width_extracts_to_the_zoo_arch_def_exactly(name: str) -> None:
    with torch.device("meta"):
        slim = build_slim_model(name)
    assert extract_arch_spec(slim) == unify_arch_def(get_arch_def(SLIM_MODELS[name]))


def test_the_full_width_subnet_is_the_zoo_model_holding_the_slim_weights() -> None:
    slim = build_slim_model("slim_mbv3", num_classes=10)
    subnet = _assert_same_outputs(slim, slim.real_ch)
    zoo = fbnas.build_model("mnv3", num_classes=10)
    assert {k: v.shape for k, v in subnet.state_dict().items()} == {
        k: v.shape for k, v in zoo.state_dict().items()}
    state = subnet.state_dict()
    for key, tensor in active_state(slim.stages[3].blocks[0]).items():
        assert torch.equal(state[f"backbone.stages.xif3_0.{key}"], tensor), key


@pytest.mark.parametrize("name", ["slim_mbv2", "slim_mbv3", "slim_effnet_b0", "slim_resnet18"])
def test_random_widths_extract_to_identical_outputs(name: str) -> None:
    slim = build_slim_model(name, num_classes=10)
    real_ch = _random_real_ch(slim, seed=len(name))
    before = slim.real_ch
    subnet = _assert_same_outputs(slim, real_ch)
    assert slim.real_ch == real_ch != before
    assert count_params(subnet) < count_params(slim)


def test_resnet50_bottlenecks_extract_to_identical_outputs() -> None:
    slim = build_slim_model("slim_resnet50", num_classes=10)
    real_ch = _random_real_ch(slim, seed=3, low=0.02)
    subnet = _assert_same_outputs(slim, real_ch)
    kwargs = subnet.arch_spec.blocks[2].kwargs
    assert kwargs["mid_channels"] == real_ch[1][0]


def test_extraction_leaves_the_slim_network_at_its_setting() -> None:
    with torch.device("meta"):
        slim = build_slim_model("slim_mbv3", num_classes=10)
    current = _random_real_ch(slim, seed=1)
    slim.set_real_ch(current)
    extract_arch_spec(slim, _random_real_ch(slim, seed=2))
    assert slim.real_ch == current


# A network whose blocks need each fbnas option: stage 1 has no shortcut (16 -> 24), stage
# 2 adds onto stage 1 and has a less_se_channels SE without rounding, stage 3 is ir_pool.
IRF_ARCH = {
    "input_size": RESOLUTION,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [("conv_k3", 16, 2, 1)],
        [("ir_k3", 24, 1, 1, {"expansion": 4})],
        [("ir_k3_se", 24, 1, 1, {"expansion": 3, "less_se_channels": True,
                                 "width_divisor": 1})],
        [("ir_pool", 64, 1, 1, {"expansion": 4})],
    ],
}
RESNET_ARCH = {
    "input_size": RESOLUTION,
    "blocks": [
        [("conv_k3", 16, 2, 1)],
        [("res_k3", 32, 1, 1)],
        [("res_block_k3", 64, 1, 1)],
    ],
}


@pytest.mark.parametrize("arch, real_ch, block, expected", [
    # the reference format: the original options, or a new expansion
    (IRF_ARCH, [[16], [64, 24], [72, 24], [96, 64]], 1, {"expansion": 4}),
    (IRF_ARCH, [[16], [40, 24], [72, 24], [96, 64]], 1, {"expansion": 2.5}),
    # a hidden width equal to the input: keep the pw conv
    (IRF_ARCH, [[16], [16, 24], [72, 24], [96, 64]], 1, {"expansion": 1, "always_pw": True}),
    # equal input and output widths without a shortcut: no residual add
    (IRF_ARCH, [[16], [64, 16], [72, 16], [96, 64]], 1, {"res_conn_args": None}),
    # a hidden width off the divisor grid
    (IRF_ARCH, [[16], [13, 24], [72, 24], [96, 64]], 1, {"mid_channels": 13}),
    # less_se_channels: expansion 2 would change the SE width (48 / 8 = 6, not 48 / 12 = 4)
    (IRF_ARCH, [[16], [64, 24], [48, 24], [96, 64]], 2, {"mid_channels": 48, "expansion": 3}),
    (IRF_ARCH, [[16], [64, 24], [72, 24], [13, 64]], 3, {"mid_channels": 13}),
    # ResNet: an inner width other than the default, a shortcut conv between equal widths
    (RESNET_ARCH, [[16], [24, 32], [16, 64]], 1, {"mid_channels": 24}),
    (RESNET_ARCH, [[16], [32, 16], [8, 16]], 1, {"mid_channels": 32,
                                                 "always_projection": True}),
    (RESNET_ARCH, [[16], [32, 16], [8, 16]], 2, {"mid_channels": 8, "always_projection": True}),
    (RESNET_ARCH, [[16], [32, 32], [12, 48]], 2, {}),  # int(48 * 0.25) == 12
])
def test_widths_the_reference_format_cannot_express_use_fbnas_options(
        arch: dict, real_ch: list, block: int, expected: dict) -> None:
    slim = build_slim_model(arch, num_classes=4)
    subnet = _assert_same_outputs(slim, real_ch)
    spec = subnet.arch_spec.stage(block)[0]
    original = unify_arch_def(arch).stage(block)[0].kwargs
    assert {k: v for k, v in spec.kwargs.items() if original.get(k, "unset") != v} == {
        k: v for k, v in expected.items() if original.get(k, "unset") != v}
    assert {k: spec.kwargs[k] for k in expected} == expected
    # The arch def is plain data: it round-trips and rebuilds the same network.
    rebuilt = fbnas.build_model(subnet.arch_spec.to_arch_def(), num_classes=4)
    assert count_params(rebuilt) == count_params(subnet)


def test_an_extracted_subnet_exports_to_onnx(tmp_path) -> None:
    slim = build_slim_model("slim_mbv3", num_classes=10)
    real_ch = _random_real_ch(slim, seed=7)
    subnet = _assert_same_outputs(slim, real_ch)
    report = to_onnx(subnet, tmp_path / "subnet.onnx", (1, 3, RESOLUTION, RESOLUTION),
                     timing_runs=0)
    assert report.max_abs_diff < 1e-3 < report.output_spread
