"""The run folder of a search: what rank 0 writes, and what a resumed search reads back.

::

    search_config.json    the search's settings (written by the algorithm's entry point)
    metrics.jsonl         one line per epoch (losses, metrics, τ, the θ distribution)
    tensorboard/          the same scalars for TensorBoard (optional)
    theta.json            the latest architecture parameters
    last.pt               the latest checkpoint; the one before is kept as last.prev.pt
    best.pt               the checkpoint of the epoch with the best validation score
    arch.json             the derived architecture; samples/arch_XX.json the sampled ones

Every file is replaced atomically (written beside, then renamed), so a killed search
leaves the old version or the new one. ``last.pt`` is written before the epoch's metrics
line: a line then always has its checkpoint, and resuming rewrites ``metrics.jsonl`` from
the checkpoint's history, so a line written after the last checkpoint is dropped, not
repeated. If ``last.pt`` is unreadable (a disk error, a bad copy), resuming falls back to
``last.prev.pt``, as the trainer does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fbnas.io import atomic_write_text
from fbnas.train.checkpoint import (
    BEST,
    LAST,
    PREVIOUS,
    atomic_save,
    find_resumable,
    read_checkpoint,
    save_rotating,
)
from fbnas.train.distributed import DistContext
from fbnas.train.trainer import MetricsLog
from fbnas.zoo.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

CONFIG_FILE = "search_config.json"
THETA_FILE = "theta.json"
ARCH_FILE = "arch.json"
SAMPLES_DIR = "samples"
CHECKPOINT_KEYS = ("supernet", "w_opt", "w_sched", "theta_opt", "rng", "epoch", "history")
"""What every search checkpoint holds (``arch_rng``, ``best_score``: since later fbnas)."""


def read_search_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Loads a search checkpoint (weights-only) and checks it holds what resuming needs.

    Raises:
        CheckpointError: unreadable, or not a search checkpoint (the missing keys named).
    """
    state = read_checkpoint(path)
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a search checkpoint: it "
                              f"lacks {', '.join(missing)}")
    return state


class RunFolder:
    """Writes a search's run folder on rank 0 (other ranks write nothing) and reads it back.

    Args:
        path: the folder (on a file system every process sees, for resuming).
        context: the process group; only rank 0 writes.
        tensorboard: also write ``tensorboard/`` event files (step: the epoch).
    """

    def __init__(self, path: str | os.PathLike, context: DistContext | None = None,
                 tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.context = context or DistContext()
        self.tensorboard = tensorboard
        self._log: MetricsLog | None = None

    @property
    def writes(self) -> bool:
        """Whether this process writes the folder (rank 0)."""
        return self.context.is_main

    def has_checkpoint(self) -> bool:
        """Whether a search was checkpointed here (``last.pt`` or ``last.prev.pt``)."""
        return (self.path / LAST).exists() or (self.path / PREVIOUS).exists()

    def read_checkpoint(self) -> dict[str, Any]:
        """The newest readable checkpoint: ``last.pt``, else ``last.prev.pt`` (with a warning
        naming what was wrong with the newer one).

        Raises:
            FileNotFoundError: there is no checkpoint.
            CheckpointError: neither file is readable.
        """
        path, state, problems = find_resumable(self.path, read_search_checkpoint)
        for problem in problems:
            logger.warning("skipping unreadable checkpoint: %s", problem)
        if problems:
            logger.warning("resuming from %s (epoch %d)", path, int(state["epoch"]) + 1)
        return state

    def start(self, config: Mapping[str, Any] | None, history: Sequence[Mapping[str, Any]]
              ) -> None:
        """Creates the folder, writes the settings and ``metrics.jsonl`` from ``history``
        (the checkpoint's, on resume) and opens TensorBoard after its last epoch."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            atomic_write_text(self.path / CONFIG_FILE,
                              json.dumps(dict(config), indent=1, default=str))
        purge = int(history[-1]["epoch"]) + 1 if history else None
        self._log = MetricsLog(self.path, self.tensorboard, purge_step=purge, step_key="epoch")
        self._log.rewrite(history)

    def save_epoch(self, state: Mapping[str, Any], record: Mapping[str, Any],
                   theta: Mapping[str, Any], best: bool) -> None:
        """Writes an epoch: ``last.pt`` (rotating), ``best.pt`` when ``best``, ``theta.json``,
        then the metrics line."""
        if not self.writes:
            return
        save_rotating(state, self.path)
        if best:
            atomic_save(state, self.path / BEST)
        atomic_write_text(self.path / THETA_FILE, json.dumps(dict(theta), indent=1))
        assert self._log is not None, "start() first"
        self._log.append(record)

    def write_architectures(self, records: Sequence[Mapping[str, Any]]) -> None:
        """``arch.json`` (the derived architecture, ``records[0]``) and
        ``samples/arch_XX.json`` (the sampled ones)."""
        if not self.writes:
            return
        (self.path / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        for k, record in enumerate(records):
            path = (self.path / ARCH_FILE if k == 0
                    else self.path / SAMPLES_DIR / f"arch_{k - 1:02d}.json")
            atomic_write_text(path, json.dumps(dict(record), indent=1))

    def close(self) -> None:
        """Flushes and closes TensorBoard."""
        if self._log is not None:
            self._log.close()
            self._log = None

