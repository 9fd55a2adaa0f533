"""The genetic search: finds a known optimum under a budget, fails clearly, is seeded."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from fbnas.errors import ConfigError, FbnasError
from fbnas.search.evolution import (
    EvolutionConfig,
    InfeasibleConstraintError,
    evolve,
    rank_key,
)
from fbnas.search.space import Candidate, LayerChoice, SearchSpace
from fbnas.slim.search import WidthSearchConfig

LAYERS, CHOICES = 7, 5
_rng = random.Random(7)
VALUES = [[_rng.randint(0, 20) for _ in range(CHOICES)] for _ in range(LAYERS)]
COSTS = [[_rng.randint(1, 10) for _ in range(CHOICES)] for _ in range(LAYERS)]

TOY = SearchSpace(
    "toy", 16, prefix=(),
    layers=tuple(LayerChoice(1, 8, 1, tuple(Candidate(f"c{c}", "skip")
                                            for c in range(CHOICES)))
                 for _ in range(LAYERS)),
    suffix=())
"""5^7 = 78125 architectures: small enough to know the answer by brute force."""


def value(sample) -> float:
    return float(sum(VALUES[layer][c] for layer, c in enumerate(sample)))


@dataclass
class TableCost:
    """A cost model that counts its calls (the search's draws are bounded)."""

    target: float
    unit: str = "units"
    calls: list[float] = field(default_factory=list)

    def cost(self, sample) -> float:
        total = float(sum(COSTS[layer][c] for layer, c in enumerate(sample)))
        self.calls.append(total)
        return total


def brute_force(target: float) -> tuple[tuple[float, float], int]:
    """((best value, minus its lowest cost), how many) over the architectures under
    ``target``."""
    costs = TableCost(target)
    feasible = [s for s in itertools.product(range(CHOICES), repeat=LAYERS)
                if costs.cost(s) <= target]
    return max((value(s), -costs.cost(s)) for s in feasible), len(feasible)


def test_finds_the_optimum_of_a_toy_space_under_the_budget() -> None:
    unconstrained = sum(max(row) for row in VALUES)
    target = 30.0
    (best_value, neg_cost), feasible = brute_force(target)
    assert best_value < unconstrained  # the budget binds
    config = EvolutionConfig(population=16, generations=30, parents=4, mutation_prob=0.3)
    for seed in range(3):
        result = evolve(TOY, value, TableCost(target), EvolutionConfig(
            **{**config.to_dict(), "seed": seed}))
        assert (result.best.score, -result.best.cost) == (best_value, neg_cost)
        assert all(e.cost <= target for e in result.evaluated)
        assert len({e.key for e in result.evaluated}) == len(result.evaluated)  # dedup
        assert result.best == max(result.evaluated, key=rank_key)
        initial = max(e.score for e in result.evaluated if e.generation == 0)
        assert initial < best_value and result.best.generation > 0  # bred, not drawn
        assert len(result.evaluated) < feasible / 5  # far from enumerating the space


def test_same_seed_same_search_and_progress_sees_every_evaluation() -> None:
    config = EvolutionConfig(population=8, generations=5, parents=3, seed=11)
    seen = []
    first = evolve(TOY, value, TableCost(30.0), config,
                   progress=lambda generation, e: seen.append((generation, e)))
    again = evolve(TOY, value, TableCost(30.0), config)
    other = evolve(TOY, value, TableCost(30.0), EvolutionConfig(
        **{**config.to_dict(), "seed": 12}))
    assert again.evaluated == first.evaluated and again.best == first.best
    assert other.evaluated != first.evaluated
    assert seen == [(e.generation, e) for e in first.evaluated]
    assert first.stop_reason == "generations" and first.generations == 5


def test_an_unreachable_target_fails_after_the_bounded_draws_naming_the_cheapest_cost(
        ) -> None:
    cheapest = min(TableCost(0).cost(s) for s in itertools.product(range(CHOICES),
                                                                  repeat=LAYERS))
    constraint = TableCost(cheapest - 1)
    with pytest.raises(InfeasibleConstraintError) as info:
        evolve(TOY, value, constraint, EvolutionConfig(max_draws=300, seed=1))
    seen = min(constraint.calls)
    assert len(constraint.calls) <= 300  # bounded (duplicates are not costed twice)
    message = str(info.value)
    assert "300 random draws found only 0 feasible sample(s) under the target " \
           f"{cheapest - 1:g} units" in message
    assert f"the cheapest cost seen is {seen:g} units" in message
    assert isinstance(info.value, ConfigError)


@dataclass
class OnlyOne:
    """Everything costs 1 but ``feasible`` (0); the target is 0."""

    feasible: tuple[int, ...]
    target: float = 0.0
    unit: str = "units"

    def cost(self, sample) -> float:
        return 0.0 if sample == self.feasible else 1.0


def test_one_feasible_network_is_not_enough_for_a_genetic_search() -> None:
    only = (0,) * LAYERS
    with pytest.raises(InfeasibleConstraintError,
                       match=r"100 random draws and 1 initial sample\(s\) found only 1 "
                             r"feasible sample\(s\) under the target 0 units \(a genetic "
                             r"search needs 2\); the cheapest cost seen is 0 units"):
        evolve(TOY, value, OnlyOne(only), EvolutionConfig(max_draws=100), initial=[only])


def test_initial_samples_open_generation_zero_and_are_checked() -> None:
    seed_sample = (0, 1, 2, 3, 4, 0, 1)
    result = evolve(TOY, value, TableCost(1e9),
                    EvolutionConfig(population=4, generations=1, initial_samples=0,
                                    parents=2),
                    initial=[seed_sample, (3,) * LAYERS])
    assert [e.sample for e in result.evaluated[:2]] == [seed_sample, (3,) * LAYERS]
    assert all(e.generation == 1 for e in result.evaluated[2:])
    with pytest.raises(FbnasError, match=r"layer 2: choice 7 is not in \[0, 5\)"):
        evolve(TOY, value, TableCost(1e9), initial=[(0, 0, 7, 0, 0, 0, 0)])


def test_a_small_space_ends_when_no_new_child_is_left() -> None:
    small = SearchSpace("small", 16, (), TOY.layers[:2], ())  # 25 networks
    result = evolve(small, value, TableCost(1e9),
                    EvolutionConfig(population=6, generations=50, parents=3, max_draws=200,
                                    mutation_prob=1.0))
    assert len(result.evaluated) == 25 and result.stop_reason == "no_new_children"
    assert result.generations < 50


def test_patience_stops_a_stalled_search_and_stalls_raise_the_mutation_rate() -> None:
    probs: list[float] = []

    class Recording(SearchSpace):
        def mutate(self, sample, rng, prob):
            probs.append(prob)
            return super().mutate(sample, rng, prob)

    space = Recording("rec", 16, (), TOY.layers, ())
    flat = evolve(space, lambda s: 1.0, TableCost(1e9), EvolutionConfig(
        population=4, generations=20, parents=2, crossover=0.0, mutation_prob=0.1,
        patience=3, stall_mutation_boost=2.0))
    assert flat.stop_reason == "stalled" and flat.generations == 3
    assert sorted(set(probs)) == [0.1, 0.2, 0.4]  # doubled after each stalled generation
    probs.clear()
    evolve(space, value, TableCost(1e9), EvolutionConfig(population=4, generations=6,
                                                         parents=2, crossover=0.0))
    assert set(probs) == {0.2}  # the default: constant


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"parents \(5\) must not exceed population \(4\)"):
        EvolutionConfig(population=4, parents=5)
    with pytest.raises(ConfigError, match=r"elite \(9\) must not exceed population \(8\)"):
        EvolutionConfig(population=8, elite=9)
    with pytest.raises(ConfigError, match="patience must be None or an int >= 1"):
        EvolutionConfig(patience=0)
    with pytest.raises(ConfigError, match="unknown key 'mutaton_prob'; did you mean "
                                          "'mutation_prob'"):
        EvolutionConfig.from_dict({"mutaton_prob": 0.1})
    config = EvolutionConfig.from_dict({"population": 6, "elite": 0})
    assert EvolutionConfig.from_dict(config.to_dict()) == config


def test_the_width_search_settings_map_onto_the_genetic_ones() -> None:
    width = WidthSearchConfig(population=6, generations=3, parents=2, mutation_prob=0.3,
                              crossover=0.4, max_draws=50, seed=5)
    assert width.evolution() == EvolutionConfig(population=6, generations=3, parents=2,
                                                mutation_prob=0.3, crossover=0.4,
                                                max_draws=50, seed=5)
