"""Loading reference (mobile-vision) state dicts: layout, strictness, same outputs."""

from __future__ import annotations

import pytest
import torch
from reference_data import zoo_reference

import fbnas
from fbnas.zoo import load_mobile_cv_state_dict
from fbnas.zoo.checkpoint import CheckpointError

LAYOUT = zoo_reference()["state_dict_layout"]["fbnet_a"]


def reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the reference key layout of fbnet_a, with random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in LAYOUT:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    return state


def test_fbnas_state_dict_has_the_reference_layout() -> None:
    model = fbnas.build_model("fbnet_a")
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert sorted(ours) == sorted((k, list(s)) for k, s in LAYOUT)


def test_loading_places_every_tensor_and_outputs_follow_the_weights() -> None:
    state = reference_state_dict()
    wrapped = {"model_ema": {f"module.{k}": v for k, v in state.items()},
               "model": {f"module.{k}": torch.zeros_like(v) for k, v in state.items()}}
    model = load_mobile_cv_state_dict(fbnas.build_model("fbnet_a"), wrapped).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(1, 3, 96, 96)
    other = load_mobile_cv_state_dict(fbnas.build_model("fbnet_a"), state).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x))
        # and the weights matter: a different state dict gives different outputs
        third = load_mobile_cv_state_dict(fbnas.build_model("fbnet_a"),
                                          reference_state_dict(1)).eval()
        assert not torch.allclose(third(x), model(x))


def test_a_checkpoint_round_trips_through_torch_save_with_weights_only(tmp_path) -> None:
    path = tmp_path / "ref.pth"
    torch.save({"model": {f"module.{k}": v for k, v in reference_state_dict().items()}}, path)
    loaded = torch.load(path, weights_only=True)
    load_mobile_cv_state_dict(fbnas.build_model("fbnet_a"), loaded)


def test_missing_and_unexpected_keys_are_named() -> None:
    state = reference_state_dict()
    state.pop("head.conv.bias")
    state["backbone.stages.xif9_9.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing keys: head.conv.bias.*unexpected keys: "
                                              "backbone.stages.xif9_9"):
        load_mobile_cv_state_dict(fbnas.build_model("fbnet_a"), state)


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(CheckpointError, match=r"head.conv.weight: checkpoint \(1000, 1504"):
        load_mobile_cv_state_dict(fbnas.build_model("fbnet_a", num_classes=10),
                                  reference_state_dict())


def test_non_tensor_values_are_refused() -> None:
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_mobile_cv_state_dict(fbnas.build_model("fbnet_a"), {"head.conv.bias": [1, 2]})
