"""The width vectors of a slimmable network as a search space (the ``Space`` protocol).

A sample is a width vector ``wm`` in ``[min_wm, 1]^search_dim`` (a tuple of floats), the
input of :meth:`DynModel.decode_wm`. Two vectors that round to the same channel counts are
the same network, so the dedup key is the channels. The encoding is ``wm`` itself: the
box is ``[min_wm, 1]`` per dimension and decoding clamps into it.

The draw rule spreads samples over network sizes: a per-sample ceiling
``u ~ U[min_wm, 1]``, then ``wm_d ~ U[min_wm, u]``; independent uniform multipliers would
all land near the middle size (the sum of many independent widths concentrates), which is
infeasible under a tight budget. Mutation redraws a dimension from ``U[min_wm, 1]``.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Sequence

from fbnas.search.protocols import Frozen, clamp_to_box
from fbnas.slim.dyn_model import DynModel
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.extract import extract_arch_spec


class WidthSpace:
    """Width vectors of ``model`` with every multiplier in ``[min_wm, 1]``.

    Args:
        model: the slim network (its ``search_dim`` and channel rounding).
        min_wm: the smallest multiplier (a sandwich training's ``min_wm``: narrower
            networks were never trained).

    Example:
        >>> from fbnas.slim import build_slim_model
        >>> space = WidthSpace(build_slim_model("slim_mbv2"), min_wm=0.35)
        >>> wm = space.sample(random.Random(0))
        >>> space.decode(space.encode(wm)) == wm
        True
    """

    def __init__(self, model: DynModel, min_wm: float) -> None:
        if isinstance(min_wm, bool) or not isinstance(min_wm, numbers.Real) \
                or not 0.0 < min_wm <= 1.0:
            raise SlimConfigError(f"width space: min_wm must be in (0, 1], got {min_wm!r}")
        self.model = model
        self.min_wm = float(min_wm)

    def __repr__(self) -> str:
        return (f"WidthSpace({getattr(self.model, 'name', type(self.model).__name__)}, "
                f"search_dim={self.dims}, min_wm={self.min_wm:g})")

    @property
    def dims(self) -> int:
        return self.model.search_dim

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        return ((self.min_wm, 1.0),) * self.dims

    @property
    def smallest(self) -> tuple[float, ...]:
        """``min_wm`` everywhere: the cheapest network of the space."""
        return (self.min_wm,) * self.dims

    def sample(self, rng: random.Random) -> tuple[float, ...]:
        """``u ~ U[min_wm, 1]``, then ``wm_d ~ U[min_wm, u]`` for every dimension."""
        ceiling = rng.uniform(self.min_wm, 1.0)
        return tuple(rng.uniform(self.min_wm, ceiling) for _ in range(self.dims))

    def mutate(self, sample: Sequence[float], rng: random.Random, prob: float
               ) -> tuple[float, ...]:
        """Each multiplier redrawn from ``U[min_wm, 1]`` with probability ``prob``."""
        return tuple(rng.uniform(self.min_wm, 1.0) if rng.random() < prob else w
                     for w in sample)

    def crossover(self, a: Sequence[float], b: Sequence[float], rng: random.Random
                  ) -> tuple[float, ...]:
        """Uniform crossover: each multiplier from ``a`` or ``b`` with equal odds."""
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))

    def check(self, sample: Sequence[float]) -> None:
        """Raises :class:`SlimConfigError` naming the dimension out of ``[min_wm, 1]``."""
        values = list(sample)
        if len(values) != self.dims:
            raise SlimConfigError(f"width space: wm has {len(values)} values, the network "
                                  f"has search_dim {self.dims}")
        for d, w in enumerate(values):
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) \
                    or not self.min_wm <= w <= 1.0:
                raise SlimConfigError(f"width space: wm[{d}] = {w!r} is outside "
                                      f"[{self.min_wm:g}, 1] "
                                      f"({self.model.channel_groups.describe(d)})")

    def key(self, sample: Sequence[float]) -> tuple[int, ...]:
        """The flat channel counts: vectors that round to the same widths are one network."""
        return tuple(self.model.channel_groups.flatten_ch(self.model.decode_wm(sample)))

    def encode(self, sample: Sequence[float]) -> list[float]:
        """The multipliers themselves."""
        self.check(sample)
        return [float(w) for w in sample]

    def decode(self, vector: Sequence[float]) -> tuple[float, ...]:
        """The multipliers of a vector, clamped into ``[min_wm, 1]``."""
        return tuple(clamp_to_box(vector, self.bounds, "width space"))

    def freeze(self, sample: Sequence[float]) -> Frozen:
        """The arch def of the subnet at ``sample``'s widths (:func:`extract_arch_spec`)."""
        real_ch = self.model.decode_ch(self.model.decode_wm(sample))
        return Frozen(extract_arch_spec(self.model, real_ch).to_arch_def())


__all__ = ["WidthSpace"]
