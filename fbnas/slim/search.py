"""Width search: the most accurate width vector of a trained slim network under a budget.

A sandwich-trained network (:mod:`fbnas.slim.train`) holds every width vector's weights at
once, so a candidate is evaluated by setting its widths, recalibrating batch norm there
(ALGORITHMS.md section 4.4) and measuring validation accuracy: no training per candidate.
The search is fbnas's one genetic search (:func:`fbnas.search.evolution.evolve`: a
population, the best as parents, children by mutation and crossover, the best kept) over
the :class:`~fbnas.slim.space.WidthSpace` of width vectors ``wm`` in
``[min_wm, 1]^search_dim``, under a hard constraint ``cost(wm) <= target``: MACs computed
analytically (:func:`fbnas.slim.subnet_cost`) or latency predicted from the per-block
width grids (:mod:`fbnas.slim.latency`).

It talks to two small interfaces, so either side can be swapped: a :class:`Constraint`
(``cost(wm)``) and an accuracy function (``wm -> top-1 %``). Candidates are drawn with a
per-candidate ceiling ``u ~ U[min_wm, 1]`` then ``wm_d ~ U[min_wm, u]`` (the width space's
rule, which spreads the initial population over network sizes), and the smallest network
opens generation 0. Every random draw has a cap; when no candidate meets the target the
search fails saying how far the cheapest trained network is from it.

Example::

    model, _ = load_slim_checkpoint("run/best.pt")
    evaluator = WidthEvaluator(model, data, bn_batches=5)
    result = evolve_widths(model, MacsConstraint(model, 32, 2e6), evaluator,
                           WidthSearchConfig(population=16, generations=8))
    result.best.wm, result.best.top1, result.best.cost
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fbnas.data.datasets import ImageDatasets
from fbnas.errors import reject_unknown_keys
from fbnas.search.evolution import (
    Evaluated,
    EvolutionConfig,
    InfeasibleConstraintError,
    check_evolution_settings,
    evolve,
)
from fbnas.search.protocols import Constraint
from fbnas.slim.cost import subnet_cost
from fbnas.slim.dyn_model import DynModel
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.extract import extract_arch_spec, extract_subnet
from fbnas.slim.latency import WidthLatencyModel
from fbnas.slim.models import SlimFBNet
from fbnas.slim.space import WidthSpace
from fbnas.slim.train import calibration_loader, recalibrate_bn
from fbnas.train.trainer import evaluate


class InfeasibleTargetError(SlimConfigError, InfeasibleConstraintError):
    """No width vector the search may try meets the cost target."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class WidthSearchConfig:
    """Evolutionary width search settings.

    Attributes:
        population: candidates kept per generation.
        generations: rounds of selection after the initial population.
        parents: the best ``parents`` of a generation breed the next.
        mutation_prob: per dimension, the chance a mutated child redraws its multiplier.
        crossover: share of children made by uniform crossover of two parents (the
            rest by mutation of one).
        min_wm: the smallest multiplier tried (the sandwich training's ``min_wm``:
            narrower networks were never trained).
        max_draws: cap on random draws per generation to find feasible candidates.
        seed: seeds the search's random draws.
    """

    population: int = 16
    generations: int = 8
    parents: int = 4
    mutation_prob: float = 0.2
    crossover: float = 0.5
    min_wm: float = 0.35
    max_draws: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        check_evolution_settings(self, "width search", SlimConfigError)
        if not 0.0 < self.min_wm <= 1.0:
            raise SlimConfigError(f"width search: min_wm must be in (0, 1], got "
                                  f"{self.min_wm!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "width search"
                  ) -> WidthSearchConfig:
        """Builds settings from plain data; an unknown key is refused with close matches."""
        reject_unknown_keys(data, cls, source, SlimConfigError)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def evolution(self) -> EvolutionConfig:
        """The genetic settings of :func:`fbnas.search.evolution.evolve` (the others at
        their defaults: a crossover child mutated at half ``mutation_prob``, the parents
        competing with their children, ``population`` random initial candidates)."""
        return EvolutionConfig(population=self.population, generations=self.generations,
                               parents=self.parents, mutation_prob=self.mutation_prob,
                               crossover=self.crossover, max_draws=self.max_draws,
                               seed=self.seed)


# --------------------------------------------------------------------------- interfaces
# ``Constraint`` (``target``, ``unit``, ``cost(wm)``) is the search protocol's
# (:class:`fbnas.search.protocols.Constraint`); the two below are the width search's.


@dataclass
class MacsConstraint:
    """MACs of a width vector at ``resolution``, computed analytically (no subnet built)."""

    model: DynModel
    resolution: int
    target: float
    unit: str = "MACs"

    def cost(self, wm: Sequence[float]) -> float:
        real_ch = self.model.decode_ch(self.model.decode_wm(wm))
        return float(subnet_cost(self.model, real_ch, self.resolution).macs)


@dataclass
class LatencyConstraint:
    """Latency (ms) of a width vector, predicted by a :class:`WidthLatencyModel`."""

    model: DynModel
    predictor: WidthLatencyModel
    target: float
    unit: str = "ms"

    def __post_init__(self) -> None:
        if self.predictor.search_dim != self.model.search_dim:
            raise SlimConfigError(f"the latency model was measured on a network with "
                                  f"search_dim {self.predictor.search_dim} "
                                  f"({self.predictor.model}), this one has "
                                  f"{self.model.search_dim}")

    def cost(self, wm: Sequence[float]) -> float:
        return self.predictor.predict_wm(self.model, wm)


AccuracyFn = Callable[[Sequence[float]], float]


class WidthEvaluator:
    """Top-1 (%) of a width vector with the shared weights, BN recalibrated at its widths.

    Every candidate is recalibrated on the same training batches and scored on the same
    validation images, so candidates differ only by their widths.

    Args:
        model: the trained slim network.
        data: its datasets.
        bn_batches: training batches for BN recalibration.
        batch_size: images per batch.
        val_batches: validation batches to score on (None: the whole validation set).
        device: where to run (default: the model's device).
        seed: which calibration batches.
    """

    def __init__(self, model: DynModel, data: ImageDatasets, bn_batches: int = 5,
                 batch_size: int = 128, val_batches: int | None = None,
                 device: torch.device | str | None = None, seed: int = 0) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(
            model.parameters()).device
        self.model.to(self.device)
        self.bn_batches = bn_batches
        self.seed = seed
        self.calibration = calibration_loader(data.train, batch_size, seed)
        val = data.val
        if val_batches is not None:
            val = torch.utils.data.Subset(val, range(min(len(val), val_batches * batch_size)))
        self.val_loader = DataLoader(val, batch_size=batch_size, shuffle=False)
        self.evaluations = 0

    def prepare(self, wm: Sequence[float]) -> list[Any]:
        """Sets the model to ``wm`` with its BN statistics recalibrated; returns ``real_ch``."""
        real_ch = self.model.decode_ch(self.model.decode_wm(wm))
        recalibrate_bn(self.model, real_ch, self.calibration, self.bn_batches, self.device,
                       seed=self.seed)
        return real_ch

    def __call__(self, wm: Sequence[float]) -> float:
        self.prepare(wm)
        self.evaluations += 1
        return evaluate(self.model, self.val_loader, self.device).top1


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class EvaluatedWidths:
    """One evaluated width vector: its multipliers, channels, cost and accuracy."""

    wm: tuple[float, ...]
    ch: tuple[int, ...]
    cost: float
    top1: float
    generation: int

    @classmethod
    def of(cls, evaluated: Evaluated[tuple[float, ...]]) -> EvaluatedWidths:
        """The width search's record of a :class:`WidthSpace` evaluation (key = channels)."""
        return cls(tuple(evaluated.sample), tuple(evaluated.key), evaluated.cost,
                   evaluated.score, evaluated.generation)

    def to_dict(self) -> dict[str, Any]:
        return {"wm": list(self.wm), "ch": list(self.ch), "cost": self.cost,
                "top1": self.top1, "generation": self.generation}


@dataclass
class WidthSearchResult:
    """The best feasible candidate and everything evaluated (in order)."""

    best: EvaluatedWidths
    evaluated: list[EvaluatedWidths] = field(default_factory=list)
    target: float = 0.0
    unit: str = ""

    def pareto_front(self) -> list[EvaluatedWidths]:
        """Candidates no other beats on both accuracy and cost, by ascending cost."""
        front: list[EvaluatedWidths] = []
        for c in sorted(self.evaluated, key=lambda c: (c.cost, -c.top1)):
            if not front or c.top1 > front[-1].top1:
                front.append(c)
        return front


def evolve_widths(model: DynModel, constraint: Constraint, accuracy: AccuracyFn,
                  config: WidthSearchConfig | None = None,
                  progress: Callable[[int, EvaluatedWidths], None] | None = None
                  ) -> WidthSearchResult:
    """Searches ``wm`` maximising ``accuracy(wm)`` subject to ``constraint.cost(wm) <= target``.

    :func:`fbnas.search.evolution.evolve` over ``WidthSpace(model, config.min_wm)``,
    opened by the smallest network: width vectors that decode to the same channel counts
    are one candidate (evaluated once); the best ``parents`` of the population breed
    ``population`` children per generation (crossover then a light mutation, or a mutation
    alone), feasible ones only; the next population is the best of parents and children.

    Args:
        model: the slim network (for ``search_dim`` and decoding).
        constraint: the cost and its target.
        accuracy: ``wm -> top-1 %`` (a :class:`WidthEvaluator`).
        config: the settings.
        progress: called after each evaluation with the generation and the candidate.

    Raises:
        InfeasibleTargetError: even the smallest network (``min_wm`` everywhere) exceeds
            the target, or ``max_draws`` random draws found no feasible candidate.
    """
    config = config or WidthSearchConfig()
    space = WidthSpace(model, config.min_wm)
    floor = constraint.cost(space.smallest)
    if floor > constraint.target:
        raise InfeasibleTargetError(
            f"no width vector meets the target {constraint.target:g} {constraint.unit}: the "
            f"smallest network the search may try (wm = {config.min_wm:g} everywhere) costs "
            f"{floor:g} {constraint.unit}; raise the target or lower min_wm")

    def report(generation: int, evaluated: Evaluated[tuple[float, ...]]) -> None:
        if progress is not None:
            progress(generation, EvaluatedWidths.of(evaluated))

    try:
        result = evolve(space, accuracy, constraint, config.evolution(),
                        initial=[space.smallest], progress=report)
    except InfeasibleConstraintError as exc:  # the cheapest seen: the smallest network
        raise InfeasibleTargetError(str(exc)) from None
    return WidthSearchResult(EvaluatedWidths.of(result.best),
                             [EvaluatedWidths.of(e) for e in result.evaluated],
                             constraint.target, constraint.unit)


# --------------------------------------------------------------------------- outputs


def write_results(model: SlimFBNet, result: WidthSearchResult, out: str | os.PathLike,
                  resolution: int, prepare: Callable[[Sequence[float]], Any] | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Writes a search's outputs into ``out``; returns their paths by name.

    ``prepare(wm)`` (:meth:`WidthEvaluator.prepare`) is called with the best width vector
    first, so that the extracted subnet carries batch-norm statistics of its own widths
    (the network otherwise holds those of the last candidate evaluated).

    * ``arch.json``: the best width vector's extracted arch def (``{"arch_def": ...}`` with
      its widths, cost and accuracy beside it), accepted by every fbnas command;
    * ``subnet.pt``: the extracted subnet's weights (``fbnas eval``/``export``, or
      ``fbnas train arch.json --init-from subnet.pt`` to fine-tune);
    * ``candidates.jsonl``: every candidate evaluated;
    * ``pareto.png``: accuracy vs cost of all candidates, Pareto front and best marked.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best = result.best
    if prepare is not None:
        prepare(best.wm)
    real_ch = model.decode_ch(model.decode_wm(best.wm))
    spec = extract_arch_spec(model, real_ch)
    cost = subnet_cost(model, real_ch, resolution)
    record = {"arch_def": spec.to_arch_def(), "slim_model": model.name, "wm": list(best.wm),
              "ch": model.decode_wm(best.wm), "real_ch": real_ch, "top1": best.top1,
              "cost": best.cost, "cost_unit": result.unit, "target": result.target,
              "params": cost.params, "macs": cost.macs, "resolution": resolution,
              **(extra or {})}
    paths = {"arch": out / "arch.json", "subnet": out / "subnet.pt",
             "candidates": out / "candidates.jsonl", "pareto": out / "pareto.png"}
    paths["arch"].write_text(json.dumps(record, indent=1) + "\n")
    subnet = extract_subnet(model, real_ch)
    from fbnas.train.checkpoint import atomic_save

    atomic_save({"arch_def": spec.to_arch_def(), "num_classes": model.num_classes,
                 "resolution": resolution, "width_ratio": 1.0,
                 "model": {k: v.detach().cpu() for k, v in subnet.state_dict().items()}},
                paths["subnet"])
    paths["candidates"].write_text("".join(json.dumps(c.to_dict()) + "\n"
                                           for c in result.evaluated))
    plot_pareto(result, paths["pareto"])
    return paths


def plot_pareto(result: WidthSearchResult, path: str | os.PathLike) -> None:
    """Accuracy vs cost of every candidate (PNG): the Pareto front, the best, the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([c.cost for c in result.evaluated], [c.top1 for c in result.evaluated],
               s=12, c=[c.generation for c in result.evaluated], cmap="viridis",
               label="evaluated (colour: generation)")
    front = result.pareto_front()
    ax.plot([c.cost for c in front], [c.top1 for c in front], "-o", color="tab:red", ms=3,
            label="Pareto front")
    ax.scatter([result.best.cost], [result.best.top1], marker="*", s=160, color="gold",
               edgecolor="black", zorder=5, label="best under target")
    ax.axvline(result.target, color="gray", ls="--", lw=1, label="target")
    ax.set_xlabel(f"cost ({result.unit})")
    ax.set_ylabel("top-1 (%), shared weights, BN recalibrated")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = [
    "Constraint",
    "EvaluatedWidths",
    "InfeasibleTargetError",
    "LatencyConstraint",
    "MacsConstraint",
    "WidthEvaluator",
    "WidthSearchConfig",
    "WidthSearchResult",
    "evolve_widths",
    "plot_pareto",
    "write_results",
]
