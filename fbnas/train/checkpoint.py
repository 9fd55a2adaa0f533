"""Training checkpoints: atomic writes, weights-only reads, every RNG state.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts), so it loads with
``torch.load(weights_only=True)`` and a file needing arbitrary unpickling is refused::

    {"format": "fbnas.train", "version": 1,
     "arch_def": {...}, "num_classes": 10, "width_ratio": 1.0, "resolution": 32,
     "config": {...},            # the TrainConfig as plain data
     "data": "digits",           # the dataset spec string
     "task": {"name": "classification", "num_classes": 10, "topk": [1, 5],
              "score_name": "top1"},   # what it was trained for (absent: classification)
     "model": state_dict, "model_ema": state_dict,   # model_ema only when EMA is on
     "optimizer": ..., "scheduler": ..., "extra": {name: state_dict},
     "epoch": 3,                 # epochs completed
     "step": 270,                # optimizer steps taken
     "best_top1": 97.2,          # best_<the task's score>
     "best_epoch": 3, "history": [per-epoch metrics],
     "rng": [per-rank {"python", "numpy", "torch", "cuda"}]}

The first keys are those ``fbnas export`` and ``fbnas eval`` read, so a checkpoint alone
can be evaluated and exported. Writes go to a temp file in the same folder, are flushed and
fsync-ed, then renamed over the target: a crash leaves the old file or the new one, never
half of one. ``last.pt`` is rotated to ``last.prev.pt`` first, so a later corruption of the
newest file (a disk error, a bad copy) still leaves a good checkpoint to resume from.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbnas.io import atomic_write, fsync_dir
from fbnas.zoo.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

FORMAT = "fbnas.train"
VERSION = 1
LAST = "last.pt"
PREVIOUS = "last.prev.pt"
BEST = "best.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save``-s ``obj`` to ``path`` atomically (see :func:`fbnas.io.atomic_write`)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_rotating(obj: Any, folder: Path) -> Path:
    """Writes ``folder/last.pt`` atomically, keeping the previous one as ``last.prev.pt``."""
    target = folder / LAST
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{LAST}.", suffix=".tmp")
    os.close(fd)
    try:
        atomic_save(obj, Path(tmp))
        if target.exists():
            os.replace(target, folder / PREVIOUS)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return target


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Loads a checkpoint dict with ``weights_only=True`` onto the CPU.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated or corrupted file, not a dict, or a file holding Python
            objects that need arbitrary unpickling (named), which is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        text = str(exc)
        if text.startswith("Weights only load failed"):
            found = re.search(r"GLOBAL (\S+)", text)
            culprit = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds Python objects that need arbitrary "
                f"unpickling{culprit}, which could run code; refusing to load it") from None
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupted "
                              f"({type(exc).__name__}: {text.splitlines()[0] if text else ''})"
                              ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} must hold a dict, got "
                              f"{type(state).__name__}")
    return state


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Like :func:`read_checkpoint`, and checks it is a resumable fbnas training checkpoint."""
    state = read_checkpoint(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not an fbnas training checkpoint "
                              f"(no format={FORMAT!r}); use --init-from to start from its "
                              f"weights")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version "
                              f"{state.get('version')!r}; this fbnas reads {VERSION}")
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "step", "config",
                           "arch_def", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
    return state


def find_resumable(folder: Path,
                   read: Callable[[Path], dict[str, Any]] = read_training_checkpoint
                   ) -> tuple[Path, dict[str, Any], list[str]]:
    """Returns (path, checkpoint, problems) for the newest readable checkpoint in ``folder``.

    Tries ``last.pt``, then ``last.prev.pt``; ``problems`` says why a newer one was skipped.
    ``read`` loads and checks one file, raising :class:`CheckpointError` for a bad one (a
    training checkpoint by default; the search engine passes its own).

    Raises:
        CheckpointError: neither is readable (each reason listed).
        FileNotFoundError: the folder holds no checkpoint at all.
    """
    problems: list[str] = []
    candidates = [folder / LAST, folder / PREVIOUS]
    if not any(p.exists() for p in candidates):
        raise FileNotFoundError(f"nothing to resume: {str(folder)!r} holds no {LAST} or "
                                f"{PREVIOUS}")
    for path in candidates:
        if not path.exists():
            continue
        try:
            return path, read(path), problems
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError("no readable checkpoint to resume from: " + "; ".join(problems))


# --------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as weights-only-safe data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`.

    Raises:
        CheckpointError: the state is malformed.
    """
    try:
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        np_state = state["numpy"]
        np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                             int(np_state["pos"]), int(np_state["has_gauss"]),
                             float(np_state["gauss"])))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"malformed RNG state in checkpoint: {exc}") from None
