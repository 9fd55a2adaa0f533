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
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from fbnas.arch.errors import ArchDefError
from fbnas.cost.lut import atomic_write_text
from fbnas.search.dnas.loss import CostLoss, LossForm
from fbnas.search.dnas.supernet import CostKind, Mode, Supernet, layer_costs
from fbnas.search.space import SearchSpace, get_space
from fbnas.train.checkpoint import atomic_save, capture_rng_state, restore_rng_state

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
    cost: CostKind = "latency"
    num_samples: int = 5
    resolution: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got "
                             f"{self.epochs} and {self.warmup_epochs}")
        if not 0 < self.w_share < 1:
            raise ValueError(f"w_share must be in (0, 1), got {self.w_share}")
        if self.tau0 <= 0 or self.tau_decay <= 0 or (self.tau_final is not None
                                                     and self.tau_final <= 0):
            raise ValueError("temperatures and the decay must be > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DNASConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DNAS setting(s) {unknown}; known: {sorted(known)}")
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round(n * share))
    return order[:cut], order[cut:]


def run_search(
    space_name: str | SearchSpace,
    data_spec: str,
    config: DNASConfig,
    out_dir: str | os.PathLike,
    table=None,
    resume: bool = False,
    progress: Callable[[str, int, int, dict], None] | None = None,
) -> SearchResult:
    """Runs a DNAS search and writes the run folder (metrics, θ, checkpoints, arch files).

    Args:
        space_name: a registered search space.
        data_spec: a dataset spec (``digits``, ``cifar10:PATH?classes=10&per_class=500``...).
        config: search settings.
        out_dir: the run folder.
        table: a :class:`fbnas.cost.lut.LatencyTable` when ``config.cost == "latency"``.
        resume: continue from ``out_dir/last.pt``.
        progress: called as ``(phase, step, total, info)`` during passes.

    Raises:
        ArchDefError / MissingEntriesError / ValueError: before any training, for an empty
            space, unknown candidate ops, a table lacking candidates, or a target below the
            cheapest network of the space.
    """
    from fbnas.data import open_datasets

    out = Path(out_dir)
    space = get_space(space_name)
    resolution = config.resolution or space.input_size
    costs = layer_costs(space, config.cost, table, resolution)
    if config.target is not None and config.target < costs.cheapest:
        raise ArchDefError(f"target {config.target:g} {costs.unit} is below the cheapest "
                           f"network of {space.name} ({costs.cheapest:.4g} {costs.unit})")
    data = open_datasets(data_spec, resolution)
    out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    net = Supernet(space, costs, num_classes=data.num_classes, resolution=resolution)
    criterion = CostLoss(costs.cheapest, config.loss_form, config.alpha, config.beta,
                         config.target, config.target_weight)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=config.w_lr,
                            momentum=config.w_momentum, weight_decay=config.w_weight_decay)
    w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs)
    theta_opt = torch.optim.Adam(net.arch_parameters(), lr=config.theta_lr,
                                 weight_decay=config.theta_weight_decay)
    w_idx, theta_idx = _split(len(data.train), config.w_share, config.seed)
    history: list[dict] = []
    start_epoch = 0
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["supernet"])
        w_opt.load_state_dict(state["w_opt"])
        w_sched.load_state_dict(state["w_sched"])
        theta_opt.load_state_dict(state["theta_opt"])
        restore_rng_state(state["rng"])
        start_epoch = state["epoch"] + 1
        history = state["history"]
    (out / "search_config.json").write_text(json.dumps(
        {"space": space.name, "data": data_spec, **asdict(config)}, indent=1, default=str))

    def loader(indices: list[int], epoch: int, salt: int) -> DataLoader:
        gen = torch.Generator().manual_seed(config.seed * 1000 + epoch * 10 + salt)
        return DataLoader(Subset(data.train, indices), batch_size=config.batch_size,
                          shuffle=True, generator=gen, drop_last=len(indices) >
                          config.batch_size)

    for epoch in range(start_epoch, config.epochs):
        search_epoch = epoch - config.warmup_epochs
        tau = config.tau0 if search_epoch < 0 else config.tau_at(search_epoch)
        stats = {"w_loss": 0.0, "w_correct": 0, "w_seen": 0, "t_loss": 0.0, "t_correct": 0,
                 "t_seen": 0}

        w_batches = list(loader(w_idx, epoch, 0))
        t_batches = list(loader(theta_idx, epoch, 1)) if search_epoch >= 0 else []
        total = len(w_batches) + len(t_batches)
        if config.alternate == "step" and t_batches:
            plan = []
            for i in range(max(len(w_batches), len(t_batches))):
                if i < len(w_batches):
                    plan.append(("w", w_batches[i]))
                if i < len(t_batches):
                    plan.append(("theta", t_batches[i]))
        else:
            plan = [("w", b) for b in w_batches] + [("theta", b) for b in t_batches]
        for done, (kind, (x, y)) in enumerate(plan, 1):
            _step(net, criterion, w_opt if kind == "w" else theta_opt, kind, x, y, tau,
                  config.mode, stats)
            if progress:
                progress("warm-up" if search_epoch < 0 else "search", done, total,
                         {"epoch": epoch + 1, "epochs": config.epochs, "tau": tau})
        w_sched.step()
        record = _epoch_record(net, data, config, epoch, tau, stats, w_opt, costs.unit)
        history.append(record)
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        atomic_write_text(out / "theta.json", json.dumps(
            {"epoch": epoch, "theta": net.theta.detach().tolist(),
             "probabilities": net.probabilities().detach().tolist(),
             "candidates": [[c.name for c in layer.candidates] for layer in space.layers]},
            indent=1))
        atomic_save({
            "supernet": net.state_dict(), "w_opt": w_opt.state_dict(),
            "w_sched": w_sched.state_dict(), "theta_opt": theta_opt.state_dict(),
            "rng": capture_rng_state(), "epoch": epoch, "history": history,
        }, ckpt_path)
    return _derive(net, space, costs, config, out, history, table)


def _step(net: Supernet, criterion: CostLoss, optimizer: torch.optim.Optimizer, kind: str,
          x: torch.Tensor, y: torch.Tensor, tau: float, mode: Mode, stats: dict) -> None:
    """One weight step (θ frozen) or one θ step (no weight gradients are computed)."""
    net.train()
    logits, cost = net(x, tau=tau, mode=mode)
    loss = criterion(F.cross_entropy(logits, y), cost)
    optimizer.zero_grad(set_to_none=True)
    params = net.weight_parameters() if kind == "w" else net.arch_parameters()
    loss.backward(inputs=params)
    optimizer.step()
    prefix = "w" if kind == "w" else "t"
    stats[f"{prefix}_loss"] += float(loss.detach()) * len(y)
    stats[f"{prefix}_correct"] += int((logits.argmax(1) == y).sum())
    stats[f"{prefix}_seen"] += len(y)


@torch.no_grad()
def _epoch_record(net: Supernet, data, config: DNASConfig, epoch: int, tau: float,
                  stats: dict, w_opt, unit: str) -> dict:
    net.eval()
    choices = net.derive()
    weights = torch.zeros_like(net.theta)
    weights[torch.arange(len(choices)), torch.tensor(choices)] = 1.0
    correct = seen = 0
    val_loss = 0.0
    for x, y in DataLoader(data.val, batch_size=256):
        logits, _ = net(x, weights=weights, indices=choices)
        val_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    p = net.probabilities()
    expected = net.costs.fixed + sum(
        float((p[i, : len(layer.costs)] * layer.costs).sum())
        for i, layer in enumerate(net.layers))
    return {
        "epoch": epoch + 1, "phase": "warm-up" if epoch < config.warmup_epochs else "search",
        "tau": tau, "lr": w_opt.param_groups[0]["lr"],
        "train_loss": stats["w_loss"] / max(1, stats["w_seen"]),
        "train_top1": stats["w_correct"] / max(1, stats["w_seen"]),
        "theta_loss": stats["t_loss"] / stats["t_seen"] if stats["t_seen"] else None,
        "val_loss": val_loss / max(1, seen), "val_top1": correct / max(1, seen),
        "entropy": float(net.entropy()), "expected_cost": expected,
        "argmax_cost": net.costs.network_cost(choices), "cost_unit": unit,
        "argmax": choices, "probabilities": p.tolist(),
    }


def _derive(net: Supernet, space, costs, config: DNASConfig, out: Path, history: list[dict],
            table) -> SearchResult:
    choices = net.derive()
    gen = torch.Generator().manual_seed(config.seed)
    sampled = net.sample_architectures(config.num_samples, gen)
    records = []
    (out / "samples").mkdir(exist_ok=True)
    for k, arch_choices in enumerate([choices] + sampled):
        arch = space.arch_def(arch_choices)
        analytic = net.analytic_cost(arch_choices)
        record = {"arch_def": arch, "space": space.name,
                  "choices": space.choice_names(arch_choices),
                  "predicted_cost": costs.network_cost(arch_choices), "cost_unit": costs.unit,
                  "params": analytic.params, "macs": analytic.macs,
                  "derived": "argmax" if k == 0 else "sampled"}
        if table is not None:
            record["predicted_ms"] = table.predict(arch).predicted_ms
        path = out / "arch.json" if k == 0 else out / "samples" / f"arch_{k - 1:02d}.json"
        path.write_text(json.dumps(record, indent=1))
        records.append(record)
    return SearchResult(out, choices, space.choice_names(choices),
                        costs.network_cost(choices), costs.unit, records[1:], history)

