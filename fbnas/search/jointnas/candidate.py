"""One JointNAS candidate as plain data, and the function that trains it.

FBNetV3's search trains hundreds of (architecture, recipe) pairs: in calibration, in every
coarse round, in the final check. Each is a :class:`CandidateJob` (plain, picklable,
JSON-able data, so it crosses process and machine boundaries unchanged: a local worker, a
Ray task, a row of the results store) and comes back as a :class:`CandidateResult`.
:func:`train_candidate` is the one place that turns a job into a result; it runs the same
model builder and trainer as ``fbnas train``, so a chosen candidate retrains to the same
numbers with ``fbnas train ARCH --config RECIPE --data DATA``.

A candidate failing is an expected outcome of a search (a recipe that diverges, an
architecture too big for the device), not an error of the search: ``train_candidate``
never raises for it, it returns ``status="failed"`` with a one-line reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fbnas.errors import ConfigError, FbnasError, reject_unknown_keys

Status = Literal["ok", "failed"]

OUT_OF_MEMORY = "out of memory"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal data gives equal text (tuples become
    lists, as they do in any JSON file the job may be read back from)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _plain(value: Any, what: str) -> Any:
    """``value`` as JSON data (tuples become lists), or a ConfigError naming ``what``."""
    try:
        return json.loads(canonical_json(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"candidate job: {what} must be plain JSON data: {exc}") from None


@dataclass(frozen=True)
class CandidateJob:
    """One candidate to train: what a worker needs, all plain data (picklable, JSON-able).

    Attributes:
        arch_def: a plain arch def :func:`fbnas.build_model` builds (stored as JSON data:
            tuples become lists, which the builder reads alike).
        recipe: ``TrainConfig.to_dict()``; the epochs inside are the schedule (a short one
            for early-stopping candidates). Keys left out take the recipe's defaults.
        data: the dataset spec as the CLI takes it (``digits``, ``digits?per_class=20``,
            ``cifar10:PATH``).
        seed: the training seed; it replaces the recipe's ``seed`` (so one recipe trained
            with two seeds is two jobs with two keys: the noise ceiling of the predictor).
        tag: a free label (``calibration-full``, ``round-1``); not part of the key, so the
            same candidate asked for by two stages is trained once.
    """

    arch_def: dict[str, Any]
    recipe: dict[str, Any]
    data: str
    seed: int = 0
    tag: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.arch_def, Mapping):
            raise ConfigError(f"candidate job: arch_def must be a mapping, got "
                              f"{type(self.arch_def).__name__}")
        if not isinstance(self.recipe, Mapping):
            raise ConfigError(f"candidate job: recipe must be a mapping, got "
                              f"{type(self.recipe).__name__}")
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError(f"candidate job: data must be a dataset spec string, got "
                              f"{self.data!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"candidate job: seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.tag, str):
            raise ConfigError(f"candidate job: tag must be a string, got {self.tag!r}")
        # Frozen, but the dicts are stored as JSON data so the key, a pickle and a store
        # row all see the same thing.
        object.__setattr__(self, "arch_def", _plain(self.arch_def, "arch_def"))
        object.__setattr__(self, "recipe", _plain(self.recipe, "recipe"))

    @property
    def key(self) -> str:
        """Stable sha256 (hex) of the canonical JSON of (arch_def, recipe, data, seed)."""
        text = canonical_json({"arch_def": self.arch_def, "recipe": self.recipe,
                               "data": self.data, "seed": self.seed})
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The job as plain data (what the store and the workers carry)."""
        return {"arch_def": self.arch_def, "recipe": self.recipe, "data": self.data,
                "seed": self.seed, "tag": self.tag}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "candidate job"
                  ) -> CandidateJob:
        """A job from :meth:`to_dict`'s data; unknown keys are refused, naming ``source``."""
        reject_unknown_keys(data, cls, source)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def replace(self, **changes: Any) -> CandidateJob:
        """A copy with ``changes`` (``tag="round-2"``, ``seed=1``)."""
        return CandidateJob.from_dict({**self.to_dict(), **changes}, "replace")


@dataclass(frozen=True)
class CandidateResult:
    """What training a candidate gave.

    Attributes:
        key: the job's key.
        status: ``ok`` or ``failed``.
        accuracy: final validation top-1 in [0, 1] (of the EMA weights when the recipe has
            EMA: the weights ``fbnas eval`` and ``fbnas export`` use); ``None`` when failed.
        error: one line saying why it failed (``NaN loss at epoch 3``, ``out of memory``,
            ``build model: ArchDefError: ...``); ``None`` when ok.
        seconds: wall time of the whole job (data, build, training), or until it failed.
        metrics: plain data: ``val_top1`` (per epoch, in [0, 1]), ``train_loss`` (per
            epoch), ``best_top1``, ``epochs``, ``params``, ``macs``, ``resolution``,
            ``accuracy_from`` (which metric ``accuracy`` is).
    """

    key: str
    status: Status
    accuracy: float | None
    error: str | None
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("ok", "failed"):
            raise ConfigError(f"candidate result: status must be 'ok' or 'failed', got "
                              f"{self.status!r}")
        if self.status == "ok" and self.accuracy is None:
            raise ConfigError("candidate result: an ok result needs an accuracy")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "accuracy": self.accuracy,
                "error": self.error, "seconds": self.seconds, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "candidate result"
                  ) -> CandidateResult:
        reject_unknown_keys(data, cls, source)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def failure(cls, key: str, error: str, seconds: float = 0.0,
                metrics: Mapping[str, Any] | None = None) -> CandidateResult:
        """A failed result with ``error`` cut to its first line."""
        return cls(key=key, status="failed", accuracy=None, error=one_line(error),
                   seconds=float(seconds), metrics=dict(metrics or {}))


def one_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (``out of memory`` for any OOM)."""
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY
    message = one_line(str(exc)) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, MemoryError, or a RuntimeError with an allocator's
    out-of-memory message (CUDA's "out of memory", the CPU allocator's "can't allocate
    memory")."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


class NonFiniteLoss(FbnasError):
    """Raised inside training when the loss is NaN or infinite; ends the candidate."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"NaN loss at epoch {epoch}")
        self.epoch = epoch


def train_candidate(job: CandidateJob, device: str = "cpu", threads: int = 1,
                    timeout_s: float | None = None) -> CandidateResult:
    """Trains one candidate with fbnas's trainer; returns its result, never raises for it.

    The steps (each names itself in a failure's message): read the recipe
    (``TrainConfig.from_dict``, the job's seed replacing the recipe's), open the data at the
    recipe's resolution, build the model (``fbnas.build_model`` with the data's head),
    train (no run folder: a candidate writes nothing). Training stops at the first
    non-finite training loss ("NaN loss at epoch k"). An out-of-memory error anywhere is
    "out of memory" (and the CUDA cache is emptied so the worker can go on).

    Deterministic for a job and a thread count on CPU: the model is initialised from
    ``torch.manual_seed(seed)`` and the trainer seeds data order and augmentation from the
    seed (another thread count sums floats in another order: the last digits differ).

    Args:
        job: what to train.
        device: ``cpu``, ``cuda``, ``cuda:1``...
        threads: torch intra-op threads while training (restored afterwards); 1 lets N
            workers share N cores without oversubscription.
        timeout_s: stop at the first training step after this many seconds (failed:
            "timed out after T s"); a cooperative check, so a hang inside one step is not
            caught (the local executor's own timeout kills the worker for that).
    """
    import torch

    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    metrics: dict[str, Any] = {}
    stages = ["recipe"]
    try:
        deadline = None if timeout_s is None else start + timeout_s
        accuracy = _train(job, device, metrics, stages, _LossGuard(deadline, timeout_s))
        return CandidateResult(key=job.key, status="ok", accuracy=accuracy, error=None,
                               seconds=time.perf_counter() - start, metrics=metrics)
    except (NonFiniteLoss, TimedOut) as exc:
        return CandidateResult.failure(job.key, str(exc), time.perf_counter() - start, metrics)
    except Exception as exc:  # noqa: BLE001 - a failing candidate is a result, not a crash
        reason = describe_exception(exc)
        if reason != OUT_OF_MEMORY:
            reason = f"{stages[-1]}: {reason}"
        return CandidateResult.failure(job.key, reason, time.perf_counter() - start, metrics)
    finally:
        torch.set_num_threads(previous_threads)
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(job: CandidateJob, device: str, metrics: dict[str, Any], stages: list[str],
           guard: _LossGuard) -> float:
    """The steps of :func:`train_candidate`; returns the accuracy. Appends the current
    step's name to ``stages`` and fills ``metrics`` as it goes (a failure keeps what was
    measured)."""
    import torch

    from fbnas.cost import arch_cost
    from fbnas.data import open_datasets
    from fbnas.tasks import ClassificationTask
    from fbnas.train import TrainConfig, Trainer
    from fbnas.zoo import build_model

    recipe = TrainConfig.from_dict({**job.recipe, "seed": job.seed}, "recipe")
    stages.append("data")
    data = open_datasets(job.data, recipe.resolution, recipe.augment)
    task = ClassificationTask.for_data(data)
    stages.append("build model")
    torch.manual_seed(job.seed)
    model = build_model(job.arch_def, head=task.head_spec)
    cost = arch_cost(job.arch_def, data.resolution, head=task.head_spec)
    metrics.update(params=int(cost.params), macs=int(cost.macs), resolution=data.resolution,
                   epochs=recipe.epochs)
    stages.append("training")
    trainer = Trainer(model, recipe, data, out_dir=None, device=device, tensorboard=False,
                      task=task, listeners=[guard],
                      run_info={"arch_def": job.arch_def, "data": job.data})
    prefix = "val_ema_" if trainer.ema is not None else "val_"
    metrics.update(val_top1=[], train_loss=[], accuracy_from=prefix + "top1")
    while trainer.epoch < recipe.epochs:
        for images, targets in trainer.train_batches():
            trainer.train_step(images, targets)
        line = trainer.end_epoch()
        if not math.isfinite(line["train_loss"]):
            raise NonFiniteLoss(trainer.epoch)
        metrics["val_top1"].append(float(line[prefix + "top1"]) / 100.0)
        metrics["train_loss"].append(float(line["train_loss"]))
    trainer.close()
    metrics["best_top1"] = float(trainer.best_score) / 100.0
    return float(metrics["val_top1"][-1])


class TimedOut(FbnasError):
    """Raised inside training when the job's time is up; ends the candidate."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:g} s")


class _LossGuard:
    """A trainer listener that stops at the first non-finite step loss (a diverging
    recipe would otherwise train all its epochs on NaN weights) or when time is up."""

    def __init__(self, deadline: float | None, timeout_s: float | None) -> None:
        self.deadline = deadline
        self.timeout_s = timeout_s

    def on_epoch_start(self, trainer: Any, epoch: int, batches: int) -> None:
        pass

    def on_step_end(self, trainer: Any, info: Any) -> None:
        if not math.isfinite(float(info.loss)):
            raise NonFiniteLoss(info.epoch)
        if self.deadline is not None and time.perf_counter() > self.deadline:
            assert self.timeout_s is not None
            raise TimedOut(self.timeout_s)

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, Any]) -> None:
        pass
