"""Deriving an architecture from θ under a cost target.

FBNetV1 takes the argmax of θ per layer. With a cost target that is not enough: the
target term of the loss acts on the *expected* cost, and while θ is not fully sharp (short
searches never are) the per-layer argmax can sit far from it — on digits, 16-epoch
searches aimed at 0.68 ms derived argmax networks of 0.55-0.83 ms. The most probable
architecture *within the band* is the natural answer, and it is exact to compute: the
cost is a sum over layers, so a dynamic programme over layers and (finely binned) cost
finds the architecture maximising Σ log p under ``low <= cost <= high``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fbnas.search.dnas.supernet import LayerCosts


def most_probable_within(log_probs: Sequence[Sequence[float]], costs: LayerCosts,
                         low: float, high: float, bins: int = 4000) -> list[int] | None:
    """The choices maximising the summed log-probability with ``low <= cost <= high``.

    Args:
        log_probs: (layers, K_l) log-probabilities (``-inf`` for padding).
        costs: the per-candidate costs the search used (same unit as the bounds).
        low, high: the band of the network's total cost (fixed part included).
        bins: cost resolution of the programme; the result's cost is checked exactly, and
            rounding can only lose architectures within ``high / bins`` of a bound.

    Returns:
        One candidate index per layer, or ``None`` when no architecture of the space has a
        cost in the band.
    """
    if high < low:
        raise ValueError(f"empty cost band [{low}, {high}]")
    budget = high - costs.fixed
    if budget < 0:
        return None
    step = budget / bins if budget > 0 else 1.0
    # best[b] = (score, choices) of the best prefix whose cost rounds to bin b
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for row_lp, row_cost in zip(log_probs, costs.per_layer, strict=True):
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for b, (score, choices) in best.items():
            # row_lp may be padded beyond this layer's candidates: zip stops at K_l
            for k, (lp, cost) in enumerate(zip(row_lp, row_cost, strict=False)):
                if lp == -math.inf:
                    continue
                nb = b + round(cost / step)
                if nb > bins:
                    continue
                candidate = (score + lp, choices + (k,))
                if nb not in nxt or candidate[0] > nxt[nb][0]:
                    nxt[nb] = candidate
        best = nxt
    feasible = [(score, choices) for score, choices in best.values()
                if low - 1e-12 <= costs.network_cost(choices) <= high + 1e-12]
    if not feasible:
        return None
    return list(max(feasible)[1])
