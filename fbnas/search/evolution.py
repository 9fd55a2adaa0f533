"""One genetic search for every space: the best score under a cost budget.

Written against :class:`~fbnas.search.protocols.Space` (draw, mutate, cross, key),
a :class:`~fbnas.search.protocols.Constraint` (``cost(sample) <= target``) and a score
function (``score(sample)``, higher is better: an accuracy evaluator or a predictor), as
once-for-all's ``evolution.py`` needs only an accuracy and an efficiency predictor. The
slim width search (:func:`fbnas.slim.search.evolve_widths`) runs on it; JointNAS's
predictor-based stage (ALGORITHMS.md section 3.5) is meant to.

The loop:

1. generation 0 is the ``initial`` samples (if feasible) plus ``initial_samples`` random
   feasible ones;
2. each generation, the best ``parents`` (by score, then lower cost) breed ``population``
   new feasible children: with probability ``crossover`` a uniform crossover of two
   parents then a light mutation (``mutation_prob * crossover_mutation``), otherwise a
   mutation of one parent (``mutation_prob``);
3. the next population is the best ``population`` of the ``elite`` best of the current one
   and the children.

Samples with equal ``space.key`` are one (evaluated once); only feasible ones are scored.
Every draw loop is capped at ``max_draws``: if generation 0 has fewer than two feasible
samples the search fails, saying how many draws it tried and the cheapest cost it saw
against the target; a later generation with no new feasible child ends the search.
Two optional rules make the search adaptive (JointNAS): ``patience`` stops it when the
best score has not improved for that many generations, and ``stall_mutation_boost``
multiplies the mutation probability after each generation without improvement (back to
``mutation_prob`` after one that improves).

Example (a cost model is any object with ``target``, ``unit`` and ``cost(sample)``; the
README's "Spaces and evolution" runs a complete one)::

    space = get_space("fbnet_v1_tiny")
    result = evolve(space, score=predictor, constraint=macs_under_10m,
                    config=EvolutionConfig(population=32, generations=10, seed=1))
    result.best.sample, result.best.score, space.freeze(result.best.sample).arch_def
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Literal

from fbnas.errors import ConfigError, reject_unknown_keys
from fbnas.search.protocols import Constraint, SampleT, Space

logger = logging.getLogger(__name__)

StopReason = Literal["generations", "no_new_children", "stalled"]


class InfeasibleConstraintError(ConfigError):
    """The search could not draw enough samples that meet the cost target."""


# --------------------------------------------------------------------------- settings


def check_evolution_settings(settings: Any, source: str,
                             error: type[Exception] = ConfigError) -> None:
    """Checks the genetic settings every search shares; raises ``error`` naming ``source``.

    ``settings`` has ``population``, ``generations``, ``parents``, ``mutation_prob``,
    ``crossover`` and ``max_draws`` (an :class:`EvolutionConfig`, or a search's own
    settings that hold these, like :class:`fbnas.slim.search.WidthSearchConfig`).
    """
    for name in ("population", "parents", "max_draws"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise error(f"{source}: {name} must be an int >= 1, got {value!r}")
    generations = settings.generations
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 0:
        raise error(f"{source}: generations must be an int >= 0, got {generations!r}")
    if settings.parents > settings.population:
        raise error(f"{source}: parents ({settings.parents}) must not exceed population "
                    f"({settings.population})")
    for name in ("mutation_prob", "crossover"):
        if not 0.0 <= getattr(settings, name) <= 1.0:
            raise error(f"{source}: {name} must be in [0, 1], got "
                        f"{getattr(settings, name)!r}")


def _optional_count(value: Any, name: str, least: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < least):
        raise ConfigError(f"evolution: {name} must be None or an int >= {least}, got "
                          f"{value!r}")


@dataclass(frozen=True)
class EvolutionConfig:
    """Genetic search settings.

    Attributes:
        population: samples kept per generation (and children bred per generation).
        generations: rounds of breeding after generation 0.
        parents: the best ``parents`` of a generation breed the next.
        mutation_prob: per dimension, the chance a mutated child redraws it.
        crossover: share of children made by crossover of two parents (the rest by
            mutation of one).
        crossover_mutation: a crossover child is then mutated with
            ``mutation_prob * crossover_mutation`` (0: not at all).
        elite: how many of the best of a generation compete with its children for the
            next one (None: the ``parents``; 0: children only).
        initial_samples: random feasible samples of generation 0 besides ``initial``
            (None: ``population``).
        max_draws: cap on draws per generation to find feasible new samples.
        patience: stop when the best score has not improved for this many generations
            (None: run every generation).
        stall_mutation_boost: after a generation without improvement the mutation
            probability is multiplied by this (capped at 1); an improving generation
            resets it to ``mutation_prob``. 1 keeps it constant.
        seed: seeds every random draw of the search.
    """

    population: int = 16
    generations: int = 8
    parents: int = 4
    mutation_prob: float = 0.2
    crossover: float = 0.5
    crossover_mutation: float = 0.5
    elite: int | None = None
    initial_samples: int | None = None
    max_draws: int = 2000
    patience: int | None = None
    stall_mutation_boost: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_evolution_settings(self, "evolution")
        if not 0.0 <= self.crossover_mutation <= 1.0:
            raise ConfigError(f"evolution: crossover_mutation must be in [0, 1], got "
                              f"{self.crossover_mutation!r}")
        _optional_count(self.elite, "elite", 0)
        _optional_count(self.initial_samples, "initial_samples", 0)
        _optional_count(self.patience, "patience", 1)
        if self.elite is not None and self.elite > self.population:
            raise ConfigError(f"evolution: elite ({self.elite}) must not exceed population "
                              f"({self.population})")
        if not self.stall_mutation_boost >= 1.0:
            raise ConfigError(f"evolution: stall_mutation_boost must be >= 1, got "
                              f"{self.stall_mutation_boost!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "evolution"
                  ) -> EvolutionConfig:
        """Builds settings from plain data; an unknown key is refused with close matches."""
        reject_unknown_keys(data, cls, source)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Evaluated(Generic[SampleT]):
    """One feasible sample the search scored.

    Attributes:
        sample: the space's sample.
        key: its ``space.key`` (the identity duplicates share).
        cost: ``constraint.cost(sample)``.
        score: ``score(sample)``.
        generation: the generation that produced it (0: the initial one).
    """

    sample: SampleT
    key: Hashable
    cost: float
    score: float
    generation: int


def rank_key(evaluated: Evaluated[Any]) -> tuple[float, float]:
    """Ordering of the search: higher score first, then lower cost."""
    return (evaluated.score, -evaluated.cost)


@dataclass
class EvolutionResult(Generic[SampleT]):
    """The best feasible sample and everything scored (in order).

    Attributes:
        best: the first evaluated sample of the highest :func:`rank_key`.
        evaluated: every scored sample, in evaluation order.
        generations: generations bred after generation 0.
        stop_reason: ``"generations"`` (all ran), ``"no_new_children"`` (``max_draws``
            draws found no new feasible child) or ``"stalled"`` (``patience``).
        draws: samples drawn in all (random, bred and initial).
    """

    best: Evaluated[SampleT]
    evaluated: list[Evaluated[SampleT]] = field(default_factory=list)
    generations: int = 0
    stop_reason: StopReason = "generations"
    draws: int = 0


# --------------------------------------------------------------------------- the search


class _Pool(Generic[SampleT]):
    """What the search has seen: feasible samples by key, the cheapest cost, the draws."""

    def __init__(self, space: Space[SampleT], score: Callable[[SampleT], float],
                 constraint: Constraint[SampleT],
                 progress: Callable[[int, Evaluated[SampleT]], None] | None) -> None:
        self.space, self.score, self.constraint, self.progress = (space, score, constraint,
                                                                  progress)
        self.seen: dict[Hashable, Evaluated[SampleT]] = {}
        self.evaluated: list[Evaluated[SampleT]] = []
        self.cheapest = float("inf")
        self.draws = 0

    def consider(self, sample: SampleT, generation: int) -> Evaluated[SampleT] | None:
        """The evaluation of ``sample`` if feasible and new (scored now), else None.

        The key is checked before the cost and the cost before the score: duplicates cost
        nothing, infeasible samples are never scored.
        """
        self.draws += 1
        key = self.space.key(sample)
        if key in self.seen:
            return None
        cost = float(self.constraint.cost(sample))
        self.cheapest = min(self.cheapest, cost)
        if cost > self.constraint.target:
            return None
        evaluated = Evaluated(sample, key, cost, float(self.score(sample)), generation)
        self.seen[key] = evaluated
        self.evaluated.append(evaluated)
        if self.progress is not None:
            self.progress(generation, evaluated)
        return evaluated

    def fill(self, make: Callable[[], SampleT], count: int, max_draws: int,
             generation: int) -> list[Evaluated[SampleT]]:
        """Up to ``count`` new feasible samples of ``make()``, in at most ``max_draws``."""
        found: list[Evaluated[SampleT]] = []
        for _ in range(max_draws):
            if len(found) >= count:
                break
            evaluated = self.consider(make(), generation)
            if evaluated is not None:
                found.append(evaluated)
        return found


def _breed(space: Space[SampleT], rng: random.Random, parents: Sequence[Evaluated[SampleT]],
           config: EvolutionConfig, mutation_prob: float) -> SampleT:
    """A child: crossover of two parents then a light mutation, or a mutated parent."""
    if len(parents) > 1 and rng.random() < config.crossover:
        a, b = rng.sample(list(parents), 2)
        return space.mutate(space.crossover(a.sample, b.sample, rng), rng,
                            mutation_prob * config.crossover_mutation)
    return space.mutate(rng.choice(list(parents)).sample, rng, mutation_prob)


def evolve(space: Space[SampleT], score: Callable[[SampleT], float],
           constraint: Constraint[SampleT], config: EvolutionConfig | None = None, *,
           initial: Sequence[SampleT] = (),
           progress: Callable[[int, Evaluated[SampleT]], None] | None = None
           ) -> EvolutionResult[SampleT]:
    """Searches ``space`` for the sample of highest ``score`` with ``cost <= target``.

    Args:
        space: what is searched.
        score: ``sample -> float``, higher is better.
        constraint: the cost model and its target.
        config: the settings (default :class:`EvolutionConfig`).
        initial: samples that open generation 0 (checked with ``space.check``; kept if
            feasible), e.g. the best of an earlier stage or the smallest network.
        progress: called after each evaluation with the generation and the evaluation.

    Raises:
        InfeasibleConstraintError: generation 0 has fewer than two feasible samples after
            ``max_draws`` random draws (the message gives the draws, the cheapest cost
            seen and the target).
        FbnasError: an ``initial`` sample is not valid (``space.check``).
    """
    config = config or EvolutionConfig()
    initial = list(initial)
    rng = random.Random(config.seed)
    pool = _Pool(space, score, constraint, progress)
    for sample in initial:
        space.check(sample)
    population = [e for e in (pool.consider(s, 0) for s in initial) if e is not None]
    count = config.population if config.initial_samples is None else config.initial_samples
    population += pool.fill(functools.partial(space.sample, rng), count, config.max_draws, 0)
    if len(population) < 2:
        seeds = f" and {len(initial)} initial sample(s)" if initial else ""
        raise InfeasibleConstraintError(
            f"{pool.draws - len(initial)} random draws{seeds} found only {len(population)} "
            f"feasible sample(s) under the target {constraint.target:g} {constraint.unit} "
            f"(a genetic search needs 2); the cheapest cost seen is {pool.cheapest:g} "
            f"{constraint.unit}; raise the target or max_draws")

    elite = config.parents if config.elite is None else config.elite
    mutation_prob = config.mutation_prob
    best_score = max(e.score for e in population)
    stalled, generation, stop_reason = 0, 0, "generations"
    for generation in range(1, config.generations + 1):
        ranked = sorted(population, key=rank_key, reverse=True)
        parents = ranked[:config.parents]

        breed = functools.partial(_breed, space, rng, parents, config, mutation_prob)
        children = pool.fill(breed, config.population, config.max_draws, generation)
        if not children:
            logger.info("generation %d: no new feasible child in %d draws; stopping",
                        generation, config.max_draws)
            generation, stop_reason = generation - 1, "no_new_children"
            break
        population = sorted(ranked[:elite] + children, key=rank_key,
                            reverse=True)[:config.population]
        generation_best = max(e.score for e in children)
        if generation_best > best_score:
            best_score, stalled, mutation_prob = generation_best, 0, config.mutation_prob
        else:
            stalled += 1
            mutation_prob = min(1.0, mutation_prob * config.stall_mutation_boost)
        logger.info("generation %d: %d children, best score %g", generation, len(children),
                    best_score)
        if config.patience is not None and stalled >= config.patience:
            stop_reason = "stalled"
            break
    best = max(pool.evaluated, key=rank_key)
    return EvolutionResult(best, pool.evaluated, generation, stop_reason, pool.draws)


__all__ = [
    "EvolutionConfig",
    "EvolutionResult",
    "Evaluated",
    "InfeasibleConstraintError",
    "check_evolution_settings",
    "evolve",
    "rank_key",
]
