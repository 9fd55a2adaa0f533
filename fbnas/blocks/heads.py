"""The head registry: what sits on a backbone's last feature map, described as data.

A head is named by a :class:`fbnas.arch.HeadSpec` (``HeadSpec("cls_head", {"num_classes":
10})``) and resolved here, like a block, into a plan that builds the module and computes
its params, MACs and output shape analytically. The builder builds from the plan and the
cost models cost from it, so a head is counted in one place whatever the task: the
classifier is the first head, a landmark regressor registers its own.

Users register a module factory ``f(in_channels, *, options...)`` with
:func:`register_head`; its cost is counted on PyTorch's ``meta`` device::

    @register_head("pool_linear")
    def pool_linear(in_channels: int, *, outputs: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels,
                                                                              outputs))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import FrozenKwargs, HeadSpec, thaw
from fbnas.blocks.layers import HW, Cost
from fbnas.blocks.options import OptionSchema, check_options
from fbnas.blocks.registry import BlockRegistry
from fbnas.errors import ConfigError

CLS_HEAD = "cls_head"
"""The classifier head's op name (also the first field of its latency-table key)."""

DEFAULT_CLASSES = 1000
"""``num_classes`` where callers leave it at its default (ImageNet's classes)."""


class HeadPlan(Protocol):
    """What resolving a head yields: its module and its analytic cost on an input size."""

    in_channels: int

    def build(self) -> nn.Module: ...

    def cost(self, in_hw: HW) -> tuple[Cost, tuple[int, ...]]:
        """(params and MACs, the output shape of one sample) on an ``in_hw`` feature map."""
        ...


@dataclass(frozen=True)
class HeadOp:
    """One registered head.

    Attributes:
        name: the op name a :class:`HeadSpec` uses.
        schema: the options it accepts, with types and defaults.
        resolve: ``(in_channels, options) -> HeadPlan``.
        description: one line for listings.
    """

    name: str
    schema: OptionSchema
    resolve: Callable[[int, dict[str, Any]], HeadPlan]
    description: str = ""

    @property
    def option_names(self) -> frozenset[str]:
        return frozenset(self.schema.fields)

    def options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The checked options with defaults filled in (unknown keys are errors)."""
        return check_options(self.schema, options)

    def plan(self, in_channels: int, options: Mapping[str, Any]) -> HeadPlan:
        return self.resolve(in_channels, self.options(options))


HEADS: BlockRegistry[HeadOp] = BlockRegistry(kind="head op")
"""The heads every part of fbnas reads."""


# --------------------------------------------------------------------------- the classifier


class ClsConvHead(nn.Module):
    """Global average pool -> 1x1 conv (bias) -> flatten: ``(N, C, H, W) -> (N, classes)``.

    The reference classifier has no dropout and no ``nn.Linear``; the 1x1 conv keeps
    PyTorch's default init. Children ``avg_pool`` and ``conv`` as in the reference, so
    mobile-vision checkpoints load key for key (``head.conv.weight``, ``head.conv.bias``).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.avg_pool(x)).flatten(1)


@dataclass(frozen=True)
class ClsHeadOptions:
    """``cls_head``: the classes it scores."""

    num_classes: int


@dataclass(frozen=True)
class ClsHeadPlan:
    in_channels: int
    num_classes: int

    def build(self) -> nn.Module:
        return ClsConvHead(self.in_channels, self.num_classes)

    def cost(self, in_hw: HW) -> tuple[Cost, tuple[int, ...]]:
        # The pool is free; the 1x1 conv on the pooled 1x1 map is a C x K matrix and K biases.
        weights = self.in_channels * self.num_classes
        return Cost(weights + self.num_classes, weights), (self.num_classes,)


def _resolve_cls_head(in_channels: int, options: dict[str, Any]) -> ClsHeadPlan:
    if options["num_classes"] < 1:
        raise ArchDefError(f"num_classes must be >= 1, got {options['num_classes']}",
                           key="num_classes")
    return ClsHeadPlan(in_channels, options["num_classes"])


HEADS.add(HeadOp(CLS_HEAD, OptionSchema.from_dataclass(ClsHeadOptions), _resolve_cls_head,
                 "global average pool -> 1x1 conv with bias -> flatten (the classifier)"))


def classifier_head(num_classes: int) -> HeadSpec:
    """The classification head of ``num_classes`` classes."""
    return HeadSpec(CLS_HEAD, FrozenKwargs({"num_classes": num_classes}))


def head_classes(head: HeadSpec | None) -> int | None:
    """The class count of a classifier head; None for other heads (and for no head)."""
    if head is None or head.op != CLS_HEAD:
        return None
    return head.options.get("num_classes")


def head_spec_for(num_classes: int | None, head: HeadSpec | None) -> HeadSpec | None:
    """The head a network gets: ``head`` if given, else the classifier of ``num_classes``
    (``num_classes`` is the classification shorthand; ``None`` for both: no head).

    Raises:
        ConfigError: both are given and disagree (``num_classes`` is neither its default
            nor the head's class count).
    """
    if head is None:
        return classifier_head(num_classes) if num_classes else None
    if not isinstance(head, HeadSpec):
        raise TypeError(f"head must be a HeadSpec, got {type(head).__name__}")
    if num_classes not in (None, DEFAULT_CLASSES, head_classes(head)):
        raise ConfigError(f"num_classes={num_classes} and head {head.op!r} "
                          f"{head.options.to_dict()} disagree; give one of them")
    return head


# --------------------------------------------------------------------------- users' own heads


@dataclass(frozen=True)
class FactoryHeadPlan:
    """Plan of a user head given as a module factory; its cost is counted on the meta device."""

    factory: Callable[..., nn.Module]
    in_channels: int
    options: FrozenKwargs

    def build(self) -> nn.Module:
        try:
            return self.factory(self.in_channels, **thaw(self.options))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArchDefError(f"the head's factory failed: {exc}") from exc

    def cost(self, in_hw: HW) -> tuple[Cost, tuple[int, ...]]:
        from fbnas.blocks.counting import count_module

        with torch.device("meta"):
            module = self.build()
        try:
            params, macs, out_shape = count_module(module, (1, self.in_channels, *in_hw))
        except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ArchDefError(f"the head fails on a {in_hw[0]}x{in_hw[1]} input (it must "
                               f"return one tensor): {exc}") from exc
        return Cost(params, macs), tuple(out_shape[1:])


def register_head(name: str, *, description: str = ""
                  ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: registers ``f(in_channels, *, options...)`` as a head op.

    The factory's keyword options (with type hints and defaults) are the head's schema; a
    :class:`HeadSpec` naming it is then built, costed and latency-tabled like the classifier.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        schema = OptionSchema.from_signature(factory, skip=1)

        def resolve(in_channels: int, options: dict[str, Any]) -> FactoryHeadPlan:
            return FactoryHeadPlan(factory, in_channels, FrozenKwargs(options))

        HEADS.add(HeadOp(name, schema, resolve, description or (factory.__doc__ or "")
                         .strip().split("\n")[0]))
        return factory

    return decorator


__all__ = [
    "CLS_HEAD",
    "HEADS",
    "ClsConvHead",
    "HeadOp",
    "HeadPlan",
    "classifier_head",
    "head_classes",
    "head_spec_for",
    "register_head",
]
