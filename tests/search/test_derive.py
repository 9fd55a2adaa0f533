"""Deriving under a cost target: the most probable architecture within the band."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from fbnas.search.derive import LayerCosts, derive_within_band, most_probable_within


def brute_force(log_probs, costs: LayerCosts, low: float, high: float):
    best = None
    for choices in itertools.product(*[range(len(row)) for row in costs.per_layer]):
        cost = costs.network_cost(choices)
        if low <= cost <= high:
            score = sum(log_probs[layer][c] for layer, c in enumerate(choices))
            if best is None or score > best[0]:
                best = (score, list(choices))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_dynamic_programme_finds_the_brute_force_optimum(seed: int) -> None:
    rng = random.Random(seed)
    rows = tuple(tuple(rng.uniform(0.01, 1.0) for _ in range(rng.randint(2, 4)))
                 for _ in range(5))
    costs = LayerCosts(rows, 0.3, "ms")
    log_probs = [[math.log(rng.uniform(0.05, 1)) for _ in row] + [-math.inf] * (4 - len(row))
                 for row in rows]
    target = rng.uniform(costs.cheapest, costs.most_expensive)
    low, high = 0.95 * target, 1.05 * target
    expected = brute_force(log_probs, costs, low, high)
    found = most_probable_within(log_probs, costs, low, high, bins=20000)
    if expected is None:
        assert found is None
        return
    assert low <= costs.network_cost(found) <= high
    score = sum(log_probs[layer][c] for layer, c in enumerate(found))
    assert score == pytest.approx(expected[0], abs=1e-9)


def test_an_empty_band_gives_none_and_a_reversed_band_is_an_error() -> None:
    costs = LayerCosts(((1.0, 2.0), (1.0, 2.0)), 0.0, "ms")
    log_probs = [[0.0, 0.0], [0.0, 0.0]]
    assert most_probable_within(log_probs, costs, 5.0, 6.0) is None
    assert most_probable_within(log_probs, costs, 0.1, 0.5) is None
    with pytest.raises(ValueError, match="empty cost band"):
        most_probable_within(log_probs, costs, 3.0, 2.0)


def test_derive_within_band_keeps_an_argmax_in_the_band_and_replaces_one_outside(
        caplog: pytest.LogCaptureFixture) -> None:
    costs = LayerCosts(((1.0, 3.0), (1.0, 3.0)), 0.5, "ms")
    log_probs = [[math.log(0.9), math.log(0.1)], [math.log(0.6), math.log(0.4)]]
    assert derive_within_band([0, 0], log_probs, costs, None, 0.05) == ([0, 0], "argmax")
    assert derive_within_band([0, 0], log_probs, costs, 2.5, None) == ([0, 0], "argmax")
    assert derive_within_band([0, 0], log_probs, costs, 2.5, 0.05) == ([0, 0], "argmax")
    # 4.5 ms: one layer at 3 ms, the likelier trade is layer 1's (0.4 vs layer 0's 0.1)
    assert derive_within_band([0, 0], log_probs, costs, 4.5, 0.05) == (
        [0, 1], "most probable within ±5% of the target")
    assert derive_within_band([0, 0], log_probs, costs, 9.0, 0.05) == ([0, 0], "argmax")
    assert "no architecture of the space costs 8.55-9.45 ms" in caplog.text
