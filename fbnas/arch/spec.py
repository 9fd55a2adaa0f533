"""Typed, immutable architecture specs: what ``unify_arch_def`` returns and the builder reads.

A network is a flat tuple of :class:`BlockSpec` (stages are only grouping, as in the
mobile-vision format). Search code mutates an architecture by replacing specs
(``spec.replace(out_channels=48)``), never by editing dicts in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fbnas.arch.errors import ArchDefError


def freeze(value: Any) -> Any:
    """Returns an immutable copy: dicts become :class:`FrozenKwargs`, lists become tuples."""
    if isinstance(value, Mapping):
        return FrozenKwargs(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: plain dicts and lists, ready for JSON/YAML."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


class FrozenKwargs(Mapping):
    """A read-only, hashable, picklable mapping of block options (nested values frozen too)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {k: freeze(v) for k, v in (data or {}).items()})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, _hashable(v)) for k, v in self._data.items())))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self):
        return (FrozenKwargs, (thaw(self._data),))

    def to_dict(self) -> dict[str, Any]:
        """A plain (mutable, JSON-ready) copy."""
        return thaw(self._data)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


@dataclass(frozen=True)
class BlockSpec:
    """One block of a unified architecture.

    Attributes:
        op: registered op name (``ir_k5_sehsig_hs``).
        out_channels: requested output width before ``width_ratio`` scaling.
        stride: spatial stride; negative means ``|stride|`` x nearest upsampling.
        kwargs: the block's own options (its kwarg dicts merged left to right).
        stage_idx: index of the stage in the arch def.
        block_idx: index inside the stage, counted after repeats were expanded.
    """

    op: str
    out_channels: int
    stride: int = 1
    kwargs: FrozenKwargs = field(default_factory=FrozenKwargs)
    stage_idx: int = 0
    block_idx: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, FrozenKwargs):
            object.__setattr__(self, "kwargs", FrozenKwargs(self.kwargs))

    @property
    def name(self) -> str:
        """Module name in the built network (``xif{stage}_{block}``, as the reference)."""
        return f"xif{self.stage_idx}_{self.block_idx}"

    def replace(self, **changes: Any) -> BlockSpec:
        """Returns a copy with some fields changed (search code's mutation primitive)."""
        return dataclasses.replace(self, **changes)

    def to_unified_dict(self) -> dict[str, Any]:
        """The block in mobile-vision's unified form: ``{"block_op", "block_cfg":
        {"out_channels", "stride", **options}, "stage_idx", "block_idx"}``."""
        cfg = {"out_channels": self.out_channels, "stride": self.stride, **self.kwargs.to_dict()}
        return {"block_op": self.op, "block_cfg": cfg, "stage_idx": self.stage_idx,
                "block_idx": self.block_idx}

    def to_tuple(self) -> list[Any]:
        """The block as an arch-def entry ``[op, c, s, 1, {kwargs}]``."""
        entry: list[Any] = [self.op, self.out_channels, self.stride, 1]
        if self.kwargs:
            entry.append(self.kwargs.to_dict())
        return entry


@dataclass(frozen=True)
class HeadSpec:
    """A network's head as data: an op of the head registry and its options.

    The head is described like a block (a name plus options, no modules) so that one
    description is built by the builder, costed by the cost models and keyed in latency
    tables, and a task (classification, landmarks) only has to name its head. The input
    width is not part of it: the builder takes it from the last block.

    Attributes:
        op: a registered head op (``cls_head``: global pool, 1x1 conv, flatten).
        options: the op's options (``{"num_classes": 10}``).
    """

    op: str
    options: FrozenKwargs = field(default_factory=FrozenKwargs)

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or not self.op:
            raise TypeError(f"HeadSpec.op must be a head op name, got {self.op!r}")
        if not isinstance(self.options, FrozenKwargs):
            object.__setattr__(self, "options", FrozenKwargs(self.options))

    def to_dict(self) -> dict[str, Any]:
        """``{"op": ..., "options": {...}}``: plain data for run folders and checkpoints."""
        return {"op": self.op, "options": self.options.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "head") -> HeadSpec:
        """Inverse of :meth:`to_dict`; other keys, or a missing ``op``, are refused.

        Raises:
            ArchDefError: naming ``source`` and the bad key.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("op"), str):
            raise ArchDefError(f"{source} must be a dict with a string 'op', got {data!r}")
        unknown = sorted(set(data) - {"op", "options"})
        if unknown:
            raise ArchDefError(f"{source}: unknown key {unknown[0]!r} (a head has 'op' and "
                               f"'options')", key=unknown[0])
        options = data.get("options") or {}
        if not isinstance(options, Mapping):
            raise ArchDefError(f"{source}: 'options' must be a dict, got {options!r}",
                               key="options")
        return cls(data["op"], FrozenKwargs(options))


@dataclass(frozen=True)
class ArchSpec:
    """A unified architecture: flat blocks plus network-wide defaults.

    Attributes:
        blocks: every block in order, repeats expanded.
        basic_args: network-wide defaults; each op takes the keys it knows.
        input_size: the native input resolution, if the arch def names one.
    """

    blocks: tuple[BlockSpec, ...]
    basic_args: FrozenKwargs = field(default_factory=FrozenKwargs)
    input_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not isinstance(self.basic_args, FrozenKwargs):
            object.__setattr__(self, "basic_args", FrozenKwargs(self.basic_args))

    @property
    def num_stages(self) -> int:
        """Number of stages (the largest stage index + 1)."""
        return max((b.stage_idx for b in self.blocks), default=-1) + 1

    def stage(self, stage_idx: int) -> tuple[BlockSpec, ...]:
        """The blocks of one stage."""
        return tuple(b for b in self.blocks if b.stage_idx == stage_idx)

    def replace(self, **changes: Any) -> ArchSpec:
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_arch_def(self) -> dict[str, Any]:
        """Plain arch-def dict (one entry per block, ``n=1``) that unifies back to ``self``."""
        stages: list[list[list[Any]]] = [[] for _ in range(self.num_stages)]
        for block in self.blocks:
            stages[block.stage_idx].append(block.to_tuple())
        arch: dict[str, Any] = {"blocks": stages}
        if self.basic_args:
            arch["basic_args"] = self.basic_args.to_dict()
        if self.input_size is not None:
            arch["input_size"] = self.input_size
        return arch
