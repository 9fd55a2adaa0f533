"""The training loop as a library: ``Trainer`` runs a recipe on a model and a dataset.

``fit()`` is a sequence of public steps, so search code can drive its own loop, e.g.
DNAS alternating weight steps with architecture steps::

    trainer = Trainer(model, config, data, out_dir=run)
    trainer.register_state("arch_optimizer", arch_optimizer)   # checkpointed too
    while trainer.epoch < config.epochs:
        for images, targets in trainer.train_batches():
            trainer.train_step(images, targets)          # one weight update
            arch_step(next(arch_batches))                 # the caller's own step
        trainer.end_epoch()                               # eval, log, checkpoint

Reproducibility: the data order of epoch e is a function of (seed, e) alone, drawn from
its own generator; augmentation, dropout, drop path and mixup draw from the global RNGs,
whose states go into every checkpoint. Resuming restores all of them, so a killed and
resumed single-process CPU run ends with bitwise the same weights as an uninterrupted one.

Data parallel: with N processes the *global* batch is split evenly, and global batch s
holds the same images whatever N (``GlobalBatchSampler``), so N processes compute the same
mean gradient as one (up to float summation order).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from fbnas.data.datasets import ImageDatasets
from fbnas.errors import ConfigError
from fbnas.io import atomic_write_text
from fbnas.tasks import ClassificationTask, Task, recorded_task
from fbnas.train import checkpoint as ckpt
from fbnas.train.config import RecipeError, TrainConfig
from fbnas.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    resolve_device,
)
from fbnas.train.regularize import set_drop_path, set_head_dropout
from fbnas.version import __version__
from fbnas.zoo.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"


class Stateful(Protocol):
    """Anything with ``state_dict``/``load_state_dict`` (an optimizer, a module)."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class StepInfo:
    """What a listener learns after each optimizer step.

    ``loss`` stays a device tensor: reading it (``float(info.loss)``) synchronises a GPU,
    so a progress bar should do it only now and then.
    """

    epoch: int
    step: int
    batch: int
    batches: int
    images: int
    loss: torch.Tensor
    lr: float


@dataclass(frozen=True)
class EvalResult:
    """The task's metrics (means) over ``count`` samples.

    Each metric also reads as an attribute (``result.top1``, ``result.loss`` for
    classification), as callers wrote before the metrics came from the task.
    """

    metrics: dict[str, float]
    count: int

    def __getattr__(self, name: str) -> float:
        # Only called when normal lookup fails; dunder and private names (copy, pickle)
        # and a half-built instance must not recurse into ``metrics``.
        if name.startswith("_") or name == "metrics":
            raise AttributeError(name)
        try:
            return self.metrics[name]
        except KeyError:
            raise AttributeError(f"EvalResult has no metric {name!r} (it has: "
                                 f"{', '.join(self.metrics)})") from None


class TrainListener:
    """Hooks for progress display and the caller's own work; all methods are no-ops here."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, batches: int) -> None:
        """Called before the first batch of ``epoch`` (1-based)."""

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        """Called after every optimizer step."""

    def on_epoch_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        """Called with the epoch's metrics line, after evaluation and checkpointing."""


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each global batch; global batches depend on (seed, epoch).

    Epoch e shuffles ``range(n)`` with a generator seeded by (seed, e), cuts it into global
    batches of ``batch_size`` (dropping the last partial one, so every step has the same
    batch), and rank r of N takes items ``[r·b, (r+1)·b)`` of each, b = batch_size / N.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size % world_size:
            raise RecipeError(f"batch_size {batch_size} must divide evenly over "
                              f"{world_size} processes")
        if n < batch_size:
            raise RecipeError(f"batch_size {batch_size} is larger than the training set "
                              f"({n} images)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = batch_size // world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            lo = start + self.rank * self.local_batch
            yield order[lo:lo + self.local_batch]


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: evaluation shards, no padding, no repeats."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def seed_training_streams(seed: int) -> None:
    """Seeds the global RNGs training draws from (python, numpy: timm's mixup and
    RandAugment; torch: crops, dropout, drop path). Each rank gets its own seed, so ranks
    augment differently; the model's initial weights are the caller's (same on all ranks:
    DDP broadcasts rank 0's anyway)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def as_float(outputs: Any) -> Any:
    """A network's outputs in float32 (autocast computes bfloat16): the losses and metrics
    of every task are computed in full precision. Tuples/lists/dicts of tensors too."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, Mapping):
        return {k: as_float(v) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(as_float(v) for v in outputs)
    return outputs


def to_device(value: Any, device: torch.device) -> Any:
    """A batch's tensors on ``device`` (a tensor, or tuples/lists/dicts of them: the
    targets of a task may be several tensors)."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             context: DistContext | None = None, amp: bool = False,
             channels_last: bool = False, task: Task | None = None) -> EvalResult:
    """The task's metrics of ``model`` over ``loader``, all ranks summed.

    The task sums its metrics per batch (:meth:`Task.metric_sums`); the sums and the count
    are reduced over all processes at once and turned into means by the task. Without a
    task it is classification of the model's output width (mean cross-entropy, top-1 and
    top-5 accuracy in %, top-5 being top-min(5, classes)). The model is put in eval mode
    and restored after.
    """
    context = context or DistContext()
    was_training = model.training
    model.eval()
    totals: torch.Tensor | None = None  # the task's metric sums, then the sample count
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = to_device(targets, device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            outputs = as_float(model(images))
        if task is None:
            task = ClassificationTask(int(outputs.shape[1]))
        if totals is None:
            totals = torch.zeros(len(task.metric_names) + 1, dtype=torch.float64,
                                 device=device)
        totals[:-1] += task.metric_sums(outputs, targets)
        totals[-1] += images.shape[0]
    if task is None:  # an empty loader: classification's metrics, all zero
        task = ClassificationTask(1)
    if totals is None:
        totals = torch.zeros(len(task.metric_names) + 1, dtype=torch.float64, device=device)
    all_reduce_sum(totals, context)
    model.train(was_training)
    count = int(totals[-1])
    return EvalResult(task.metrics(totals[:-1], count), count)


def prefixed(prefix: str, result: EvalResult) -> dict[str, float]:
    """An evaluation's metrics as metrics-line entries (``val_top1``...), in the task's order."""
    return {f"{prefix}{name}": value for name, value in result.metrics.items()}


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``enabled``; nothing elsewhere (CPU runs stay fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MetricsLog:
    """Per-epoch metrics to ``metrics.jsonl`` (one JSON object a line) and TensorBoard.

    Shared by the trainer (TensorBoard step: the optimizer step, ``step_key="step"``) and
    the search engine (its lines have no step: the epoch).
    """

    def __init__(self, out_dir: Path, tensorboard: bool, purge_step: int | None,
                 step_key: str = "step") -> None:
        self.path = out_dir / METRICS_FILE
        self.step_key = step_key
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed; writing metrics.jsonl only")
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)

    def rewrite(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Replaces the file with ``history`` (on resume: drops epochs the checkpoint lacks)."""
        atomic_write_text(self.path, "".join(json.dumps(m) + "\n" for m in history))

    def append(self, metrics: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self.writer is not None:
            step = int(metrics[self.step_key])
            for key, value in metrics.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    group = "val" if key.startswith("val_") else "train"
                    self.writer.add_scalar(f"{group}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Trains an fbnas network for a task with a :class:`TrainConfig` on its datasets.

    The task (:class:`fbnas.tasks.Task`) gives the training objective for the recipe, the
    metrics, and the score that picks ``best.pt``; the trainer knows none of them. Each
    epoch's line in ``metrics.jsonl`` holds ``val_<metric>`` for every metric of the task
    (``val_ema_<metric>`` for the EMA weights) and ``best_<score>``: for classification
    ``val_loss``, ``val_top1``, ``val_top5``, ``best_top1``.

    Args:
        model: the network (an ``FBNet`` for drop path/dropout; any module otherwise).
            Built and seeded by the caller; the trainer moves it to ``device``. If it has a
            ``head_spec`` it must be the task's.
        config: the recipe.
        data: train/val datasets (``task.open_datasets``) whose transforms match the
            recipe's augmentation.
        out_dir: where rank 0 writes ``config.yaml``, ``run.json``, ``metrics.jsonl``,
            ``tensorboard/``, ``last.pt``, ``best.pt``; ``None`` writes nothing.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"``...
        context: the process group (``init_distributed``); default a single process.
        listeners: progress display and user hooks.
        run_info: extra plain data stored in checkpoints and ``run.json`` (the arch def,
            data spec...); ``arch_def``, ``num_classes``, ``width_ratio``, ``resolution``,
            ``data`` and ``task`` are filled from the model, data and task when absent.
        tensorboard: also write TensorBoard event files.
        task: what the network is trained for; default: classification of ``data``'s
            classes (top-1 and top-5).

    Raises:
        ConfigError: the model's head or the data do not fit a given task.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, data: ImageDatasets,
                 out_dir: Path | None = None, device: str | torch.device | None = None,
                 context: DistContext | None = None,
                 listeners: Sequence[TrainListener] = (),
                 run_info: Mapping[str, Any] | None = None, tensorboard: bool = True,
                 task: Task | None = None) -> None:
        self.config = config
        self.data = data
        self.task = task if task is not None else ClassificationTask.for_data(data)
        self._check_task(model, strict=task is not None)
        self.context = context or DistContext()
        self.device = resolve_device(device, self.context)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.listeners = list(listeners)
        self.tensorboard = tensorboard
        self.use_amp = config.amp and self.device.type == "cuda"
        self.channels_last = config.channels_last and self.device.type == "cuda"
        self.run_info = self._run_info(model, run_info or {})
        self.epoch = 0          # epochs completed
        self.step = 0           # optimizer steps taken
        self.best_score = -math.inf
        """The best validation score so far (``task.score``; -inf before the first epoch)."""
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []
        self._extra: dict[str, Stateful] = {}
        self._metrics_log: MetricsLog | None = None
        self._epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._epoch_images = 0
        self._epoch_time = 0.0

        seed_training_streams(config.seed + self.context.rank)
        self.model = self._prepare_model(model)
        self.ddp_model = self._wrap_ddp(self.model)
        self.train_loader = self._train_loader()
        self.val_loader = self._eval_loader(data.val)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.ema = self._ema()
        objective = self.task.objective(config)
        self.mixup, self.criterion = objective.mix, objective.loss
        self.scheduler.step_update(self.step)

    @property
    def best_key(self) -> str:
        """The metrics-line and checkpoint key of the best score (``best_top1``)."""
        return f"best_{self.task.score_name}"

    # ----------------------------------------------------------------- set-up

    def _check_task(self, model: nn.Module, strict: bool) -> None:
        """The model's head must be the task's (``strict``: a task given by the caller); with
        the default task a different head trains as it always did, with a warning (a
        1000-class zoo head on a 10-class dataset)."""
        head = getattr(model, "head_spec", None)
        if head is not None and head != self.task.head_spec:
            message = (f"the model's head {head.to_dict()} is not the head of its task "
                       f"{self.task.to_dict()} ({self.task.head_spec.to_dict()})")
            if strict:
                raise ConfigError(f"{message}; build it with head=task.head_spec")
            logger.warning("%s", message)
        self.task.check_datasets(self.data)

    def _run_info(self, model: nn.Module, info: Mapping[str, Any]) -> dict[str, Any]:
        run = dict(info)
        spec = getattr(model, "arch_spec", None)
        if "arch_def" not in run and spec is not None:
            run["arch_def"] = spec.to_arch_def()
        run.setdefault("num_classes", getattr(self.data, "num_classes", None))
        run.setdefault("task", self.task.to_dict())
        run.setdefault("width_ratio", float(getattr(model, "width_ratio", 1.0)))
        run.setdefault("resolution", self.data.resolution)
        run.setdefault("data", str(self.data.spec))
        if "arch_def" not in run:
            raise TypeError("the model has no arch_spec; pass run_info={'arch_def': ...} so "
                            "checkpoints can rebuild it")
        return run

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        config = self.config
        if config.drop_path > 0:
            set_drop_path(model, config.drop_path)
        if config.dropout > 0:
            set_head_dropout(model, config.dropout)
        if config.sync_bn:
            if self.device.type != "cuda":
                raise RecipeError("sync_bn=true needs CUDA: PyTorch's SyncBatchNorm has no CPU "
                                  "implementation (on CPU each process normalises with its own "
                                  "batch statistics); set sync_bn=false")
            if self.context.is_distributed:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _wrap_ddp(self, model: nn.Module) -> nn.Module:
        if not self.context.is_distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def _loader_generator(self, tag: int) -> torch.Generator:
        """Seeds the loader's worker seeds from (seed, epoch, rank), not the global RNG."""
        seed = ((self.config.seed * 1_000_003 + self.epoch) * 1009 + self.context.rank) * 7 + tag
        return torch.Generator().manual_seed(seed)

    def _train_loader(self) -> DataLoader:
        sampler = GlobalBatchSampler(len(self.data.train), self.config.batch_size,
                                     self.config.seed, self.context.rank,
                                     self.context.world_size)
        if (self.config.mixup or self.config.cutmix) and sampler.local_batch % 2:
            raise RecipeError(f"mixup/cutmix need an even batch per process; "
                              f"{self.config.batch_size} over {self.context.world_size} "
                              f"processes is {sampler.local_batch}")
        return DataLoader(self.data.train, batch_sampler=sampler,
                          num_workers=self.config.workers,
                          pin_memory=self.device.type == "cuda",
                          generator=self._loader_generator(0))

    def _eval_loader(self, dataset: Any) -> DataLoader:
        local_batch = max(1, self.config.batch_size // self.context.world_size)
        return DataLoader(dataset, batch_size=local_batch,
                          sampler=ShardSampler(len(dataset), self.context.rank,
                                               self.context.world_size),
                          num_workers=self.config.workers,
                          pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(0))

    def _optimizer(self) -> torch.optim.Optimizer:
        from timm.optim import create_optimizer_v2

        config = self.config
        name = config.optimizer
        if name == "sgd":
            name = "sgd" if config.nesterov and config.momentum > 0 else "momentum"
        kwargs: dict[str, Any] = {}
        if config.opt_eps is not None:
            kwargs["eps"] = config.opt_eps
        # filter_bias_and_bn: no weight decay on 1-d parameters (BN scales/shifts, biases).
        return create_optimizer_v2(self.model, opt=name, lr=config.lr,
                                   weight_decay=config.weight_decay, momentum=config.momentum,
                                   filter_bias_and_bn=True, **kwargs)

    def _scheduler(self) -> Any:
        from timm.scheduler import CosineLRScheduler, StepLRScheduler

        config = self.config
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        common = dict(warmup_t=warmup, warmup_lr_init=config.warmup_lr, warmup_prefix=True,
                      t_in_epochs=False)
        if config.schedule == "cosine":
            return CosineLRScheduler(self.optimizer, t_initial=max(1, self.total_steps - warmup),
                                     lr_min=config.min_lr, **common)
        decay_t = config.decay_epochs * self.steps_per_epoch
        rate = config.decay_rate if config.schedule == "step" else 1.0
        return StepLRScheduler(self.optimizer, decay_t=max(decay_t, 1e-9), decay_rate=rate,
                               **common)

    def _ema(self) -> Any:
        if self.config.ema_decay <= 0:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(self.model, decay=self.config.ema_decay)

    # ----------------------------------------------------------------- state

    def register_state(self, name: str, obj: Stateful) -> None:
        """Includes ``obj``'s state (e.g. an architecture optimizer) in checkpoints."""
        if name in self._extra:
            raise ValueError(f"state {name!r} is already registered")
        self._extra[name] = obj

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`fbnas.train.checkpoint`)."""
        state: dict[str, Any] = {
            "format": ckpt.FORMAT, "version": ckpt.VERSION,
            **{k: self.run_info[k] for k in ("arch_def", "num_classes", "width_ratio",
                                              "resolution")},
            "data": self.run_info["data"],
            "task": self.task.to_dict(),
            "run_info": self.run_info,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "extra": {name: obj.state_dict() for name, obj in self._extra.items()},
            "epoch": self.epoch, "step": self.step,
            self.best_key: self.best_score if math.isfinite(self.best_score) else None,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": rng_states,
            "world_size": self.context.world_size,
        }
        if self.ema is not None:
            state["model_ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any], restore_rng: bool = True) -> None:
        """Restores a checkpoint from :meth:`state_dict` (after :func:`read_training_checkpoint`).

        Raises:
            CheckpointError: the recipe or the task differs from this trainer's, or weights
                do not fit.
        """
        saved_task = recorded_task(state)
        if saved_task is None and state.get("num_classes"):  # written before tasks were
            saved_task = ClassificationTask(int(state["num_classes"]))  # recorded
        if saved_task is not None and saved_task.to_dict() != self.task.to_dict():
            raise CheckpointError(f"the checkpoint was trained for another task "
                                  f"({saved_task.to_dict()}, this run: {self.task.to_dict()})")
        saved = TrainConfig.from_dict(state["config"], "checkpoint config")
        changed = saved.diff(self.config)
        if changed:
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in
                                ((k, *v) for k, v in changed.items()))
            raise CheckpointError(f"the checkpoint was trained with a different recipe "
                                  f"({listing}); resume with the saved recipe")
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                if "model_ema" not in state:
                    raise CheckpointError("the recipe has EMA but the checkpoint has no "
                                          "'model_ema'")
                self.ema.module.load_state_dict(state["model_ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(dict(state["scheduler"]))
            for name, obj in self._extra.items():
                obj.load_state_dict(state["extra"][name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this model/recipe: "
                                  f"{type(exc).__name__}: {exc}") from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        best = state.get(self.best_key)
        self.best_score = -math.inf if best is None else float(best)
        self.best_epoch = int(state.get("best_epoch", 0))
        self.history = [dict(m) for m in state.get("history", [])]
        self.scheduler.step_update(self.step)
        if restore_rng:
            rng = state["rng"]
            if len(rng) == self.context.world_size:
                ckpt.restore_rng_state(rng[self.context.rank])
            else:
                logger.warning("checkpoint has RNG states of %d processes, this run has %d: "
                               "random streams restart from the seed (the run stays valid "
                               "but is not bitwise reproducible)", len(rng),
                               self.context.world_size)
                torch.manual_seed(self.config.seed + 7919 * (self.epoch + 1)
                                  + self.context.rank)

    def resume(self, path: Path | None = None) -> Path:
        """Restores the newest readable checkpoint (``out_dir/last.pt``, else ``last.prev.pt``).

        Returns:
            The checkpoint file used. A corrupted ``last.pt`` is skipped with a warning.
        """
        if path is None:
            if self.out_dir is None:
                raise ValueError("resume() needs a checkpoint path or an out_dir")
            path, state, problems = ckpt.find_resumable(self.out_dir)
            for problem in problems:
                logger.warning("skipping unreadable checkpoint: %s", problem)
        else:
            state = ckpt.read_training_checkpoint(path)
        self.load_state_dict(state)
        if self.context.is_main and self.out_dir is not None:
            self._metrics().rewrite(self.history)
        return path

    # ----------------------------------------------------------------- the loop

    def fit(self) -> list[dict[str, Any]]:
        """Trains until ``config.epochs`` epochs are done; returns the per-epoch metrics."""
        try:
            while self.epoch < self.config.epochs:
                for images, targets in self.train_batches():
                    self.train_step(images, targets)
                self.end_epoch()
        finally:
            self.close()
        return self.history

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields the next epoch's training batches (this rank's share), timing the epoch."""
        if self.context.is_main and self.out_dir is not None and self.epoch == 0 \
                and self.step == 0:
            self._write_run_files()
        sampler = self.train_loader.batch_sampler
        assert isinstance(sampler, GlobalBatchSampler)
        sampler.set_epoch(self.epoch)
        self.train_loader.generator = self._loader_generator(0)
        self.ddp_model.train()
        self._epoch_loss.zero_()
        self._epoch_images = 0
        self._epoch_time = 0.0
        for listener in self.listeners:
            listener.on_epoch_start(self, self.epoch + 1, self.steps_per_epoch)
        start = time.perf_counter()
        yield from self.train_loader
        self._epoch_time = time.perf_counter() - start

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch; returns the (detached) loss.

        Mixup/CutMix, the loss, gradient clipping, the EMA update and the per-step learning
        rate all happen here, so callers driving their own loop get the whole recipe.
        """
        images, soft_targets = self._prepare_batch(images, targets)
        with autocast(self.device, self.use_amp):
            outputs = self.ddp_model(images)
            loss = self.criterion(as_float(outputs), soft_targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self._finish_step(images.shape[0], loss.detach())

    def _prepare_batch(self, images: torch.Tensor, targets: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, training targets) on the device: channels-last if the recipe asks,
        mixed by Mixup/CutMix if enabled (the targets are then soft)."""
        images = images.to(self.device, non_blocking=True)
        targets = to_device(targets, self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None:
            return self.mixup(images, targets)
        return images, targets

    def _finish_step(self, batch: int, loss: torch.Tensor) -> torch.Tensor:
        """After the gradients of a step exist: clipping, the optimizer step, EMA, the LR
        schedule, epoch totals and listeners. Subclasses with their own forward/backward
        (the sandwich rule of ``fbnas.slim.train``) end their step here too."""
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        lr = self.lr
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        self.scheduler.step_update(self.step)
        self._epoch_loss += loss * batch
        self._epoch_images += batch
        info = StepInfo(self.epoch + 1, self.step, self.step - self.epoch * self.steps_per_epoch,
                        self.steps_per_epoch, batch * self.context.world_size, loss, lr)
        for listener in self.listeners:
            listener.on_step_end(self, info)
        return loss

    def evaluate(self, use_ema: bool = False) -> EvalResult:
        """The task's validation metrics of the model (or its EMA), over all ranks."""
        model = self.ema.module if use_ema and self.ema is not None else self.model
        return evaluate(model, self.val_loader, self.device, self.context, self.use_amp,
                        self.channels_last, self.task)

    def end_epoch(self) -> dict[str, Any]:
        """Evaluates, logs the epoch's metrics and checkpoints; returns the metrics line.

        The best checkpoint is judged by the task's score of the EMA weights when EMA is on
        (the weights that ``fbnas eval`` and ``fbnas export`` use), else of the model's.
        """
        self.epoch += 1
        metrics = self._epoch_metrics()
        prefix = "val_ema_" if self.ema is not None else "val_"
        score = self.task.score({name: metrics[prefix + name]
                                 for name in self.task.metric_names})
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, self.epoch
        metrics[self.best_key] = self.best_score
        self.history.append(metrics)
        rng_states = all_gather_objects(ckpt.capture_rng_state(), self.context)
        if self.context.is_main and self.out_dir is not None:
            # Checkpoint first: a metrics line then always has its checkpoint (the checkpoint
            # carries the history, and resuming rewrites metrics.jsonl from it).
            state = self.state_dict(rng_states)
            ckpt.save_rotating(state, self.out_dir)
            if improved:
                ckpt.atomic_save(state, self.out_dir / ckpt.BEST)
            self._metrics().append(metrics)
        barrier(self.context)
        for listener in self.listeners:
            listener.on_epoch_end(self, metrics)
        return metrics

    def _epoch_metrics(self) -> dict[str, Any]:
        totals = torch.tensor([float(self._epoch_loss), float(self._epoch_images)],
                              dtype=torch.float64, device=self.device)
        all_reduce_sum(totals, self.context)
        seconds = self._epoch_time
        images = int(totals[1])
        metrics: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step, "lr": self.lr,
            "train_loss": float(totals[0] / max(totals[1], 1)),
            "train_images_per_s": images / seconds if seconds > 0 else None,
            "epoch_seconds": seconds,
        }
        metrics.update(prefixed("val_", self.evaluate()))
        if self.ema is not None:
            metrics.update(prefixed("val_ema_", self.evaluate(use_ema=True)))
        return metrics

    def _metrics(self) -> MetricsLog:
        if self._metrics_log is None:
            assert self.out_dir is not None
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._metrics_log = MetricsLog(self.out_dir, self.tensorboard,
                                           purge_step=self.step or None)
        return self._metrics_log

    def _write_run_files(self) -> None:
        assert self.out_dir is not None

        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / CONFIG_FILE, self.config.to_yaml())
        run = {**self.run_info, "world_size": self.context.world_size,
               "device": str(self.device), "fbnas": __version__,
               "torch": torch.__version__}
        atomic_write_text(self.out_dir / RUN_FILE, json.dumps(run, indent=2) + "\n")
        self._metrics().rewrite([])

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer."""
        if self._metrics_log is not None:
            self._metrics_log.close()
            self._metrics_log = None
