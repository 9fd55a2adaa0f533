"""What search algorithms need from a space and from a cost: two small protocols.

Evolution (:mod:`fbnas.search.evolution`), quasi-Monte-Carlo pools and accuracy predictors
are written once against :class:`Space` and :class:`Constraint`, not against a class
hierarchy (STYLE.md, "Seams"; once-for-all's ``arch_encoder.py`` and NNI v3's
``freeze``/``check_contains`` are the models). A space says how to draw, vary, check,
encode and freeze its samples; what a sample costs and how good it is are separate
functions handed to the search, so one space serves MACs, latency, a predictor or real
training.

Implementations: :class:`fbnas.search.space.SearchSpace` (a sample is one candidate index
per searchable layer) and :class:`fbnas.slim.space.WidthSpace` (a sample is a width
vector of a slimmable network).
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from fbnas.errors import ConfigError

if TYPE_CHECKING:
    from fbnas.train.config import TrainConfig

SampleT = TypeVar("SampleT", bound=Hashable)
"""A space's sample: hashable (equal samples are one) and JSON-able (a tuple of numbers
writes as a list; ``tuple(json_list)`` reads it back)."""

SampleT_contra = TypeVar("SampleT_contra", contravariant=True)


@dataclass(frozen=True)
class Frozen:
    """A sample made concrete: the arch def to build and, for a joint space, its recipe.

    A frozen result rather than a bare dict, so that an architecture-and-recipe space
    (FBNetV3's JointNAS) returns its training recipe beside the arch def without a change
    to any caller: architecture-only spaces leave ``recipe`` None.

    Attributes:
        arch_def: a plain arch-def dict that :func:`fbnas.build_model` builds.
        recipe: the training recipe of the sample, or None (train with your own).
    """

    arch_def: dict[str, Any]
    recipe: TrainConfig | None = None


@runtime_checkable
class Space(Protocol[SampleT]):
    """A search space as search algorithms see it.

    Contract (``tests/search/test_space_protocol.py`` holds it for every implementation):

    * ``sample``, ``mutate`` and ``crossover`` draw only from the ``rng`` they are given,
      so a seeded search is reproducible, and return valid samples;
    * ``check(s)`` returns None for a valid sample and raises an
      :class:`fbnas.errors.FbnasError` naming the bad part otherwise;
    * ``key(s)`` is equal for samples that are the same network (a search evaluates
      one of them only);
    * ``encode(s)`` is a vector of ``dims`` floats inside ``bounds``, and
      ``decode(encode(s)) == s`` for every valid ``s``; ``decode`` of *any* vector in the
      box is a valid sample (values outside are clamped), which is what Sobol pools and
      predictors rely on;
    * ``freeze(s)`` gives the arch def (and recipe) of ``s``.
    """

    @property
    def dims(self) -> int:
        """Length of :meth:`encode`'s vectors."""
        ...

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        """``(low, high)`` of each encoded coordinate: the box :meth:`decode` maps."""
        ...

    def sample(self, rng: random.Random) -> SampleT:
        """A random sample (the space's own prior)."""
        ...

    def mutate(self, sample: SampleT, rng: random.Random, prob: float) -> SampleT:
        """``sample`` with each dimension redrawn with probability ``prob``."""
        ...

    def crossover(self, a: SampleT, b: SampleT, rng: random.Random) -> SampleT:
        """A child taking each dimension from ``a`` or ``b``."""
        ...

    def check(self, sample: SampleT) -> None:
        """Raises an :class:`fbnas.errors.FbnasError` naming the part that is not valid."""
        ...

    def key(self, sample: SampleT) -> Hashable:
        """Identity of the network ``sample`` stands for (equal keys: evaluated once)."""
        ...

    def encode(self, sample: SampleT) -> list[float]:
        """``dims`` coordinates inside :attr:`bounds`."""
        ...

    def decode(self, vector: Sequence[float]) -> SampleT:
        """The sample of a vector of the box (clamped into it)."""
        ...

    def freeze(self, sample: SampleT) -> Frozen:
        """The arch def (and recipe) of ``sample``."""
        ...


@runtime_checkable
class Constraint(Protocol[SampleT_contra]):
    """A cost model with a budget: ``cost(sample) <= target`` is feasible.

    Attributes:
        target: the budget, in ``unit``.
        unit: for messages and plots (``"MACs"``, ``"ms"``).
    """

    target: float
    unit: str

    def cost(self, sample: SampleT_contra) -> float:
        """The sample's cost in ``unit`` (deterministic: searches may call it twice)."""
        ...


ScoreFn = Callable[[Any], float]
"""``score(sample) -> float``, higher is better (an accuracy evaluator or a predictor)."""


def clamp_to_box(vector: Sequence[float], bounds: Sequence[tuple[float, float]],
                 what: str) -> list[float]:
    """``vector`` as floats clamped into ``bounds``: the first step of every ``decode``.

    Raises:
        ConfigError: a wrong length or a value that is not a finite number (naming the
            coordinate and ``what`` was decoded).
    """
    values = list(vector)
    if len(values) != len(bounds):
        raise ConfigError(f"{what}: an encoded vector has {len(bounds)} coordinates, got "
                          f"{len(values)}")
    out = []
    for i, (value, (low, high)) in enumerate(zip(values, bounds, strict=True)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ConfigError(f"{what}: coordinate {i} must be a finite number, got "
                              f"{value!r}")
        out.append(min(max(float(value), low), high))
    return out


__all__ = ["Constraint", "Frozen", "SampleT", "ScoreFn", "Space", "clamp_to_box"]
