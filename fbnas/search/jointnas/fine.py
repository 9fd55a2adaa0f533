"""Stage 2 of JointNAS, fine: an adaptive genetic search on the predictor (§3.5).

The engine's genetic search (:func:`fbnas.search.evolution.evolve`) runs on the joint
space with the fitted predictor as its score and the constraints as one cost (the largest
cost / budget ratio, feasible at <= 1): it starts from the best feasible candidates of
stage 1, mutates each dimension with a probability that grows after every generation
without improvement (``stall_mutation_boost``) and falls back after one that improves,
keeps an elite, and stops when the best prediction has not improved for ``patience``
generations. No candidate is trained: with new constraints, stage 2 is rerun on the saved
predictor in CPU seconds (``fbnas search jointnas --reuse RUN``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fbnas.errors import ConfigError, check_field_types, reject_unknown_keys
from fbnas.search.evolution import EvolutionConfig, EvolutionResult, evolve
from fbnas.search.jointnas.cost import Constraints, PopulationCost, SampleConstraint
from fbnas.search.jointnas.predictor import AccuracyPredictor
from fbnas.search.jointnas.space import JointSpace


@dataclass(frozen=True)
class FineConfig:
    """Stage 2 settings (§3.5 defaults: population 100, K = 10; UNVERIFIED).

    Attributes:
        population, generations, parents (K), mutation_prob, crossover, elite: the genetic
            search's settings (:class:`fbnas.search.evolution.EvolutionConfig`).
        patience: stop after this many generations without a better prediction.
        stall_mutation_boost: mutation probability factor after each stalled generation.
        initial: the best feasible stage-1 candidates that open generation 0.
        top_k: distinct best candidates reported (and offered for final training).
        max_draws: cap on draws per generation.
    """

    population: int = 100
    generations: int = 40
    parents: int = 10
    mutation_prob: float = 0.15
    crossover: float = 0.5
    elite: int | None = None
    patience: int = 6
    stall_mutation_boost: float = 1.5
    initial: int = 10
    top_k: int = 5
    max_draws: int = 5000

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.initial < 0 or self.top_k < 1:
            raise ConfigError(f"fine: initial must be >= 0 and top_k >= 1, got "
                              f"{self.initial} and {self.top_k}")
        self.evolution(0)  # checks the genetic settings

    def evolution(self, seed: int) -> EvolutionConfig:
        return EvolutionConfig(population=self.population, generations=self.generations,
                               parents=self.parents, mutation_prob=self.mutation_prob,
                               crossover=self.crossover, elite=self.elite,
                               patience=self.patience,
                               stall_mutation_boost=self.stall_mutation_boost,
                               max_draws=self.max_draws, seed=seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "fine") -> FineConfig:
        reject_unknown_keys(data, cls, source)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FineResult:
    """The best distinct candidates by prediction, and the genetic search's record."""

    top: list[dict[str, Any]]
    evolution: EvolutionResult[Any]

    def to_dict(self) -> dict[str, Any]:
        return {"top": self.top, "generations": self.evolution.generations,
                "stop_reason": self.evolution.stop_reason, "draws": self.evolution.draws,
                "evaluated": len(self.evolution.evaluated)}


def run_fine(space: JointSpace, predictor: AccuracyPredictor, cost: PopulationCost,
             constraints: Constraints, config: FineConfig | None = None, *,
             initial: Sequence[Sequence[int]] = (), seed: int = 0) -> FineResult:
    """Stage 2: the best predicted candidates under ``constraints``.

    Args:
        initial: candidates that open generation 0 (the best of stage 1); infeasible ones
            are dropped by the search.

    Raises:
        InfeasibleConstraintError: fewer than two feasible candidates could be drawn.
    """
    config = config or FineConfig()
    constraint = SampleConstraint(cost, constraints)
    start = [tuple(int(i) for i in s) for s in initial][:config.initial]
    result = evolve(space, score=predictor, constraint=constraint,
                    config=config.evolution(seed), initial=start)
    ranked = sorted(result.evaluated, key=lambda e: (-e.score, e.cost))
    top = []
    for evaluated in ranked[:config.top_k]:
        sample = tuple(int(i) for i in evaluated.sample)
        costs = cost.one(sample)
        top.append({"sample": list(sample), "predicted": evaluated.score,
                    "macs": int(costs.macs[0]), "params": int(costs.params[0]),
                    "latency_ms": None if costs.latency_ms is None
                    else float(costs.latency_ms[0]),
                    "generation": evaluated.generation})
    return FineResult(top, result)


def best_feasible(space: JointSpace, cost: PopulationCost, constraints: Constraints,
                  samples: Sequence[Sequence[int]], scores: Sequence[float],
                  count: int) -> list[tuple[int, ...]]:
    """The ``count`` best-scored ``samples`` that meet ``constraints`` (stage 2's start)."""
    if not len(samples):
        return []
    array = np.asarray(samples, dtype=np.int64).reshape(-1, space.dims)
    mask = constraints.feasible(cost(array))
    order = [i for i in np.argsort(-np.asarray(scores), kind="stable") if mask[i]]
    return [tuple(int(v) for v in array[i]) for i in order[:count]]


__all__ = ["FineConfig", "FineResult", "best_feasible", "run_fine"]
