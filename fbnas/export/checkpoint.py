"""Rebuilding a model from a training checkpoint, for export.

A checkpoint is a ``torch.save``-d dict::

    {"arch_def": {...},            # the plain arch-def dict the model was built from
     "model": state_dict,          # the weights
     "model_ema": state_dict,      # optional; preferred when present (as for evaluation)
     "task": {"name": ...},        # optional; the head is its task's (fbnas.tasks)
     "num_classes": 1000,          # optional, without a task; else read from the head's weight
     "width_ratio": 1.0,           # optional
     "resolution": 224}            # optional; else the arch def's input size (or 224)

It is read with ``weights_only=True``: a checkpoint is data, and a file that needs arbitrary
unpickling (a pickled class instance, a function) could run code on load, so it is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fbnas.arch.spec import HeadSpec
from fbnas.blocks.heads import classifier_head
from fbnas.tasks import recorded_task
from fbnas.zoo.checkpoint import CheckpointError, load_mobile_cv_state_dict
from fbnas.zoo.model import FBNet, build_model

CHECKPOINT_SUFFIXES = (".pt", ".pth")
"""File endings the CLI reads as checkpoints (anything else is a zoo name or arch file)."""

REQUIRED_KEYS = ("arch_def", "model")
HEAD_WEIGHT = "head.conv.weight"


def is_checkpoint_path(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a checkpoint file (by its ending, ``.pt`` or ``.pth``)."""
    return Path(source).suffix.lower() in CHECKPOINT_SUFFIXES


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        if str(exc).startswith("Weights only load failed"):
            found = re.search(r"GLOBAL (\S+)", str(exc))
            culprit = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds Python objects that need arbitrary "
                f"unpickling{culprit}, which could run code; refusing to load it. "
                f"Save only tensors, dicts, lists, strings and numbers") from None
        raise CheckpointError(f"cannot read {str(path)!r} as a PyTorch checkpoint "
                              f"(weights only): {type(exc).__name__}: {exc}") from None


def _num_classes(checkpoint: Mapping[str, Any], state_dict: Mapping[str, Any]) -> int:
    """The checkpoint's ``num_classes``, else the head's output channels, else 1000."""
    if "num_classes" in checkpoint:
        value = checkpoint["num_classes"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"checkpoint 'num_classes' must be a positive int, got "
                                  f"{value!r}")
        return value
    for key, tensor in state_dict.items():
        if key.removeprefix("module.") == HEAD_WEIGHT and isinstance(tensor, torch.Tensor):
            return int(tensor.shape[0])
    return 1000


def checkpoint_head(checkpoint: Mapping[str, Any], state_dict: Mapping[str, Any],
                    source: str = "checkpoint") -> HeadSpec:
    """The head of a checkpoint's network: its task's, else (checkpoints without a task are
    classification runs) the classifier of its ``num_classes`` or of its head's width."""
    task = recorded_task(checkpoint, source)
    if task is not None:
        return task.head_spec
    return classifier_head(_num_classes(checkpoint, state_dict))


def _landmark_model(checkpoint: Mapping[str, Any], arch_def: Mapping[str, Any],
                    state_dict: Mapping[str, Any], width_ratio: float, source: str) -> Any:
    """A landmark network of a checkpoint (PFLD or a builder backbone with the landmark
    head; :func:`fbnas.tasks.landmarks.models.build_landmark_model`) with its weights."""
    from fbnas.tasks import task_from_dict

    task = task_from_dict(checkpoint["task"], f"{source} task")
    model = task.build_model(dict(arch_def), width_ratio)
    try:
        model.load_state_dict(dict(state_dict))
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: the weights do not fit the architecture: "
                              f"{str(exc).splitlines()[0]}") from None
    return model


def load_model_from_checkpoint(path: str | os.PathLike) -> FBNet:
    """Builds the checkpoint's architecture and loads its weights (EMA ones if present).

    The head is the one of the task the checkpoint records (a classifier without one).

    The model's ``name`` is the file's stem and its ``resolution`` the checkpoint's
    ``resolution`` if given (else the arch def's native one). It is returned in eval mode.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a weights-only checkpoint dict, lacks
            ``arch_def`` or ``model`` (named), or its state dict does not fit the
            architecture (missing/unexpected keys or shapes, as
            :func:`fbnas.zoo.load_mobile_cv_state_dict` lists them).
        ArchDefError: the stored arch def is malformed.
    """
    path = Path(path)
    checkpoint = _read(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r} must hold a dict with 'arch_def' and "
                              f"'model', got a {type(checkpoint).__name__}")
    if "supernet" in checkpoint:
        raise CheckpointError(f"checkpoint {str(path)!r} is a DNAS search's supernet, not one "
                              f"network: train a derived one (fbnas train RUN/arch.json "
                              f"--init-from-supernet RUN ...) and export its best.pt")
    if "slim" in (checkpoint.get("run_info") or {}):
        raise CheckpointError(f"checkpoint {str(path)!r} is a slim training run (all widths "
                              f"share its weights), not one network: pick widths with fbnas "
                              f"search width --checkpoint {path} ... and export its "
                              f"OUT/subnet.pt")
    present = set(checkpoint) | ({"model"} if "model_ema" in checkpoint else set())
    missing = [key for key in REQUIRED_KEYS if key not in present]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} has no {' or '.join(map(repr, missing))}"
                              f" key (it has: {', '.join(map(repr, checkpoint)) or 'none'})")
    arch_def = checkpoint["arch_def"]
    if not isinstance(arch_def, Mapping):
        raise CheckpointError(f"checkpoint 'arch_def' must be an arch-def dict, got a "
                              f"{type(arch_def).__name__}")
    weights_key = "model_ema" if "model_ema" in checkpoint else "model"
    state_dict = checkpoint[weights_key]
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"checkpoint {weights_key!r} must be a state dict, got a "
                              f"{type(state_dict).__name__}")
    width_ratio = checkpoint.get("width_ratio", 1.0)
    if not isinstance(width_ratio, (int, float)) or isinstance(width_ratio, bool) \
            or width_ratio <= 0:
        raise CheckpointError(f"checkpoint 'width_ratio' must be a positive number, got "
                              f"{width_ratio!r}")
    task = checkpoint.get("task")
    if isinstance(task, Mapping) and task.get("name") == "landmarks":
        model = _landmark_model(checkpoint, arch_def, state_dict, float(width_ratio),
                                f"checkpoint {str(path)!r} ({weights_key!r})")
    else:
        model = build_model(dict(arch_def), width_ratio=float(width_ratio),
                            head=checkpoint_head(checkpoint, state_dict,
                                                 f"checkpoint {str(path)!r}"))
        try:
            load_mobile_cv_state_dict(model, state_dict)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} ({weights_key!r}): {exc}"
                                  ) from None
    model.name = path.stem
    resolution = checkpoint.get("resolution")
    if resolution is not None:
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
            raise CheckpointError(f"checkpoint 'resolution' must be a positive int, got "
                                  f"{resolution!r}")
        model.resolution = resolution
    return model.eval()
