"""Loading state dicts saved by the mobile-vision builder into fbnas models.

fbnas names every module as the reference does (``backbone.stages.xif2_0.pw.conv.weight``,
``head.conv.bias``), so a reference state dict maps key for key; this loader only unwraps
the usual containers, strips DataParallel's ``module.`` prefixes and insists on a perfect
match, so that a half-loaded network never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fbnas.errors import FbnasError

CONTAINER_KEYS = ("model_ema", "state_dict", "model")
"""Where a training checkpoint keeps the weights; EMA weights are preferred, as the
reference does."""


class CheckpointError(FbnasError, ValueError):
    """A state dict that does not fit the model: names the keys or shapes at fault."""


def unwrap_state_dict(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The tensors of a checkpoint dict: the innermost container key's value (EMA first)."""
    for key in CONTAINER_KEYS:
        inner = state.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            return unwrap_state_dict(inner)
    return state


def strip_module_prefix(key: str) -> str:
    """``key`` without the ``module.`` prefixes that DataParallel/DDP wrappers add."""
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_mobile_cv_state_dict(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Loads a mobile-vision FBNet state dict (or checkpoint) into an fbnas model, strictly.

    Args:
        model: an fbnas model of the same architecture (``fbnas.build_model(name)``).
        state_dict: the reference's ``model.state_dict()``, or a checkpoint dict holding it
            under ``model_ema``, ``state_dict`` or ``model``; ``module.`` prefixes are stripped.

    Raises:
        CheckpointError: listing missing keys, unexpected keys or mismatched shapes.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"expected a state dict (a mapping), got {type(state_dict)}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in unwrap_state_dict(state_dict).items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is not a tensor ({type(value)})")
        tensors[strip_module_prefix(key)] = value
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise CheckpointError("the state dict does not match the model's architecture; "
                              + "; ".join(parts))
    mismatched = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if tensors[k].shape != v.shape]
    if mismatched:
        raise CheckpointError("shape mismatch: " + _listing(mismatched, 5))
    model.load_state_dict(tensors, strict=True)
    return model
