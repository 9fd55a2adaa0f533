"""The one block registry: op name -> how to resolve options into a buildable, costable plan.

Every op, built-in or a user's, is an entry here; the builder, the analytic cost model,
latency tables and search spaces all look ops up by name in this one place.

Users register a plain module factory with :func:`register_block`::

    @register_block("dw_k7")
    def dw_k7(in_channels: int, out_channels: int, stride: int, *, bias: bool = False):
        return nn.Conv2d(in_channels, out_channels, 7, stride, 3, groups=in_channels,
                         bias=bias)

and can then write ``("dw_k7", 32, 2, 1, {"bias": True})`` in arch defs. Options are
checked against the signature (unknown or mistyped keys are errors); the analytic cost of
such an op is counted on PyTorch's ``meta`` device, so it stays exact without extra code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import FrozenKwargs, thaw
from fbnas.blocks.layers import HW, Cost
from fbnas.blocks.options import OptionSchema, check_options
from fbnas.errors import did_you_mean


class BlockPlan(Protocol):
    """What resolving an op yields: its real output width, a module and an analytic cost."""

    out_channels: int

    def build(self) -> nn.Module: ...

    def cost(self, in_hw: HW) -> tuple[Cost, HW]: ...


@dataclass(frozen=True)
class OpDef:
    """One registered op.

    Attributes:
        name: the op name used in arch defs.
        schema: the options it accepts, with types and defaults.
        resolve: ``(in_channels, out_channels, stride, options) -> BlockPlan``.
        fixed: options the name itself fixes (``kernel_size`` of ``ir_k5``); a block that
            sets one of them is an error, not a silent override.
        defaults: op-level defaults that ``basic_args`` and block kwargs may override
            (the activation of ``_hs`` ops, the SE of ``_se`` ops).
        ignored: options the reference zoo writes on this op although it has no effect;
            accepted and dropped, explicitly (e.g. ``expansion`` on ``skip``).
        description: one line for listings.
    """

    name: str
    schema: OptionSchema
    resolve: Callable[[int, int, int, dict[str, Any]], BlockPlan]
    fixed: FrozenKwargs = field(default_factory=FrozenKwargs)
    defaults: FrozenKwargs = field(default_factory=FrozenKwargs)
    ignored: frozenset[str] = frozenset()
    description: str = ""

    @property
    def option_names(self) -> frozenset[str]:
        """Every key a block of this op may carry (settable and ignored)."""
        return frozenset(self.schema.fields) - frozenset(self.fixed) | self.ignored

    def options(
        self, kwargs: Mapping[str, Any], basic_args: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The effective, checked options of a block of this op.

        Precedence, later wins: schema defaults < ``defaults`` < the ``basic_args`` keys this
        op knows < the block's kwargs; ``fixed`` options always win and cannot be set.
        """
        for key in kwargs:
            # Type-strict: True or 5.0 for a fixed int would be silently replaced by it.
            if key in self.fixed and (kwargs[key] != self.fixed[key]
                                      or type(kwargs[key]) is not type(self.fixed[key])):
                raise ArchDefError(
                    f"op {self.name!r} fixes {key}={thaw(self.fixed[key])!r} (got "
                    f"{thaw(kwargs[key])!r}); use the generic op of its family to choose "
                    f"{key}", key=key)
        settable = frozenset(self.schema.fields) - frozenset(self.fixed)
        options: dict[str, Any] = dict(self.defaults)
        options.update({k: v for k, v in (basic_args or {}).items() if k in settable})
        options.update({k: v for k, v in kwargs.items() if k not in self.ignored})
        options.update(self.fixed)
        return check_options(self.schema, options)

    def plan(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kwargs: Mapping[str, Any],
        basic_args: Mapping[str, Any] | None = None,
    ) -> BlockPlan:
        """Checks the options (see :meth:`options`) and resolves them into a plan."""
        return self.resolve(in_channels, out_channels, stride,
                            self.options(kwargs, basic_args))


class NamedOp(Protocol):
    """What a registry holds: a named entry and the option keys it accepts."""

    @property
    def name(self) -> str: ...

    @property
    def option_names(self) -> frozenset[str]: ...


OpT = TypeVar("OpT", bound=NamedOp)


class BlockRegistry(Generic[OpT]):
    """Name -> :class:`OpDef` (or, for the heads, ``HeadOp``). Duplicate names are errors;
    unknown names suggest close ones."""

    def __init__(self, kind: str = "op") -> None:
        self.kind = kind
        """What an entry is called in messages (``op``, ``head op``)."""
        self._ops: dict[str, OpT] = {}
        self.version = 0
        """Bumped on every change, so caches keyed by it never serve a replaced op."""

    def add(self, op: OpT) -> OpT:
        if op.name in self._ops:
            raise ValueError(f"{self.kind} {op.name!r} is already registered")
        self._ops[op.name] = op
        self.version += 1
        return op

    def remove(self, name: str) -> None:
        """Unregisters an op (for tests and plugins that replace their own ops)."""
        del self._ops[name]
        self.version += 1

    def get(self, name: str) -> OpT:
        try:
            return self._ops[name]
        except KeyError:
            raise ArchDefError(f"unknown {self.kind} {name!r}"
                               f"{did_you_mean(name, self._ops)}", op=name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def names(self) -> list[str]:
        return sorted(self._ops)

    def all_option_names(self) -> frozenset[str]:
        """Every option key some registered op understands (for checking ``basic_args``)."""
        names: set[str] = set()
        for op in self._ops.values():
            names |= op.option_names
        return frozenset(names)


BLOCKS: BlockRegistry[OpDef] = BlockRegistry()
"""The registry every part of fbnas reads."""


def register_family(
    name: str,
    options_type: type,
    resolve: Callable[[int, int, int, dict[str, Any]], BlockPlan],
    *,
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    ignored: tuple[str, ...] = (),
    description: str = "",
) -> OpDef:
    """Registers a named variant of a built-in family (options declared by a dataclass)."""
    schema = OptionSchema.from_dataclass(options_type)
    for key in list(fixed or {}) + list(defaults or {}):
        if key not in schema.fields:
            raise ValueError(f"{name}: preset {key!r} is not an option of {options_type}")
    return BLOCKS.add(OpDef(name, schema, resolve, FrozenKwargs(fixed or {}),
                            FrozenKwargs(defaults or {}), frozenset(ignored), description))


# --------------------------------------------------------------------------- users' own ops


@dataclass(frozen=True)
class FactoryPlan:
    """Plan of a user op given as a module factory; its cost is counted on the meta device."""

    factory: Callable[..., nn.Module]
    in_channels: int
    requested_out: int
    stride: int
    options: FrozenKwargs

    def build(self) -> nn.Module:
        try:
            return self.factory(self.in_channels, self.requested_out, self.stride,
                                **thaw(self.options))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArchDefError(f"the op's factory failed: {exc}") from exc

    @property
    def out_channels(self) -> int:
        with torch.device("meta"):
            module = self.build()
        return int(getattr(module, "out_channels", self.requested_out))

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        from fbnas.blocks.counting import count_module

        with torch.device("meta"):
            module = self.build()
        try:
            params, macs, out_shape = count_module(module, (1, self.in_channels, *in_hw))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArchDefError(f"the op fails on a {in_hw[0]}x{in_hw[1]} input: {exc}") from exc
        return Cost(params, macs), (out_shape[-2], out_shape[-1])


def register_block(
    name: str,
    *,
    ignored: tuple[str, ...] = (),
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: registers ``f(in_channels, out_channels, stride, *, options...)`` as an op.

    The factory's keyword options (with type hints and defaults) are the op's schema. If the
    module has an ``out_channels`` attribute it is used as the block's real output width.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        schema = OptionSchema.from_signature(factory)

        def resolve(in_channels: int, out_channels: int, stride: int,
                    options: dict[str, Any]) -> FactoryPlan:
            return FactoryPlan(factory, in_channels, out_channels, stride, FrozenKwargs(options))

        BLOCKS.add(OpDef(name, schema, resolve, ignored=frozenset(ignored),
                         description=description or (factory.__doc__ or "").strip()
                         .split("\n")[0]))
        return factory

    return decorator
