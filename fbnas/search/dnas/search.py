"""The FBNetV1 search loop: warm-up, then alternating weight and θ passes, τ annealing.

Schedule (ALGORITHMS.md §1.5): the training split is divided once into a weight split
(80 % by default) and a θ split. The first ``warmup_epochs`` train the weights only. Each
later epoch runs one pass over the weight split updating w (SGD, cosine LR; θ frozen) and
one pass over the θ split updating θ only (Adam; no weight gradients are computed), both
with the same cost-aware loss — or, with ``alternate="step"``, interleaves the two per
batch. τ is multiplied by ``tau_decay`` after each search epoch; with ``tau_final`` set
instead, the decay is chosen so that τ reaches it at the last epoch (short runs sharpen too).

Every epoch appends a line to ``metrics.jsonl`` (losses, accuracies, τ, θ entropy, expected
cost, the per-layer distributions) and writes ``last.pt`` atomically; ``resume=True``
continues a killed search from it and reaches the same θ.

Data parallel (``torchrun``, :func:`fbnas.train.distributed.init_distributed`): every process
holds the whole supernet and θ; ``batch_size`` is the global batch. All ranks cut the same
weight/θ splits and the same global batches, and rank r takes its slice of each. After each
backward pass the gradients (of the weights in a weight step, of θ in a θ step) are summed
over ranks with each rank's share of the batch as its weight — the gradient of the global
batch's mean loss (the cost factor of the loss does not depend on the data) — so N
processes follow the single-process run on the same global batches, up to float summation
order, in networks without batch norm. Batch norm normalises each rank's slice with its own
statistics (no SyncBN on CPU); the running statistics are averaged over ranks at the end of
every epoch, so validation and checkpoints see one set.

All ranks draw the same architecture sample at every step — the Gumbel noise of the soft
mixture and, in single-path mode, the one path — from a stream seeded alike on every rank
and advanced alike (no communication; its state is checkpointed). Sharing the path is what
makes explicit gradient reduction simple: the candidates off the path have no gradient on
any rank, so every rank reduces the same list of tensors and unused parameters never stall
a collective (``DistributedDataParallel(find_unused_parameters=True)`` is not needed), and
the θ gradient of a step estimates one sampled architecture, as in a single process. Drawing
a path per rank would explore N paths per step, but then the ranks' weight gradients
cover different candidates and their average no longer matches any single-process run.

Only rank 0 writes files (``search_config.json``, ``metrics.jsonl``, ``theta.json``,
``last.pt``, the arch files); ``last.pt`` holds every rank's RNG state, so a search resumes
on the same number of processes to the same θ.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, default_collate

from fbnas.arch.errors import ArchDefError
from fbnas.errors import ConfigError, reject_unknown_keys
from fbnas.io import atomic_write_text
from fbnas.search.dnas.derive import most_probable_within
from fbnas.search.dnas.loss import CostLoss, LossForm
from fbnas.search.dnas.supernet import CostKind, LayerCosts, Mode, Supernet, layer_costs
from fbnas.search.space import SearchSpace, get_space
from fbnas.train.checkpoint import (
    atomic_save,
    capture_rng_state,
    read_checkpoint,
    restore_rng_state,
)
from fbnas.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    average_batchnorm_statistics,
    barrier,
    broadcast_state,
    reduce_gradients,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DNASConfig:
    """Search settings (defaults from the FBNetV1 paper and its public implementations)."""

    epochs: int = 90
    warmup_epochs: int = 10
    mode: Mode = "soft"
    batch_size: int = 64
    w_share: float = 0.8
    w_lr: float = 0.1
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    theta_lr: float = 0.01
    theta_weight_decay: float = 5e-4
    tau0: float = 5.0
    tau_decay: float = 0.956
    tau_final: float | None = None
    alternate: Literal["epoch", "step"] = "epoch"
    loss_form: LossForm = "mul"
    alpha: float = 0.2
    beta: float = 0.6
    target: float | None = None
    target_weight: float = 1.0
    target_band: float | None = 0.05
    """With a target: derive the argmax when its cost is within ±band of the target, else
    the most probable architecture within the band (None: always the plain argmax)."""
    cost: CostKind = "latency"
    num_samples: int = 5
    resolution: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got "
                             f"{self.epochs} and {self.warmup_epochs}")
        if not 0 < self.w_share < 1:
            raise ConfigError(f"w_share must be in (0, 1), got {self.w_share}")
        if self.tau0 <= 0 or self.tau_decay <= 0 or (self.tau_final is not None
                                                     and self.tau_final <= 0):
            raise ConfigError("temperatures and the decay must be > 0")
        if self.target_band is not None and not 0 < self.target_band < 1:
            raise ConfigError(f"target_band must be in (0, 1) or None, got {self.target_band}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "DNAS settings") -> DNASConfig:
        """Builds the settings from plain data (a run's search_config.json).

        Raises:
            ValueError: an unknown key (named, with the closest settings), or a bad value.
        """
        reject_unknown_keys(data, cls, source)
        return cls(**data)

    def tau_at(self, search_epoch: int) -> float:
        """τ for the ``search_epoch``-th search epoch (0 = the first after warm-up)."""
        decay = self.tau_decay
        if self.tau_final is not None:
            steps = max(1, self.epochs - self.warmup_epochs - 1)
            decay = (self.tau_final / self.tau0) ** (1 / steps)
        return self.tau0 * decay ** max(0, search_epoch)


@dataclass
class SearchResult:
    """What a search produced (also written under the run folder)."""

    out_dir: Path
    choices: list[int]
    choice_names: list[str]
    cost: float
    cost_unit: str
    samples: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    supernet: Supernet | None = field(default=None, repr=False)
    """The trained supernet (e.g. for :func:`fbnas.search.dnas.subnet_state_dict`)."""


SEARCH_CONFIG = "search_config.json"
_RUN_KEYS = ("space", "space_def", "data", "num_classes", "world_size")
"""Keys of ``search_config.json`` beside the :class:`DNASConfig` fields."""


def read_search_config(path: str | os.PathLike) -> tuple[dict[str, Any], DNASConfig]:
    """Reads a run's ``search_config.json``: (space, space_def, data, num_classes,
    world_size), config.

    Raises:
        ValueError: an unknown key (naming it), or a bad value.
    """
    saved = json.loads(Path(path).read_text())
    run = {k: saved.pop(k) for k in _RUN_KEYS if k in saved}
    return run, DNASConfig.from_dict(saved, str(path))


def searched_space(run: dict[str, Any], source: str) -> SearchSpace:
    """The space a run searched (``run`` from :func:`read_search_config`): its stored
    definition, so a run whose space file changed or moved still loads; runs written
    before definitions were stored name a registered space."""
    if "space_def" in run:
        return SearchSpace.from_dict(run["space_def"], f"{source} space_def")
    return get_space(run["space"])


def _check_same_space(out: Path, space: SearchSpace) -> None:
    """A resumed search must search the space it started with."""
    path = out / SEARCH_CONFIG
    if not path.is_file():
        return
    run, _ = read_search_config(path)
    if searched_space(run, str(path)) != space:
        raise ArchDefError(f"{out} is a search of another space definition "
                           f"({run['space']!r}, kept in {path}); resume it with that space")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round(n * share))
    return order[:cut], order[cut:]


class ArchSampler:
    """Draws each step's architecture sample from a stream that every rank holds a copy of.

    The stream is a CPU generator state seeded from the search seed. Ranks that start from
    the same state and draw the same samples stay in step, so they use the same Gumbel
    mixture (soft mode) or the same path (single-path mode) and never need to exchange it.
    ``Supernet.sample_weights`` draws from torch's global RNG, so the stream is swapped in
    around the call with ``fork_rng``. The global RNG is left as it was.
    """

    def __init__(self, seed: int) -> None:
        self.state = torch.Generator().manual_seed(seed).get_state()

    def sample(self, net: Supernet, tau: float, mode: Mode
               ) -> tuple[torch.Tensor, list[int] | None]:
        """(layers, K) mixture weights and, in single-path mode, the sampled indices."""
        if net.theta.device.type != "cpu":
            raise NotImplementedError("the shared architecture stream draws on the CPU; a "
                                      "supernet on another device would draw from its RNG")
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            weights, indices = net.sample_weights(tau, mode)
            self.state = torch.get_rng_state()
        return weights, indices


@dataclass
class _Search:
    """What one search process trains and checkpoints (the same on every rank)."""

    config: DNASConfig
    space: SearchSpace
    costs: LayerCosts
    data: Any
    net: Supernet
    criterion: CostLoss
    w_opt: torch.optim.Optimizer
    w_sched: torch.optim.lr_scheduler.LRScheduler
    theta_opt: torch.optim.Optimizer
    sampler: ArchSampler
    w_idx: list[int]
    theta_idx: list[int]
    context: DistContext


def run_search(
    space_name: str | SearchSpace,
    data_spec: str,
    config: DNASConfig,
    out_dir: str | os.PathLike,
    table=None,
    resume: bool = False,
    progress: Callable[[str, int, int, dict], None] | None = None,
    context: DistContext | None = None,
) -> SearchResult:
    """Runs a DNAS search and writes the run folder (metrics, θ, checkpoints, arch files).

    Args:
        space_name: a registered search space.
        data_spec: a dataset spec (``digits``, ``cifar10:PATH?classes=10&per_class=500``...).
        config: search settings; ``batch_size`` is the global batch over all processes.
        out_dir: the run folder (on a file system every process sees, for ``resume``).
        table: a :class:`fbnas.cost.lut.LatencyTable` when ``config.cost == "latency"``.
        resume: continue from ``out_dir/last.pt``.
        progress: called as ``(phase, step, total, info)`` during passes.
        context: the process group (:func:`fbnas.train.distributed.init_distributed`);
            default a single process. Every rank returns the same result; rank 0 writes.

    Raises:
        ArchDefError / MissingEntriesError / ValueError: before any training, for an empty
            space, unknown candidate ops, a table lacking candidates, a target below the
            cheapest network of the space, or a batch smaller than the number of processes.
    """
    context = context or DistContext()
    search = _prepare(space_name, data_spec, config, table, context)
    out = Path(out_dir)
    history: list[dict] = []
    start_epoch = 0
    if resume and (out / "last.pt").exists():
        _check_same_space(out, search.space)
        start_epoch, history = _restore(search, read_checkpoint(out / "last.pt"))
    broadcast_state(search.net, context)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / SEARCH_CONFIG, json.dumps(
            {"space": search.space.name, "space_def": search.space.to_dict(),
             "data": data_spec,
             "num_classes": search.data.num_classes, "world_size": context.world_size,
             **asdict(config)}, indent=1, default=str))
        # From the checkpoint's history: a line written after the last checkpoint of a
        # killed run is dropped, not repeated.
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n"
                                                         for r in history))
    for epoch in range(start_epoch, config.epochs):
        search_epoch = epoch - config.warmup_epochs
        tau = config.tau0 if search_epoch < 0 else config.tau_at(search_epoch)
        stats = _train_epoch(search, epoch, tau, progress)
        record = _epoch_record(search, epoch, tau, stats)
        history.append(record)
        _save_epoch(search, out, epoch, history)
    result = _derive(search, out, history, table)
    barrier(context)  # the arch files exist when any rank returns
    return result


def _prepare(space_name: str | SearchSpace, data_spec: str, config: DNASConfig, table,
             context: DistContext) -> _Search:
    """Checks the inputs and builds the supernet, its optimisers and the data splits."""
    from fbnas.data import open_datasets

    space = get_space(space_name)
    resolution = config.resolution or space.input_size
    data = open_datasets(data_spec, resolution)  # opens files only; its class count prices
    costs = layer_costs(space, config.cost, table, resolution,  # the classifier head
                        num_classes=data.num_classes)
    if config.target is not None and config.target < costs.cheapest:
        raise ArchDefError(f"target {config.target:g} {costs.unit} is below the cheapest "
                           f"network of {space.name} ({costs.cheapest:.4g} {costs.unit})")
    w_idx, theta_idx = _split(len(data.train), config.w_share, config.seed)
    for name, split in (("weight", w_idx), ("theta", theta_idx)):
        if min(config.batch_size, len(split)) < context.world_size:
            raise ConfigError(f"the {name} split's batches ({min(config.batch_size, len(split))}"
                             f" images) cannot give each of {context.world_size} processes "
                             f"an image; use a larger batch or dataset")
    _seed_everything(config.seed)  # the same initial weights on every rank
    net = Supernet(space, costs, num_classes=data.num_classes, resolution=resolution)
    criterion = CostLoss(costs.cheapest, config.loss_form, config.alpha, config.beta,
                         config.target, config.target_weight)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=config.w_lr,
                            momentum=config.w_momentum, weight_decay=config.w_weight_decay)
    w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs)
    theta_opt = torch.optim.Adam(net.arch_parameters(), lr=config.theta_lr,
                                 weight_decay=config.theta_weight_decay)
    return _Search(config, space, costs, data, net, criterion, w_opt, w_sched, theta_opt,
                   ArchSampler(config.seed + 1), w_idx, theta_idx, context)


def _restore(search: _Search, state: dict) -> tuple[int, list[dict]]:
    """Loads a ``last.pt``; returns (the epoch to continue with, the history so far)."""
    search.net.load_state_dict(state["supernet"])
    search.w_opt.load_state_dict(state["w_opt"])
    search.w_sched.load_state_dict(state["w_sched"])
    search.theta_opt.load_state_dict(state["theta_opt"])
    if "arch_rng" in state:
        search.sampler.state = state["arch_rng"]
    else:
        logger.warning("the checkpoint has no architecture sampling stream (an older fbnas): "
                       "sampling restarts from the seed")
    rng = state["rng"]
    rng = [rng] if isinstance(rng, dict) else list(rng)  # a dict: saved by one process
    context = search.context
    if len(rng) == context.world_size:
        restore_rng_state(rng[context.rank])
    else:
        # Only the architecture stream and the data order matter to the search, and both
        # are independent of the process count; the per-rank streams restart.
        logger.warning("the checkpoint holds RNG states of %d processes, this run has %d",
                       len(rng), context.world_size)
        torch.manual_seed(search.config.seed + 7919 * (int(state["epoch"]) + 1)
                          + context.rank)
    return int(state["epoch"]) + 1, [dict(r) for r in state["history"]]


def _rank_batches(dataset, indices: list[int], batch_size: int, seed: int,
                  context: DistContext) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
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


def _train_epoch(search: _Search, epoch: int, tau: float,
                 progress: Callable[[str, int, int, dict], None] | None) -> torch.Tensor:
    """One epoch's weight pass (and θ pass after warm-up).

    Returns:
        (6,) float64 sums over all ranks: weight-pass loss, correct, seen, then the same
        for the θ pass.
    """
    config, context = search.config, search.context
    search_epoch = epoch - config.warmup_epochs
    seed = config.seed * 1000 + epoch * 10
    w_batches = _rank_batches(search.data.train, search.w_idx, config.batch_size, seed,
                              context)
    t_batches = _rank_batches(search.data.train, search.theta_idx, config.batch_size,
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
    stats = torch.zeros(6, dtype=torch.float64)
    for done, (kind, (x, y, share)) in enumerate(plan, 1):
        _step(search, kind, x, y, share, tau, stats)
        if progress:
            progress("warm-up" if search_epoch < 0 else "search", done, len(plan),
                     {"epoch": epoch + 1, "epochs": config.epochs, "tau": tau})
    search.w_sched.step()
    average_batchnorm_statistics(search.net, context)
    return all_reduce_sum(stats, context)


def _step(search: _Search, kind: str, x: torch.Tensor, y: torch.Tensor, share: float,
          tau: float, stats: torch.Tensor) -> None:
    """One weight step (θ frozen) or one θ step (no weight gradients are computed)."""
    net = search.net
    net.train()
    weights, indices = search.sampler.sample(net, tau, search.config.mode)
    logits, cost = net(x, weights=weights, indices=indices)
    loss = search.criterion(F.cross_entropy(logits, y), cost)
    optimizer = search.w_opt if kind == "w" else search.theta_opt
    optimizer.zero_grad(set_to_none=True)
    params = net.weight_parameters() if kind == "w" else net.arch_parameters()
    loss.backward(inputs=params)
    reduce_gradients(params, share, search.context)
    optimizer.step()
    row = 0 if kind == "w" else 3
    stats[row] += float(loss.detach()) * len(y)
    stats[row + 1] += int((logits.argmax(1) == y).sum())
    stats[row + 2] += len(y)


@torch.no_grad()
@contextlib.contextmanager
def _batch_statistics(net: nn.Module):
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


@torch.no_grad()
def _epoch_record(search: _Search, epoch: int, tau: float, stats: torch.Tensor) -> dict:
    """The metrics line of an epoch; validation of the argmax path, sharded over ranks."""
    net, config, context = search.net, search.config, search.context
    choices = net.derive()
    weights = torch.zeros_like(net.theta)
    weights[torch.arange(len(choices)), torch.tensor(choices)] = 1.0
    val = search.data.val
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
    shard = Subset(val, range(context.rank, len(val), context.world_size))
    with torch.no_grad(), _batch_statistics(net):
        for x, y in DataLoader(shard, batch_size=256):
            logits, _ = net(x, weights=weights, indices=choices)
            totals[0] += float(F.cross_entropy(logits, y, reduction="sum"))
            totals[1] += int((logits.argmax(1) == y).sum())
            totals[2] += len(y)
    val_loss, correct, seen = all_reduce_sum(totals, context).tolist()
    w_loss, w_correct, w_seen, t_loss, t_correct, t_seen = stats.tolist()
    p = net.probabilities().detach()
    expected = net.costs.fixed + sum(
        float((p[i, : len(layer.costs)] * layer.costs).sum())
        for i, layer in enumerate(net.layers))
    return {
        "epoch": epoch + 1, "phase": "warm-up" if epoch < config.warmup_epochs else "search",
        "tau": tau, "lr": search.w_opt.param_groups[0]["lr"],
        "train_loss": w_loss / max(1, w_seen), "train_top1": w_correct / max(1, w_seen),
        "theta_loss": t_loss / t_seen if t_seen else None,
        "val_loss": val_loss / max(1, seen), "val_top1": correct / max(1, seen),
        "entropy": float(net.entropy()), "expected_cost": expected,
        "argmax_cost": net.costs.network_cost(choices), "cost_unit": search.costs.unit,
        "argmax": choices, "probabilities": p.tolist(),
    }


def _save_epoch(search: _Search, out: Path, epoch: int, history: list[dict]) -> None:
    """Rank 0 writes ``last.pt`` (with every rank's RNG state), then θ and the metrics line.

    The checkpoint goes first: a metrics line then always has its checkpoint, and resuming
    rewrites ``metrics.jsonl`` from the checkpoint's history.
    """
    net = search.net
    rng = all_gather_objects(capture_rng_state(), search.context)
    if not search.context.is_main:
        return
    atomic_save({
        "supernet": net.state_dict(), "w_opt": search.w_opt.state_dict(),
        "w_sched": search.w_sched.state_dict(), "theta_opt": search.theta_opt.state_dict(),
        "arch_rng": search.sampler.state, "rng": rng,
        "world_size": search.context.world_size, "epoch": epoch, "history": history,
    }, out / "last.pt")
    atomic_write_text(out / "theta.json", json.dumps(
        {"epoch": epoch, "theta": net.theta.detach().tolist(),
         "probabilities": net.probabilities().detach().tolist(),
         "candidates": [[c.name for c in layer.candidates] for layer in search.space.layers]},
        indent=1))
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(history[-1]) + "\n")


def _derive_choices(net: Supernet, costs: LayerCosts, config: DNASConfig
                    ) -> tuple[list[int], str]:
    """The argmax of θ, or with a target it misses, the most probable architecture within
    ``config.target_band`` of the target (see :mod:`fbnas.search.dnas.derive`)."""
    choices = net.derive()
    if config.target is None or config.target_band is None:
        return choices, "argmax"
    low = config.target * (1 - config.target_band)
    high = config.target * (1 + config.target_band)
    if low <= costs.network_cost(choices) <= high:
        return choices, "argmax"
    log_probs = torch.log(net.probabilities().detach().clamp_min(1e-30))
    log_probs = log_probs.masked_fill(net.theta_mask, -math.inf).tolist()
    within = most_probable_within(log_probs, costs, low, high)
    if within is None:
        logger.warning("no architecture of the space costs %.4g-%.4g %s; deriving the argmax",
                       low, high, costs.unit)
        return choices, "argmax"
    return within, f"most probable within ±{config.target_band:.0%} of the target"


def _derive(search: _Search, out: Path, history: list[dict], table) -> SearchResult:
    """The argmax and sampled architectures; rank 0 writes them as arch files."""
    net, space, costs, config = search.net, search.space, search.costs, search.config
    choices, method = _derive_choices(net, costs, config)
    gen = torch.Generator().manual_seed(config.seed)
    sampled = net.sample_architectures(config.num_samples, gen)
    records = []
    if search.context.is_main:
        (out / "samples").mkdir(exist_ok=True)
    for k, arch_choices in enumerate([choices] + sampled):
        arch = space.arch_def(arch_choices)
        analytic = net.analytic_cost(arch_choices)
        record = {"arch_def": arch, "space": space.name,
                  "choices": space.choice_names(arch_choices),
                  "predicted_cost": costs.network_cost(arch_choices), "cost_unit": costs.unit,
                  "num_classes": net.num_classes, "resolution": net.resolution,
                  "params": analytic.params, "macs": analytic.macs,
                  "derived": method if k == 0 else "sampled"}
        if k == 0 and method != "argmax":
            record["argmax_choices"] = space.choice_names(net.derive())
            record["argmax_cost"] = costs.network_cost(net.derive())
        if table is not None:
            record["predicted_ms"] = table.predict(
                arch, net.resolution, search.data.num_classes).predicted_ms
        if search.context.is_main:
            path = out / "arch.json" if k == 0 else out / "samples" / f"arch_{k - 1:02d}.json"
            path.write_text(json.dumps(record, indent=1))
        records.append(record)
    return SearchResult(out, choices, space.choice_names(choices),
                        costs.network_cost(choices), costs.unit, records[1:], history, net)
