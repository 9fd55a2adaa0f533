"""Deriving an architecture from its probabilities under a cost target.

FBNetV1 takes the argmax of θ per layer. With a cost target that is not enough: the
target term of the loss acts on the *expected* cost, and while θ is not fully sharp (short
searches never are) the per-layer argmax can sit far from it — on digits, 16-epoch
searches aimed at 0.68 ms derived argmax networks of 0.55-0.83 ms. The most probable
architecture *within the band* is the natural answer, and it is exact to compute when the
cost is a sum over layers (:class:`LayerCosts`: one cost per choice of every layer, plus a
fixed part): a dynamic programme over layers and (finely binned) cost finds the
architecture maximising Σ log p under ``low <= cost <= high``.

Nothing here knows about supernets: any search whose choice is one index per layer and
whose cost adds up over layers derives with :func:`derive_within_band`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fbnas.errors import ConfigError

logger = logging.getLogger(__name__)

ARGMAX = "argmax"
"""The derivation method of a plain per-layer argmax (``arch.json``'s ``derived``)."""


@dataclass(frozen=True)
class LayerCosts:
    """Cost of every choice of every layer, plus the fixed part (stem, head...)."""

    per_layer: tuple[tuple[float, ...], ...]
    fixed: float
    unit: str

    def network_cost(self, choices: Sequence[int]) -> float:
        return self.fixed + sum(row[c] for row, c in zip(self.per_layer, choices, strict=True))

    @property
    def cheapest(self) -> float:
        return self.fixed + sum(min(row) for row in self.per_layer)

    @property
    def most_expensive(self) -> float:
        return self.fixed + sum(max(row) for row in self.per_layer)


def most_probable_within(log_probs: Sequence[Sequence[float]], costs: LayerCosts,
                         low: float, high: float, bins: int = 4000) -> list[int] | None:
    """The choices maximising the summed log-probability with ``low <= cost <= high``.

    Args:
        log_probs: (layers, K_l) log-probabilities (``-inf`` for padding).
        costs: the per-choice costs the search used (same unit as the bounds).
        low, high: the band of the network's total cost (fixed part included).
        bins: cost resolution of the programme; the result's cost is checked exactly, and
            rounding can only lose architectures within ``high / bins`` of a bound.

    Returns:
        One choice index per layer, or ``None`` when no architecture has a cost in the band.
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
            # row_lp may be padded beyond this layer's choices: zip stops at K_l
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


def derive_within_band(argmax: Sequence[int], log_probs: Sequence[Sequence[float]],
                       costs: LayerCosts, target: float | None, band: float | None
                       ) -> tuple[list[int], str]:
    """(choices, method): ``argmax`` when it costs within ``±band`` of ``target`` (or either
    is None), else the most probable architecture within the band.

    When no architecture costs within the band the argmax is kept, with a warning.

    Raises:
        ConfigError: ``band`` is not in (0, 1).
    """
    argmax = list(argmax)
    if target is None or band is None:
        return argmax, ARGMAX
    if not 0 < band < 1:
        raise ConfigError(f"the target band must be in (0, 1), got {band}")
    low, high = target * (1 - band), target * (1 + band)
    if low <= costs.network_cost(argmax) <= high:
        return argmax, ARGMAX
    within = most_probable_within(log_probs, costs, low, high)
    if within is None:
        logger.warning("no architecture of the space costs %.4g-%.4g %s; deriving the argmax",
                       low, high, costs.unit)
        return argmax, ARGMAX
    return within, f"most probable within ±{band:.0%} of the target"
