"""Training slimmable networks: the sandwich rule, in-place distillation, BN recalibration.

Universally slimmable networks (ALGORITHMS.md section 4.3) train every width at once with
shared weights. Each optimizer step runs ``n`` widths on the same batch:

1. the largest network, with the recipe's loss against the labels; its logits, detached,
   are the soft targets of the others (*in-place distillation*: the largest width is the
   teacher, computed in the same step, at no extra forward cost);
2. the smallest network (every multiplier at ``min_wm``);
3. ``n - 2`` random widths;

and takes one optimizer step on the gradients summed over the ``n`` backward passes. The
largest and the smallest are always trained (the "bread" of the sandwich): the accuracy of
every width in between is bounded by those two, so they are where training pays most.

Batch-norm statistics are shared by all widths (the leading slice of one buffer), so they
fit no width in particular: before evaluating a width, :func:`recalibrate_bn` re-estimates
them on a few training batches (ALGORITHMS.md section 4.4).

:class:`SandwichTrainer` is the ordinary :class:`fbnas.train.Trainer` with the sandwich
step, so checkpoints, ``--resume`` (bitwise, widths included: step ``s`` draws its widths
from ``(seed, s)`` alone), data parallel processes, ``metrics.jsonl``, TensorBoard and
listeners all work unchanged::

    model = build_slim_model("slim_mbv2", num_classes=10)
    trainer = SandwichTrainer(model, load_recipe("digits"), open_datasets("digits"),
                              SandwichConfig(num_widths=4, min_wm=0.35), out_dir=run)
    trainer.fit()   # metrics.jsonl: val_top1 (largest width) and val_min_top1 (smallest)
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from fbnas.data.datasets import ImageDatasets
from fbnas.errors import reject_unknown_keys
from fbnas.slim.dyn_model import DynModel
from fbnas.slim.models import SlimFBNet, build_slim_model
from fbnas.tasks import ClassificationTask, Task, distill_loss, recorded_task
from fbnas.train import checkpoint as ckpt
from fbnas.train.config import RecipeError, TrainConfig
from fbnas.train.distributed import DistContext
from fbnas.train.trainer import (
    EvalResult,
    Trainer,
    TrainListener,
    as_float,
    autocast,
    evaluate,
    prefixed,
)
from fbnas.zoo.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

Sampling = Literal["per_dim", "uniform"]


@dataclass(frozen=True)
class SandwichConfig:
    """How a slimmable network is trained and evaluated.

    Attributes:
        num_widths: widths per step, ``n`` >= 2: the largest, the smallest and ``n - 2``
            random ones (US-Nets: 4).
        min_wm: the smallest width multiplier, in (0, 1) (US-MobileNetV2: 0.35; the width
            search should not go below it: narrower networks were never trained).
        sampling: ``per_dim`` draws each dimension's multiplier independently from
            U[min_wm, 1] (non-uniform US-Nets, Joslim: what a width search explores);
            ``uniform`` draws one multiplier for the whole network.
        distill: in-place distillation: the non-largest widths learn the largest width's
            detached softmax instead of the labels.
        bn_batches: training batches used to recalibrate batch-norm statistics before
            each evaluation.
    """

    num_widths: int = 4
    min_wm: float = 0.35
    sampling: Sampling = "per_dim"
    distill: bool = True
    bn_batches: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.num_widths, bool) or not isinstance(self.num_widths, int) \
                or self.num_widths < 2:
            raise RecipeError(f"sandwich.num_widths must be an int >= 2 (the largest and the "
                              f"smallest), got {self.num_widths!r}")
        if not isinstance(self.min_wm, (int, float)) or not 0.0 < self.min_wm < 1.0:
            raise RecipeError(f"sandwich.min_wm must be in (0, 1), got {self.min_wm!r}")
        if self.sampling not in ("per_dim", "uniform"):
            raise RecipeError(f"sandwich.sampling must be 'per_dim' or 'uniform', got "
                              f"{self.sampling!r}")
        if not isinstance(self.distill, bool):
            raise RecipeError(f"sandwich.distill must be true or false, got {self.distill!r}")
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) \
                or self.bn_batches < 1:
            raise RecipeError(f"sandwich.bn_batches must be an int >= 1, got "
                              f"{self.bn_batches!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "sandwich") -> SandwichConfig:
        """Builds a config from plain data; an unknown key is refused, naming ``source``.

        Raises:
            RecipeError: an unknown key (with the closest names) or a bad value.
        """
        reject_unknown_keys(data, cls, source, RecipeError)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- widths


def step_rng(seed: int, step: int) -> random.Random:
    """The width sampler of optimizer step ``step``: a function of ``(seed, step)`` alone.

    Every process of a data-parallel run draws the same widths (they must: the widths are
    module state and the gradients are averaged across processes), and a resumed run draws
    what the uninterrupted run would have, without storing any sampler state.
    """
    return random.Random(seed * 1_000_003 + step)


def sandwich_wms(search_dim: int, config: SandwichConfig, rng: random.Random
                 ) -> list[list[float]]:
    """The ``num_widths`` width vectors of one step: largest, smallest, then random ones."""
    wms = [[1.0] * search_dim, [config.min_wm] * search_dim]
    for _ in range(config.num_widths - 2):
        if config.sampling == "uniform":
            wms.append([rng.uniform(config.min_wm, 1.0)] * search_dim)
        else:
            wms.append([rng.uniform(config.min_wm, 1.0) for _ in range(search_dim)])
    return wms


# --------------------------------------------------------------------------- BN statistics


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: DynModel, real_ch: Sequence[Any] | None,
                   loader: Iterable[tuple[torch.Tensor, Any]], batches: int,
                   device: torch.device | str | None = None, seed: int | None = None) -> int:
    """Re-estimates every batch norm's running statistics at the widths ``real_ch``.

    Widths share one statistics buffer, which after sandwich training (or after evaluating
    another width) describes no width in particular. Following [US] ``calibrate_bn``: set
    the widths, reset the statistics, forward ``batches`` batches with BN in train mode and
    ``momentum=None`` (an exact cumulative average rather than an exponential one), without
    gradients. Everything but the norms stays in eval mode, so dropout and drop path do not
    disturb the statistics. The model is left at ``real_ch``, in its previous mode.

    Args:
        model: a slim network.
        real_ch: the widths (``model.decode_ch(model.decode_wm(wm))``); None: the current.
        loader: yields ``(images, targets)``; training images, with their augmentation.
        batches: how many batches to use (fewer if the loader ends first).
        device: where to put the images (default: the model's).
        seed: draw the same images, augmentation included, on every call: the loader's
            generator (if it has one) and the global torch RNG (used by the transforms when
            the loader has no workers) are seeded with it, the latter inside a fork so that
            the caller's random stream is left untouched.

    Returns:
        The number of images used.

    Raises:
        ValueError: ``batches < 1`` or an empty loader.
    """
    if batches < 1:
        raise ValueError(f"recalibrate_bn needs batches >= 1, got {batches}")
    if real_ch is not None:
        model.set_real_ch(real_ch)
    if device is None:
        device = next(model.parameters()).device
    norms = _batchnorms(model)
    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
            generator = getattr(loader, "generator", None)
            if generator is not None:
                generator.manual_seed(seed)
        images_seen = _forward_batches(model, norms, loader, batches, device)
    if images_seen == 0:
        raise ValueError("recalibrate_bn got an empty loader")
    return images_seen


def _forward_batches(model: nn.Module, norms: list[nn.modules.batchnorm._BatchNorm],
                     loader: Iterable[tuple[torch.Tensor, Any]], batches: int,
                     device: torch.device | str) -> int:
    """recalibrate_bn's pass: cumulative statistics from ``batches`` batches, no gradients."""
    was_training = model.training
    momenta = [bn.momentum for bn in norms]
    images_seen = 0
    try:
        model.eval()
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for index, (images, _targets) in enumerate(loader):
            if index >= batches:
                break
            model(images.to(device, non_blocking=True))
            images_seen += images.shape[0]
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    return images_seen


def calibration_loader(dataset: Any, batch_size: int, seed: int, workers: int = 0
                       ) -> DataLoader:
    """Shuffled training batches for :func:`recalibrate_bn`, the same on every process.

    Re-seed ``loader.generator`` before an iteration to get the same batches again. Not
    sharded: every process of a data-parallel run recalibrates on the same images, so
    their statistics agree. Its own generator keeps the training data order untouched.
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=False,
                      num_workers=workers, generator=torch.Generator().manual_seed(seed))


def evaluate_width(model: DynModel, real_ch: Sequence[Any] | None, calibration: DataLoader,
                   val_loader: DataLoader, bn_batches: int,
                   device: torch.device | str | None = None,
                   context: DistContext | None = None, amp: bool = False,
                   seed: int | None = None, task: Task | None = None) -> EvalResult:
    """The task's metrics (default: classification's) of ``model`` at ``real_ch`` after
    recalibrating its BN statistics there (on the same images for the same ``seed``:
    :func:`recalibrate_bn`)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    recalibrate_bn(model, real_ch, calibration, bn_batches, device, seed)
    return evaluate(model, val_loader, device, context, amp, task=task)


# --------------------------------------------------------------------------- the trainer


class SandwichTrainer(Trainer):
    """The :class:`~fbnas.train.Trainer` with the sandwich-rule step (module docstring).

    Per epoch, ``metrics.jsonl`` holds the usual keys for the *largest* width
    (``train_loss`` is its hard-label loss, ``val_*`` its metrics after BN
    recalibration; the best checkpoint is judged by it) plus ``val_min_<metric>``
    (``val_min_loss``, ``val_min_top1``, ``val_min_top5``) for the smallest width. The
    narrower widths learn the largest one's outputs with the task's ``distill_loss``.
    Checkpoints hold the weights with the largest width's recalibrated statistics, and
    ``run_info["slim"]`` (model name, sandwich config), which :func:`load_slim_checkpoint`
    reads back.

    Args:
        model: a slim network at full width.
        config: the recipe (``sync_bn`` must be off: PyTorch's SyncBatchNorm conversion
            would replace the slim norms with full-width ones).
        data: the datasets.
        sandwich: the sandwich settings; stored in checkpoints, and a resume with other
            settings is refused.
        out_dir, device, context, listeners, run_info, tensorboard, task: as for
            ``Trainer``.
    """

    def __init__(self, model: DynModel, config: TrainConfig, data: ImageDatasets,
                 sandwich: SandwichConfig | None = None, out_dir: Path | None = None,
                 device: str | torch.device | None = None,
                 context: DistContext | None = None,
                 listeners: Sequence[TrainListener] = (),
                 run_info: Mapping[str, Any] | None = None,
                 tensorboard: bool = True, task: Task | None = None) -> None:
        if not isinstance(model, DynModel):
            raise TypeError(f"SandwichTrainer trains slim networks (a DynModel), got "
                            f"{type(model).__name__}")
        if config.sync_bn:
            raise RecipeError("sync_bn=true would convert the slim batch norms to full-width "
                              "SyncBatchNorm; train slim networks with sync_bn=false")
        self.sandwich = sandwich or SandwichConfig()
        info = dict(run_info or {})
        info["slim"] = {"model": getattr(model, "name", type(model).__name__),
                        "sandwich": self.sandwich.to_dict()}
        super().__init__(model, config, data, out_dir=out_dir, device=device,
                         context=context, listeners=listeners, run_info=info,
                         tensorboard=tensorboard, task=task)
        local_batch = max(1, config.batch_size // self.context.world_size)
        self.calibration = calibration_loader(data.train, local_batch, config.seed,
                                              config.workers)

    @property
    def slim_model(self) -> DynModel:
        """The slim network (not the DDP wrapper)."""
        assert isinstance(self.model, DynModel)
        return self.model

    def step_widths(self, step: int) -> list[list[float]]:
        """The width vectors of optimizer step ``step`` (largest first)."""
        return sandwich_wms(self.slim_model.search_dim, self.sandwich,
                            step_rng(self.config.seed, step))

    # ----------------------------------------------------------------- one step

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP averages gradients once per step: on the last width's backward only."""
        if last or not self.context.is_distributed:
            return contextlib.nullcontext()
        return self.ddp_model.no_sync()  # type: ignore[operator]

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step over the sandwich widths; returns the largest width's loss.

        The recipe's whole step is kept (mixup/CutMix, label smoothing, gradient
        clipping, EMA, per-step learning rate, listeners): only the forward/backward part
        runs once per width, gradients accumulating.
        """
        images, soft_targets = self._prepare_batch(images, targets)
        model = self.slim_model
        wms = self.step_widths(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        teacher: torch.Tensor | None = None
        loss_largest = torch.zeros((), device=self.device)
        try:
            for index, wm in enumerate(wms):
                model.set_wm(wm)
                with self._no_sync(index == len(wms) - 1), autocast(self.device,
                                                                     self.use_amp):
                    outputs = as_float(self.ddp_model(images))
                    if index == 0:
                        loss = self.criterion(outputs, soft_targets)
                        teacher = outputs.detach()
                        loss_largest = loss.detach()
                    elif self.sandwich.distill:
                        assert teacher is not None
                        loss = self.task.distill_loss(outputs, teacher)
                    else:
                        loss = self.criterion(outputs, soft_targets)
                    loss.backward()
        finally:
            model.set_wm(model.full_wm())
        return self._finish_step(images.shape[0], loss_largest)

    # ----------------------------------------------------------------- evaluation

    def evaluate_wm(self, wm: Sequence[float], use_ema: bool = False) -> EvalResult:
        """The task's validation metrics at the widths ``wm``, BN recalibrated there first."""
        model = self.ema.module if use_ema and self.ema is not None else self.model
        assert isinstance(model, DynModel)
        real_ch = model.decode_ch(model.decode_wm(wm))
        # The same calibration images, crops included, every time: results do not depend on
        # how many evaluations came before (a resumed run recalibrates as the uninterrupted
        # one), and fbnas eval of the checkpoint reproduces them.
        return evaluate_width(model, real_ch, self.calibration, self.val_loader,
                              self.sandwich.bn_batches, self.device, self.context,
                              self.use_amp, seed=self.config.seed, task=self.task)

    def evaluate(self, use_ema: bool = False) -> EvalResult:
        """The largest width's validation metrics, after recalibrating its BN statistics."""
        return self.evaluate_wm(self.slim_model.full_wm(), use_ema)

    def _epoch_metrics(self) -> dict[str, Any]:
        # The smallest width first: the largest width's statistics, recalibrated last,
        # are the ones the checkpoint keeps.
        smallest = self.evaluate_wm([self.sandwich.min_wm] * self.slim_model.search_dim)
        metrics = super()._epoch_metrics()
        metrics.update(prefixed("val_min_", smallest))
        return metrics

    # ----------------------------------------------------------------- resume

    def load_state_dict(self, state: Mapping[str, Any], restore_rng: bool = True) -> None:
        """Restores a checkpoint of a sandwich run with the same sandwich settings.

        Raises:
            CheckpointError: the checkpoint is not a slim run, or its sandwich settings
                differ (named).
        """
        saved = (state.get("run_info") or {}).get("slim")
        if not saved or "sandwich" not in saved:
            raise CheckpointError("the checkpoint is not a sandwich (slim) training run")
        ours = self.sandwich.to_dict()
        changed = {k: (saved["sandwich"].get(k), v) for k, v in ours.items()
                   if saved["sandwich"].get(k) != v}
        if changed:
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise CheckpointError(f"the checkpoint was trained with other sandwich settings "
                                  f"({listing}); resume with the saved ones")
        super().load_state_dict(state, restore_rng)


def load_slim_checkpoint(path: str | Path, use_ema: bool = True
                         ) -> tuple[SlimFBNet, dict[str, Any]]:
    """Rebuilds the slim network of a :class:`SandwichTrainer` checkpoint, with its weights.

    Args:
        path: ``RUN/last.pt`` or ``RUN/best.pt`` (read with ``weights_only=True``).
        use_ema: take the EMA weights when the checkpoint has them.

    Returns:
        The network (full width, eval mode) and the checkpoint's ``run_info``.

    Raises:
        CheckpointError: unreadable, not a slim run, or weights that do not fit.
    """
    return _slim_network(ckpt.read_checkpoint(path), path, use_ema)


def _slim_network(state: Mapping[str, Any], path: str | Path, use_ema: bool
                  ) -> tuple[SlimFBNet, dict[str, Any]]:
    """The network and ``run_info`` of an already read slim checkpoint (load_slim_checkpoint)."""
    run_info = dict(state.get("run_info") or {})
    if "slim" not in run_info or "arch_def" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a slim training run "
                              f"(no run_info['slim']); train with fbnas.slim.SandwichTrainer")
    model = build_slim_model(state["arch_def"], num_classes=state.get("num_classes"))
    model.name = run_info["slim"].get("model", model.name)
    weights = state["model_ema"] if use_ema and "model_ema" in state else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its slim network: "
                              f"{exc}") from None
    return model.eval(), run_info


def evaluate_slim_checkpoint(path: str | Path, data: ImageDatasets, wms: Sequence[float] = (),
                             use_ema: bool = False, batch_size: int = 256, workers: int = 0,
                             device: torch.device | str = "cpu", *,
                             state: Mapping[str, Any] | None = None
                             ) -> list[tuple[float, EvalResult]]:
    """Validation metrics of a sandwich-trained checkpoint at uniform width multipliers
    (those of the task it records; classification when it records none).

    Every width is evaluated as the trainer does it: BN statistics recalibrated first on
    the recipe's batch size of training images (``data.train``, so open ``data`` with the
    recipe's augmentation to reproduce the training's numbers), drawn with the recipe's
    seed, ``bn_batches`` of the run's sandwich settings.

    Args:
        path: ``RUN/last.pt`` or ``RUN/best.pt`` of a :class:`SandwichTrainer` run.
        data: the datasets to recalibrate on (train split) and score (val split).
        wms: uniform width multipliers in (0, 1]; default: 1 and the training's ``min_wm``
            (the two widths the trainer reports).
        use_ema: score the EMA weights (when the checkpoint has them).
        batch_size, workers, device: of the validation loader and the evaluation (the
            calibration loader takes the recipe's batch size and workers).
        state: the checkpoint as the caller already read it (``path`` then only names it).

    Returns:
        ``(wm, result)`` per width, in the order given.

    Raises:
        CheckpointError: not a slim run, or its classes differ from ``data``'s.
        ValueError: a multiplier outside (0, 1].
    """
    if state is None:
        state = ckpt.read_checkpoint(path)
    model, run_info = _slim_network(state, path, use_ema)
    if model.num_classes != data.num_classes:
        raise CheckpointError(f"checkpoint {str(path)!r} classifies {model.num_classes} "
                              f"classes, {data.spec} has {data.num_classes}")
    task = recorded_task(state, str(path)) or ClassificationTask(data.num_classes)
    recipe = TrainConfig.from_dict(state["config"], f"{path} config")
    sandwich = SandwichConfig.from_dict(run_info["slim"]["sandwich"], f"{path} sandwich")
    wms = tuple(wms) or (1.0, sandwich.min_wm)
    for wm in wms:
        if not 0.0 < wm <= 1.0:
            raise ValueError(f"width multipliers must be in (0, 1], got {wm}")
    device = torch.device(device)
    model.to(device)
    # The training's loader settings: with workers the crops come from per-worker seeds,
    # without them from the global RNG, so only the same settings draw the same images.
    calibration = calibration_loader(data.train, recipe.batch_size, recipe.seed,
                                     recipe.workers)
    val_loader = DataLoader(data.val, batch_size=batch_size, num_workers=workers)
    results = []
    for wm in wms:
        real_ch = model.decode_ch(model.decode_wm([wm] * model.search_dim))
        results.append((wm, evaluate_width(model, real_ch, calibration, val_loader,
                                           sandwich.bn_batches, device, seed=recipe.seed,
                                           task=task)))
    return results


__all__ = [
    "SandwichConfig",
    "SandwichTrainer",
    "calibration_loader",
    "distill_loss",
    "evaluate_slim_checkpoint",
    "evaluate_width",
    "load_slim_checkpoint",
    "recalibrate_bn",
    "sandwich_wms",
    "step_rng",
]
