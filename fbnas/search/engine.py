"""The search engine: the bilevel loop of every differentiable architecture search.

The engine runs, the algorithm describes (docs/STYLE.md, "Seams"). A search hands the
engine a supernet that follows :class:`SearchableModel` (its weights, its architecture
parameters, how it samples, runs and derives an architecture), a :class:`fbnas.tasks.Task`
(the losses and metrics), a cost-aware loss (:class:`fbnas.search.cost_loss.CostLoss`) and
:class:`EngineConfig`; the engine owns the schedule, the sampling stream, data parallelism,
the run folder, resuming and deriving. FBNetV1 DNAS (:mod:`fbnas.search.dnas`) is one user;
it knows nothing of the loop.

Schedule (ALGORITHMS.md §1.5): the training split is divided once into a weight split
(80 % by default) and a θ split. The first ``warmup_epochs`` train the weights only. Each
later epoch runs one pass over the weight split updating w (SGD, cosine LR; θ frozen) and
one pass over the θ split updating θ only (Adam; no weight gradients are computed:
``loss.backward(inputs=arch_params)``), with the task's ``loss`` and ``arch_loss`` combined
with the expected cost — or, with ``alternate="step"``, interleaves the two per batch. τ
follows :class:`fbnas.search.schedule.TauSchedule`.

Every epoch validates the derived architecture inside the supernet (BatchNorm with batch
statistics: :func:`batch_statistics`), appends a line to ``metrics.jsonl`` and writes
``last.pt`` (and ``best.pt`` when the task's score improved) atomically
(:mod:`fbnas.search.run_folder`); ``resume=True`` continues a killed search and reaches
the same θ.

Data parallel (``torchrun``, :func:`fbnas.train.distributed.init_distributed`): every process
holds the whole supernet and θ; ``batch_size`` is the global batch. All ranks cut the same
weight/θ splits and the same global batches, and rank r takes its slice of each. After each
backward pass the gradients (of the weights in a weight step, of θ in a θ step) are summed
over ranks with each rank's share of the batch as its weight — the gradient of the global
batch's mean loss (the cost factor of the loss does not depend on the data) — so N
processes follow the single-process run on the same global batches, up to float summation
order, in networks without batch norm. Batch norm normalises each rank's slice with its own
statistics (no SyncBN); the running statistics are averaged over ranks at the end of every
epoch, so validation and checkpoints see one set. All ranks draw the same architecture
sample at every step (:class:`fbnas.search.sampling.ArchSampler`), so they run the same
path. Only rank 0 writes files; ``last.pt`` holds every rank's RNG state, so a search resumes
on the same number of processes to the same θ (on another number it continues, with the
per-rank streams restarted).

Devices: ``device="auto"`` takes this process's GPU when CUDA is present. The sampling
stream stays on the CPU (so every device draws alike); its samples are moved to the model's
device; batches are moved without waiting; the epoch's sums stay on the device until the
epoch ends. With ``amp`` the forward passes run under bfloat16 autocast, on CUDA only.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from fbnas.errors import ConfigError, reject_unknown_keys
from fbnas.search.cost_loss import CostLoss
from fbnas.search.derive import ARGMAX, LayerCosts, derive_within_band
from fbnas.search.protocols import Frozen
from fbnas.search.run_folder import RunFolder
from fbnas.search.sampling import ArchSampler
from fbnas.search.schedule import TauSchedule
from fbnas.tasks.base import Task
from fbnas.train.checkpoint import capture_rng_state, restore_rng_state
from fbnas.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    average_batchnorm_statistics,
    barrier,
    broadcast_state,
    reduce_gradients,
    resolve_device,
)
from fbnas.train.trainer import autocast, seed_training_streams

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict], None]
"""Called as ``(phase, step, total, info)`` during passes; info: epoch, epochs, tau."""


@runtime_checkable
class SearchableModel(Protocol):
    """What the engine asks of a supernet (an ``nn.Module``).

    A *sample* is whatever the model draws for one step and reads in its forward pass (a
    Gumbel mixture, a path, masks); the engine only passes it along. A *choice* is one
    architecture in plain data (a list of indices per layer, or any JSON-able object): it
    goes to ``metrics.jsonl`` and ``arch.json``, and :meth:`freeze` turns it into an arch
    def. A model whose choice is one index per layer, with costs that add up over layers,
    can also follow :class:`DerivesWithinBand`.
    """

    cost_unit: str
    """The unit of the costs (``ms``, ``macs``, ``params``)."""

    def weight_parameters(self) -> list[nn.Parameter]:
        """The parameters the weight step trains (everything but the architecture's)."""
        ...

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters the θ step trains."""
        ...

    def sample(self, generator: torch.Generator, tau: float) -> Any:
        """A step's sample at temperature ``tau``, drawn from ``generator`` (the shared CPU
        stream) and placed on the model's device."""
        ...

    def fixed_sample(self, choice: Any) -> Any:
        """The sample that runs the architecture ``choice`` alone (validation)."""
        ...

    def forward(self, x: torch.Tensor, sample: Any) -> tuple[Any, torch.Tensor]:
        """``(outputs, expected cost)``: the task's outputs and a scalar cost tensor that is
        differentiable in the architecture parameters."""
        ...

    def derive(self) -> Any:
        """The most likely architecture (the argmax of the architecture parameters)."""
        ...

    def sample_architectures(self, count: int, generator: torch.Generator) -> list[Any]:
        """``count`` choices drawn from the architecture distribution with ``generator``."""
        ...

    def probabilities(self) -> Any:
        """The architecture distribution (a tensor or a list of them), for the logs."""
        ...

    def entropy(self) -> torch.Tensor:
        """Mean entropy of the distribution: high while the search is undecided."""
        ...

    def expected_cost(self) -> float:
        """The cost expected under :meth:`probabilities`."""
        ...

    def choice_cost(self, choice: Any) -> float:
        """The cost of one architecture."""
        ...

    def freeze(self, choice: Any) -> Frozen:
        """``choice`` made concrete: its plain arch def, which ``fbnas.build_model`` builds
        (the same :class:`fbnas.search.protocols.Frozen` a :class:`Space` freezes to)."""
        ...

    def arch_state(self) -> dict[str, Any]:
        """The architecture parameters as plain data (``theta.json``)."""
        ...


@runtime_checkable
class DerivesWithinBand(Protocol):
    """A supernet whose choice is one index per layer and whose cost adds up over layers:
    with a cost target, the engine derives the most probable architecture within the band
    (:func:`fbnas.search.derive.derive_within_band`)."""

    def choice_costs(self) -> LayerCosts:
        """The cost of every choice of every layer, plus the fixed part."""
        ...

    def log_probabilities(self) -> list[list[float]]:
        """(layers, K) log-probabilities of the choices, ``-inf`` for padding."""
        ...


@runtime_checkable
class DerivesNearTarget(Protocol):
    """A supernet whose cost does not add up over its choices (DMaskingNAS: products of
    effective widths): with a cost target and a band, it derives the architecture itself,
    near the target."""

    def derive_near_target(self, target: float, band: float) -> tuple[Any, str]:
        """(a choice within ±band of ``target`` if one is found, how it was derived)."""
        ...


@runtime_checkable
class PricesDistribution(Protocol):
    """A supernet that prices its architecture distribution differentiably: a cost loss
    that pulls the *expected* cost to a target (``CostLoss(pull_on="expected")``) needs it.
    """

    def expected_cost_tensor(self) -> torch.Tensor:
        """The cost expected under :meth:`SearchableModel.probabilities`: a scalar tensor,
        differentiable in the architecture parameters, on their device."""
        ...


SEARCHABLE_MEMBERS = tuple([*SearchableModel.__annotations__,
                            *(name for name, value in vars(SearchableModel).items()
                              if callable(value) and not name.startswith("_"))])


class SearchData(Protocol):
    """The datasets a search reads: ``train`` (split into the weight and θ parts) and
    ``val`` (validation of the derived architecture); items are ``(input, target)``."""

    train: Dataset
    val: Dataset


Describe = Callable[[Any, Any, str], dict[str, Any]]
"""``(model, choice, derived) -> record``: what ``arch.json`` says about an architecture
(``derived``: how it was chosen, ``"sampled"`` for the samples)."""


@dataclass(frozen=True)
class EngineConfig:
    """The engine's settings (defaults: the FBNetV1 paper's, ALGORITHMS.md §1.5).

    Attributes:
        epochs, warmup_epochs: all epochs, and the first ones that train the weights only.
        batch_size: the global batch over all processes.
        w_share: the share of the training split that trains the weights (the rest: θ).
        alternate: the weight and θ passes follow each other per ``epoch`` or per ``step``.
        tau0, tau_decay, tau_final: the temperature schedule (:class:`TauSchedule`).
        w_lr, w_momentum, w_weight_decay: SGD of the weights, cosine over all epochs.
        theta_optimizer, theta_lr, theta_weight_decay, theta_momentum: the optimiser of the
            architecture parameters: ``adam`` (the paper's; betas (0.9, 0.999)) or ``sgd``
            (with ``theta_momentum``).
        target_band: with a cost target, derive the argmax when its cost is within ±band of
            the target, else the most probable architecture within the band (None: always
            the argmax).
        num_samples: architectures sampled from the final distribution (``samples/``).
        seed: the initial weights (seed), the sampling stream (seed + 1), the splits and
            batch orders.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``...
        amp: bfloat16 autocast of the forward passes (CUDA only; ignored elsewhere).
        tensorboard: also write TensorBoard scalars into the run folder.
    """

    epochs: int = 90
    warmup_epochs: int = 10
    batch_size: int = 64
    w_share: float = 0.8
    alternate: Literal["epoch", "step"] = "epoch"
    tau0: float = 5.0
    tau_decay: float = 0.956
    tau_final: float | None = None
    w_lr: float = 0.1
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    theta_lr: float = 0.01
    theta_weight_decay: float = 5e-4
    theta_optimizer: Literal["adam", "sgd"] = "adam"
    theta_momentum: float = 0.9
    target_band: float | None = 0.05
    num_samples: int = 5
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got "
                              f"{self.epochs} and {self.warmup_epochs}")
        if not 0 < self.w_share < 1:
            raise ConfigError(f"w_share must be in (0, 1), got {self.w_share}")
        self.schedule()  # checks the temperatures
        if self.target_band is not None and not 0 < self.target_band < 1:
            raise ConfigError(f"target_band must be in (0, 1) or None, got {self.target_band}")
        if self.batch_size < 1 or self.num_samples < 0:
            raise ConfigError(f"need batch_size >= 1 and num_samples >= 0, got "
                              f"{self.batch_size} and {self.num_samples}")
        if self.alternate not in ("epoch", "step"):
            raise ConfigError(f"alternate must be 'epoch' or 'step', got {self.alternate!r}")
        if self.theta_optimizer not in ("adam", "sgd"):
            raise ConfigError(f"theta_optimizer must be 'adam' or 'sgd', got "
                              f"{self.theta_optimizer!r}")
        for name in ("w_lr", "theta_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("w_momentum", "theta_momentum", "w_weight_decay", "theta_weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "engine settings"
                  ) -> EngineConfig:
        """The settings from plain data; an unknown key is named with the closest ones."""
        reject_unknown_keys(data, cls, source)
        return cls(**data)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def schedule(self) -> TauSchedule:
        return TauSchedule(self.epochs, self.warmup_epochs, self.tau0, self.tau_decay,
                           self.tau_final)


@dataclass
class EngineResult:
    """What a search produced (also written under the run folder)."""

    out_dir: Path
    choice: Any
    """The derived architecture."""
    derived: str
    """How it was derived (``argmax``, or within the band of the cost target)."""
    samples: list[Any]
    """The architectures sampled from the final distribution."""
    records: list[dict[str, Any]]
    """``arch.json``, then ``samples/arch_XX.json``."""
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(default=None, repr=False)
    """The trained supernet."""


@torch.no_grad()
@contextlib.contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """Evaluation mode, except that BatchNorm normalises with each batch's statistics and
    leaves its running statistics alone (momentum 0).

    The running statistics of a supernet's blocks were gathered on Gumbel-weighted mixtures
    of candidate outputs; on the argmax path alone they describe the wrong activations.
    Even so the path's accuracy stays low until θ sharpens (10 % → 46 % over the demo's
    search), since its weights were trained inside mixtures: read it as a trend, and train
    the derived network for its real accuracy.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    counts = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
              for m in norms]
    net.eval()
    for norm in norms:
        norm.train()
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum, count in zip(norms, momenta, counts, strict=True):
            norm.momentum = momentum
            if count is not None:
                norm.num_batches_tracked.copy_(count)
            norm.eval()


def check_searchable(model: object) -> None:
    """Raises TypeError unless ``model`` is an ``nn.Module`` with every
    :class:`SearchableModel` member (the missing ones named)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"a searchable model must be an nn.Module, got {type(model).__name__}")
    missing = [name for name in SEARCHABLE_MEMBERS if not hasattr(model, name)]
    if missing:
        raise TypeError(f"{type(model).__name__} is not a SearchableModel: it lacks "
                        f"{', '.join(missing)}")


def default_record(model: SearchableModel, choice: Any, derived: str) -> dict[str, Any]:
    """The ``arch.json`` of a model without its own :data:`Describe`."""
    return {"arch_def": model.freeze(choice).arch_def, "choice": choice,
            "predicted_cost": model.choice_cost(choice), "cost_unit": model.cost_unit,
            "derived": derived}


def _plain(value: Any) -> Any:
    """Tensors (and lists of them) as nested lists of numbers, for JSON."""
    if isinstance(value, torch.Tensor):
        return value.detach().tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_STATS = 5
"""Sums per pass before the task's metrics: search loss, task loss, cost term, target pull
(each times the images), images."""


def _theta_optimizer(params: list[nn.Parameter], config: EngineConfig) -> torch.optim.Optimizer:
    if config.theta_optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.theta_lr, momentum=config.theta_momentum,
                               weight_decay=config.theta_weight_decay)
    return torch.optim.Adam(params, lr=config.theta_lr, weight_decay=config.theta_weight_decay)


def _split(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round(n * share))
    return order[:cut], order[cut:]


def _rank_batches(dataset: Dataset, indices: list[int], batch_size: int, seed: int,
                  context: DistContext) -> list[tuple[Any, Any, float]]:
    """This rank's slices of one pass's global batches, with each slice's share of its batch.

    Every rank computes the same global batches: ``indices`` shuffled by ``seed`` and cut
    into ``batch_size`` pieces, dropping a partial last piece unless it is the only one.
    Rank r of N takes items ``[r·B/N, (r+1)·B/N)`` of each batch; slice sizes differ by at
    most one.
    """
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    if len(order) > batch_size:
        order = order[: len(order) // batch_size * batch_size]
    batches = []
    for start in range(0, len(order), batch_size):
        members = order[start:start + batch_size]
        lo = len(members) * context.rank // context.world_size
        hi = len(members) * (context.rank + 1) // context.world_size
        x, y = default_collate([dataset[indices[i]] for i in members[lo:hi]])
        batches.append((x, y, (hi - lo) / len(members)))
    return batches


def _to(value: Any, device: torch.device) -> Any:
    """A batch's inputs or targets (a tensor, or a tuple/list/dict of them) on ``device``,
    queued without waiting."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


class SearchEngine:
    """Searches one supernet: builds it, trains weights and θ, writes the run, derives.

    Args:
        build: makes the supernet (called once, after the global RNGs are seeded with
            ``config.seed``, so the initial weights are the same on every rank and run).
        task: the losses (``loss`` for weight steps, ``arch_loss`` for θ steps) and metrics.
        data: ``train`` and ``val`` datasets.
        config: the engine's settings.
        cost_loss: combines the task loss with the expected cost (and its ``target``, which
            deriving aims at too).
        context: the process group (:func:`fbnas.train.distributed.init_distributed`);
            default a single process.

    Raises:
        ConfigError: a split's batch cannot give every process an image.
        RecipeError: ``cuda`` asked for where CUDA is absent.
        TypeError: ``build`` made something that is not a :class:`SearchableModel`.

    Example:
        >>> engine = SearchEngine(lambda: MySupernet(), ClassificationTask(10), data,
        ...                       EngineConfig(epochs=3, warmup_epochs=1), CostLoss(1e6))
        >>> result = engine.run("runs/my_search")  # doctest: +SKIP
    """

    def __init__(self, build: Callable[[], SearchableModel], task: Task, data: SearchData,
                 config: EngineConfig, cost_loss: CostLoss,
                 context: DistContext | None = None) -> None:
        self.config, self.task, self.data, self.cost_loss = config, task, data, cost_loss
        self.context = context or DistContext()
        self.device = resolve_device(config.device, self.context)
        self.use_amp = config.amp and self.device.type == "cuda"
        if config.amp and not self.use_amp:
            logger.warning("amp (bfloat16 autocast) needs CUDA: searching in float32 on %s",
                           self.device)
        self.schedule = config.schedule()
        self.w_idx, self.theta_idx = _split(len(data.train), config.w_share, config.seed)
        for name, split in (("weight", self.w_idx), ("theta", self.theta_idx)):
            if min(config.batch_size, len(split)) < self.context.world_size:
                raise ConfigError(f"the {name} split's batches "
                                  f"({min(config.batch_size, len(split))} images) cannot give "
                                  f"each of {self.context.world_size} processes an image; use "
                                  f"a larger batch or dataset")
        seed_training_streams(config.seed)  # the same initial weights on every rank
        model = build()
        check_searchable(model)
        self.model: Any = model.to(self.device)
        self.w_opt = torch.optim.SGD(self.model.weight_parameters(), lr=config.w_lr,
                                     momentum=config.w_momentum,
                                     weight_decay=config.w_weight_decay)
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt,
                                                                  T_max=config.epochs)
        self.theta_opt = _theta_optimizer(self.model.arch_parameters(), config)
        if cost_loss.needs_expected_cost and not isinstance(self.model, PricesDistribution):
            raise ConfigError(f"the cost loss pulls the expected cost to the target "
                              f"(pull_on='expected'), but {type(self.model).__name__} has no "
                              f"expected_cost_tensor(); use pull_on='sample'")
        self.sampler = ArchSampler(config.seed + 1)
        self.best_score = -math.inf
        self.best_epoch = 0

    # ----------------------------------------------------------------- the run

    def run(self, out_dir: str | Path, resume: bool = False, progress: Progress | None = None,
            run_config: Mapping[str, Any] | None = None, describe: Describe | None = None
            ) -> EngineResult:
        """Searches and writes the run folder; every rank returns the same result.

        Args:
            out_dir: the run folder (on a file system every process sees, for ``resume``).
            resume: continue from the folder's checkpoint (``last.pt``, else
                ``last.prev.pt``), if there is one.
            progress: called during passes (a progress bar; raising stops the search).
            run_config: the search's settings as plain data (``search_config.json``).
            describe: what ``arch.json`` records (default :func:`default_record`).
        """
        folder = RunFolder(out_dir, self.context, self.config.tensorboard)
        history: list[dict[str, Any]] = []
        start_epoch = 0
        if resume and folder.has_checkpoint():
            start_epoch, history = self.load_state_dict(folder.read_checkpoint())
        broadcast_state(self.model, self.context)
        folder.start(run_config, history)
        try:
            for epoch in range(start_epoch, self.config.epochs):
                tau = self.schedule.tau_of_epoch(epoch)
                stats = self.train_epoch(epoch, tau, progress)
                record, score = self.epoch_record(epoch, tau, stats)
                best = score > self.best_score
                if best:
                    self.best_score, self.best_epoch = score, epoch + 1
                history.append(record)
                self.save_epoch(folder, epoch, history, best)
            result = self.derive(folder, history, describe)
        finally:
            folder.close()
        barrier(self.context)  # the arch files exist when any rank returns
        return result

    # ----------------------------------------------------------------- training

    def train_epoch(self, epoch: int, tau: float, progress: Progress | None = None
                    ) -> torch.Tensor:
        """One epoch's weight pass (and θ pass after warm-up).

        Returns:
            (2, 5 + metrics) float64 sums over all ranks: per pass (weights, θ) the search
            loss, the task loss, the cost term and the target pull (each times the batch's
            images), the images, then the task's metric sums (weight pass only).
        """
        config, context = self.config, self.context
        search_epoch = epoch - config.warmup_epochs
        seed = config.seed * 1000 + epoch * 10
        w_batches = _rank_batches(self.data.train, self.w_idx, config.batch_size, seed,
                                  context)
        t_batches = _rank_batches(self.data.train, self.theta_idx, config.batch_size,
                                  seed + 1, context) if search_epoch >= 0 else []
        if config.alternate == "step" and t_batches:
            plan = []
            for i in range(max(len(w_batches), len(t_batches))):
                if i < len(w_batches):
                    plan.append(("w", w_batches[i]))
                if i < len(t_batches):
                    plan.append(("theta", t_batches[i]))
        else:
            plan = [("w", b) for b in w_batches] + [("theta", b) for b in t_batches]
        stats = torch.zeros(2, _STATS + len(self.task.metric_names), dtype=torch.float64,
                            device=self.device)
        for done, (kind, (x, y, share)) in enumerate(plan, 1):
            self.step(kind, x, y, share, tau, stats)
            if progress:
                progress("warm-up" if search_epoch < 0 else "search", done, len(plan),
                         {"epoch": epoch + 1, "epochs": config.epochs, "tau": tau})
        self.w_sched.step()
        average_batchnorm_statistics(self.model, context)
        return all_reduce_sum(stats, context)

    def step(self, kind: Literal["w", "theta"], x: Any, y: Any, share: float, tau: float,
             stats: torch.Tensor) -> None:
        """One weight step (θ frozen) or one θ step (no weight gradients are computed).

        ``share`` is this rank's part of the global batch; ``stats`` (see
        :meth:`train_epoch`) gathers the step's sums without reading them back.
        """
        model = self.model
        model.train()
        sample = self.sampler.sample(model, tau)
        x, y = _to(x, self.device), _to(y, self.device)
        weights = kind == "w"
        with autocast(self.device, self.use_amp):
            outputs, cost = model(x, sample)
            task_loss = (self.task.loss(outputs, y) if weights
                         else self.task.arch_loss(outputs, y))
            expected = model.expected_cost_tensor() if self.cost_loss.needs_expected_cost \
                else None
            terms = self.cost_loss.terms(task_loss, cost, expected)
            loss = terms.total
        optimizer = self.w_opt if weights else self.theta_opt
        optimizer.zero_grad(set_to_none=True)
        params = model.weight_parameters() if weights else model.arch_parameters()
        loss.backward(inputs=params)
        reduce_gradients(params, share, self.context)
        optimizer.step()
        row = stats[0 if weights else 1]
        count = x.shape[0]
        with torch.no_grad():
            parts = torch.stack([terms.total, terms.task, terms.cost, terms.target])
            row[:4] += parts.detach().to(torch.float64) * count
            row[4] += count
            if weights:
                row[_STATS:] += self.task.metric_sums(outputs, y)

    # ----------------------------------------------------------------- epoch end

    @torch.no_grad()
    def validate(self, choice: Any) -> dict[str, float]:
        """The task's metrics of architecture ``choice`` inside the supernet on the
        validation set (sharded over ranks, BatchNorm on batch statistics)."""
        model, context = self.model, self.context
        sample = model.fixed_sample(choice)
        val = self.data.val
        names = self.task.metric_names
        totals = torch.zeros(len(names) + 1, dtype=torch.float64, device=self.device)
        shard = Subset(val, range(context.rank, len(val), context.world_size))
        loader = DataLoader(shard, batch_size=256, pin_memory=self.device.type == "cuda")
        with batch_statistics(model):
            for x, y in loader:
                x, y = _to(x, self.device), _to(y, self.device)
                with autocast(self.device, self.use_amp):
                    outputs, _ = model(x, sample)
                totals[:-1] += self.task.metric_sums(outputs, y)
                totals[-1] += x.shape[0]
        all_reduce_sum(totals, context)
        return self.task.metrics(totals[:-1], int(totals[-1]))

    @torch.no_grad()
    def epoch_record(self, epoch: int, tau: float, stats: torch.Tensor
                     ) -> tuple[dict[str, Any], float]:
        """(the metrics line of an epoch, the task's score of its validation metrics).

        ``train_loss``/``theta_loss`` are the search loss (task loss with the cost) of the
        weight/θ pass, ``train_task_loss``/``theta_task_loss`` its task loss,
        ``..._cost_term`` its cost term (the factor of ``mul``/``log``, the addend of
        ``add``) and ``..._target_term`` the pull to the target (0 without one), each the
        pass's mean (None for the θ pass of a warm-up epoch); ``train_<metric>`` the task's
        metrics over the weight pass;
        ``val_<metric>`` those of the derived architecture on the validation set; then the
        architecture distribution: entropy, expected cost, the derived architecture
        (``argmax``) and its cost, the probabilities.
        """
        model, config = self.model, self.config
        choice = model.derive()
        val = self.validate(choice)
        w_row, t_row = stats.tolist()
        w_seen, t_seen = w_row[4], t_row[4]
        train = self.task.metrics(torch.tensor(w_row[_STATS:], dtype=torch.float64),
                                  int(w_seen))
        parts = ("loss", "task_loss", "cost_term", "target_term")
        record = {
            "epoch": epoch + 1, "phase": "warm-up" if epoch < config.warmup_epochs else "search",
            "tau": tau, "lr": self.w_opt.param_groups[0]["lr"],
            **{f"train_{part}": w_row[i] / max(1, w_seen) for i, part in enumerate(parts)},
            **{f"train_{name}": value for name, value in train.items() if name != "loss"},
            **{f"theta_{part}": t_row[i] / t_seen if t_seen else None
               for i, part in enumerate(parts)},
            **{f"val_{name}": value for name, value in val.items()},
            "entropy": float(model.entropy()), "expected_cost": model.expected_cost(),
            "argmax_cost": model.choice_cost(choice), "cost_unit": model.cost_unit,
            "argmax": choice, "probabilities": _plain(model.probabilities()),
        }
        return record, self.task.score(val)

    def state_dict(self, rng: list[dict[str, Any]], epoch: int, history: list[dict[str, Any]]
                   ) -> dict[str, Any]:
        """The checkpoint after ``epoch`` (0-based), with every rank's RNG states ``rng``."""
        return {
            "supernet": self.model.state_dict(), "w_opt": self.w_opt.state_dict(),
            "w_sched": self.w_sched.state_dict(), "theta_opt": self.theta_opt.state_dict(),
            "arch_rng": self.sampler.state, "rng": rng,
            "world_size": self.context.world_size, "epoch": epoch, "history": history,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "best_epoch": self.best_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        """Restores a checkpoint; returns (the epoch to continue with, the history so far).

        On another number of processes than the checkpoint's, the per-rank RNG streams
        restart from the seed (only the architecture stream and the data order matter to
        the search, and both are independent of the process count).
        """
        self.model.load_state_dict(state["supernet"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.w_sched.load_state_dict(state["w_sched"])
        self.theta_opt.load_state_dict(state["theta_opt"])
        if "arch_rng" in state:
            self.sampler.state = state["arch_rng"]
        else:
            logger.warning("the checkpoint has no architecture sampling stream (an older "
                           "fbnas): sampling restarts from the seed")
        best = state.get("best_score")
        self.best_score = -math.inf if best is None else float(best)
        self.best_epoch = int(state.get("best_epoch", 0))
        rng = state["rng"]
        rng = [rng] if isinstance(rng, dict) else list(rng)  # a dict: saved by one process
        context = self.context
        if len(rng) == context.world_size:
            restore_rng_state(rng[context.rank])
        else:
            logger.warning("the checkpoint holds RNG states of %d processes, this run has %d",
                           len(rng), context.world_size)
            torch.manual_seed(self.config.seed + 7919 * (int(state["epoch"]) + 1)
                              + context.rank)
        return int(state["epoch"]) + 1, [dict(r) for r in state["history"]]

    def save_epoch(self, folder: RunFolder, epoch: int, history: list[dict[str, Any]],
                   best: bool) -> None:
        """Rank 0 writes the checkpoint (with every rank's RNG state), θ and the metrics line."""
        rng = all_gather_objects(capture_rng_state(), self.context)
        if folder.writes:
            folder.save_epoch(self.state_dict(rng, epoch, history), history[-1],
                              {"epoch": epoch, **self.model.arch_state()}, best)

    # ----------------------------------------------------------------- deriving

    def derived_choice(self) -> tuple[Any, str]:
        """(the derived architecture, how): the argmax, or with a cost target it misses and a
        model that :class:`DerivesWithinBand`, the most probable one within the band."""
        model = self.model
        choice = model.derive()
        band = self.config.target_band
        if (self.cost_loss.target is not None and band is not None
                and isinstance(model, DerivesNearTarget)):
            return model.derive_near_target(self.cost_loss.target, band)
        if self.cost_loss.target is None or not isinstance(model, DerivesWithinBand):
            return choice, ARGMAX
        return derive_within_band(choice, model.log_probabilities(), model.choice_costs(),
                                  self.cost_loss.target, self.config.target_band)

    def derive(self, folder: RunFolder, history: list[dict[str, Any]],
               describe: Describe | None = None) -> EngineResult:
        """The derived architecture and ``num_samples`` sampled ones; rank 0 writes them."""
        model, config = self.model, self.config
        choice, method = self.derived_choice()
        generator = torch.Generator().manual_seed(config.seed)
        sampled = model.sample_architectures(config.num_samples, generator)
        describe = describe or default_record
        records = [describe(model, c, method if k == 0 else "sampled")
                   for k, c in enumerate([choice, *sampled])]
        folder.write_architectures(records)
        return EngineResult(folder.path, choice, method, sampled, records, history, model)
