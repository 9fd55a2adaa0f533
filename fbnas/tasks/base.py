"""The task protocol: the one seam between a network's job and the code that trains it.

A task is to the trainer and the search engine what a LightningModule's steps are to
Lightning's Trainer: the head, the training loss, the loss of the architecture step, the
metrics, the score that picks the best checkpoint, and how a dataset spec opens. Metrics
are *sums* over a batch, so that any loop (one process or many) adds them up and reduces
them with one all-reduce before :meth:`Task.metrics` turns them into means.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Task(Protocol):
    """What training and search code may ask of a task."""

    name: str
    """Short name recorded in run folders (``classification``)."""
    metric_names: tuple[str, ...]
    """Names of :meth:`metric_sums`'s entries, in order (``loss``, ``top1``, ``top5``)."""
    score_name: str
    """The metric that picks the best checkpoint (higher is better)."""

    def build_head(self, in_channels: int) -> nn.Module:
        """The head on a backbone's ``(N, in_channels, H, W)`` features."""
        ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: the batch mean, a scalar."""
        ...

    def arch_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task term of an architecture step's loss (the search engine adds the cost)."""
        ...

    def metric_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(len(metric_names),)`` float64 sums over the batch (not means)."""
        ...

    def metrics(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        """The metrics (means over ``count`` samples) from summed :meth:`metric_sums`."""
        ...

    def score(self, metrics: dict[str, float]) -> float:
        """The best-checkpoint score of a metrics dict (higher is better)."""
        ...

    def open_datasets(self, spec: str, resolution: int) -> Any:
        """The train/val datasets of a dataset spec at ``resolution``."""
        ...
