"""The task protocol: the one seam between a network's job and the code that trains it.

A task is to the trainer and the search engine what a LightningModule's steps are to
Lightning's Trainer: the head (as data: a :class:`fbnas.arch.HeadSpec`), the training
objective a recipe asks for, the loss of the architecture step, the distillation loss of
slimmable training, the metrics, the score that picks the best checkpoint, and how a
dataset spec opens. Metrics are *sums* over a batch, so that any loop (one process or
many) adds them up and reduces them with one all-reduce before :meth:`Task.metrics` turns
them into means.

Tasks are recorded in run folders and checkpoints as plain data (:meth:`Task.to_dict`) and
read back with :func:`fbnas.tasks.task_from_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from fbnas.arch.spec import HeadSpec

Targets = Any
"""A batch's targets as the task's datasets yield them (class indices, coordinates...)."""


class RecipeTerms(Protocol):
    """The recipe settings a task's training objective reads (a ``TrainConfig`` has them)."""

    @property
    def label_smoothing(self) -> float: ...

    @property
    def mixup(self) -> float: ...

    @property
    def cutmix(self) -> float: ...


@dataclass(frozen=True)
class Objective:
    """How a recipe trains a task.

    Attributes:
        loss: ``(outputs, training targets) -> scalar`` batch mean.
        mix: ``(images, targets) -> (images, training targets)`` applied to each training
            batch (mixup/CutMix); None when the recipe mixes nothing.
    """

    loss: Callable[[torch.Tensor, Targets], torch.Tensor]
    mix: Callable[[torch.Tensor, Targets], tuple[torch.Tensor, Targets]] | None = None


@runtime_checkable
class Task(Protocol):
    """What training, search, export and the latency tables may ask of a task."""

    name: str
    """Short name recorded in run folders (``classification``)."""
    metric_names: tuple[str, ...]
    """Names of :meth:`metric_sums`'s entries, in order (``loss``, ``top1``, ``top5``)."""
    score_name: str
    """The metric that picks the best checkpoint (higher is better)."""
    head_spec: HeadSpec
    """The head a backbone gets for this task (built, costed and tabled from this)."""

    def objective(self, recipe: RecipeTerms) -> Objective:
        """The training loss (and batch mixing) of a recipe; refuse what it cannot honour."""
        ...

    def loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        """The plain task loss (no recipe terms): the batch mean, a scalar."""
        ...

    def arch_loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        """The task term of an architecture step's loss (the search engine adds the cost)."""
        ...

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The loss of ``outputs`` learning a detached teacher's outputs (in-place
        distillation of slimmable training: the widest network teaches the others)."""
        ...

    def metric_sums(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        """``(len(metric_names),)`` float64 sums over the batch (not means)."""
        ...

    def metrics(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        """The metrics (means over ``count`` samples) from summed :meth:`metric_sums`."""
        ...

    def score(self, metrics: dict[str, float]) -> float:
        """The best-checkpoint score of a metrics dict (higher is better)."""
        ...

    def open_datasets(self, spec: str, resolution: int | None = None,
                      augment: Any = None) -> Any:
        """The train/val datasets of a dataset spec at ``resolution``, with ``augment``
        (an ``AugmentConfig``) on the training split."""
        ...

    def check_datasets(self, data: Any) -> None:
        """Raises if ``data`` does not fit the task (a classifier of 10 classes on 7)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain data with ``name``, for run folders and checkpoints."""
        ...
