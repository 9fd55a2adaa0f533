"""Channel groups: which layer widths are one search dimension, and the wm/ch/real_ch maps.

A slimmable network is a chain of *units* (blocks, or single layers such as a stem conv or
a classifier). Each unit sets some widths (an inverted residual: hidden and output), and
some of them must equal the width flowing into the unit: the output of a block with an
identity shortcut (the residual add), the output of a depthwise conv block (groups =
channels). Those ties chain through whole stages and even across stages (ResNet's first
stage adds onto the stem's output), so the free variables are the classes of a union-find
over all widths; each class is one search dimension ([S003]: "layers that share the same
channel counts ... are fused").

Three representations, as in the seed:

* ``wm``: flat, one width multiplier in (0, 1] per dimension (what optimisers search);
* ``ch``: the same dimensions as channel counts, hierarchical like ``channel_space``: an
  int for a part that is a single layer, a list for a stage (its own dimensions, shared
  widths first, then the others in order; ``[c_res, c_mid1, c_mid2, c_mid3]`` for a stage
  of three inverted residuals);
* ``real_ch``: one count per layer width, hierarchical per part (a stage lists each block's
  widths in order: ``[c_mid1, c_res, c_mid2, c_res, c_mid3, c_res]``).

This module is plain Python (no torch), so decoding stays cheap inside search loops.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fbnas.arch.rounding import round_channels
from fbnas.slim.errors import SlimConfigError

Tie = Literal["residual", "depthwise"]

_TIE_REASONS = {
    "residual": "the residual add needs",
    "depthwise": "a depthwise conv (groups = channels) needs",
}


@dataclass(frozen=True)
class WidthSlot:
    """One width a unit sets.

    Attributes:
        name: its role in the unit (``"mid"``, ``"out"``).
        max_channels: the full width.
        tie: why it must equal the unit's input width, or None when it is free.
    """

    name: str
    max_channels: int
    tie: Tie | None = None


@dataclass(frozen=True)
class UnitLayout:
    """The widths of one unit (a block, or a single layer used as a part).

    Attributes:
        label: where it sits, for error messages.
        slots: the widths it sets, in the order ``set_out_ch`` takes them.
        output: index of the slot that leaves the unit; None: the unit passes its input
            width through (pools) or has a fixed output (``fixed_output``).
        fixed_output: an output width that is not searchable (a classifier's classes).
    """

    label: str
    slots: tuple[WidthSlot, ...]
    output: int | None
    fixed_output: int | None = None


@dataclass(frozen=True)
class PartLayout:
    """A top-level part of a network: a stage (a list entry) or a single layer (an int).

    Attributes:
        label: ``"stage 2"`` or the layer's path.
        units: its units in forward order.
        scalar: a single layer whose one width is an int in ``ch`` and ``real_ch``; a part
            with ``scalar`` and no slots (a fixed-output head) has no entry at all.
    """

    label: str
    units: tuple[UnitLayout, ...]
    scalar: bool = False

    @property
    def num_slots(self) -> int:
        return sum(len(u.slots) for u in self.units)

    @property
    def has_entry(self) -> bool:
        return not self.scalar or self.num_slots > 0


def check_widths(unit: UnitLayout, in_channels: int, widths: Sequence[Any],
                 where: str) -> tuple[int, ...]:
    """Returns ``widths`` as ints after checking count, range and ties to the input width.

    Raises:
        SlimConfigError: naming ``where`` (e.g. ``real_ch[2]``), the unit and the width.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise SlimConfigError(f"{where} ({unit.label}): expected {len(unit.slots)} widths, "
                              f"got {widths!r}")
    if len(widths) != len(unit.slots):
        raise SlimConfigError(f"{where} ({unit.label}): expected {len(unit.slots)} widths "
                              f"({', '.join(s.name for s in unit.slots)}), got {len(widths)}")
    result = []
    for slot, value in zip(unit.slots, widths, strict=True):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise SlimConfigError(f"{where} ({unit.label}): the {slot.name} width must be an "
                                  f"int, got {value!r}")
        value = int(value)
        if not 1 <= value <= slot.max_channels:
            raise SlimConfigError(f"{where} ({unit.label}): the {slot.name} width must be in "
                                  f"[1, {slot.max_channels}], got {value}")
        if slot.tie is not None and value != in_channels:
            raise SlimConfigError(f"{where} ({unit.label}): {_TIE_REASONS[slot.tie]} the "
                                  f"{slot.name} width to equal the input width "
                                  f"{in_channels}, got {value}")
        result.append(value)
    return tuple(result)


@dataclass(frozen=True)
class UnitSetting:
    """What :meth:`ChannelGroups.check` returns per unit: its input width and its widths."""

    part: int
    unit: int
    in_channels: int
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Dimension:
    """One search dimension: a class of tied widths.

    Attributes:
        max_channels: the full width (the ``channel_space`` entry).
        part: index of the part that owns it (where its first width sits).
        widths: ``"label.slot"`` of every width in the class, in forward order.
    """

    max_channels: int
    part: int
    widths: tuple[str, ...]

    def describe(self) -> str:
        return f"{' = '.join(self.widths)} (max {self.max_channels})"


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the root is the earliest width


class ChannelGroups:
    """The search dimensions of a chain of parts and the maps between wm, ch and real_ch.

    Args:
        parts: the network's parts in forward order.
        in_channels: the width entering the first part (3 for images); None: an external,
            unknown width (counting the dimensions of a stage on its own).
        width_divisor: the granularity :meth:`decode_wm` rounds to, with the reference rule
            (:func:`fbnas.arch.rounding.round_channels`).
    """

    def __init__(self, parts: Sequence[PartLayout], in_channels: int | None,
                 width_divisor: int = 1) -> None:
        if not isinstance(width_divisor, int) or width_divisor < 1:
            raise SlimConfigError(f"width_divisor must be an int >= 1, got {width_divisor!r}")
        self.parts = tuple(parts)
        self.in_channels = in_channels
        self.width_divisor = width_divisor
        uf = _UnionFind()
        fixed: dict[int, int] = {}  # slot -> fixed width
        names: list[str] = []
        owner: list[int] = []
        input_slot = uf.add()
        names.append("input")
        owner.append(-1)
        if in_channels is not None:
            fixed[input_slot] = in_channels
        self._slot_ids: list[list[list[int]]] = []
        current = input_slot
        for p, part in enumerate(self.parts):
            part_ids = []
            for unit in part.units:
                ids = []
                for slot in unit.slots:
                    i = uf.add()
                    names.append(f"{unit.label}.{slot.name}")
                    owner.append(p)
                    if slot.tie is not None:
                        uf.union(i, current)
                    ids.append(i)
                part_ids.append(ids)
                if unit.output is not None:
                    current = ids[unit.output]
                elif unit.fixed_output is not None:
                    current = uf.add()
                    names.append(f"{unit.label}.out")
                    owner.append(p)
                    fixed[current] = unit.fixed_output
            self._slot_ids.append(part_ids)
        self._input_slot = input_slot
        self._build_dims(uf, fixed, names, owner)

    def _build_dims(self, uf: _UnionFind, fixed: dict[int, int], names: list[str],
                    owner: list[int]) -> None:
        classes: dict[int, list[int]] = {}
        for i in range(len(uf.parent)):
            classes.setdefault(uf.find(i), []).append(i)
        maxima: dict[int, int] = {}
        for p, part in enumerate(self.parts):
            for unit, ids in zip(part.units, self._slot_ids[p], strict=True):
                for slot, i in zip(unit.slots, ids, strict=True):
                    maxima[i] = slot.max_channels
        self._fixed_value: dict[int, int] = {}
        self._external: set[int] = set()
        dims_of_part: list[tuple[list[int], list[int]]] = [([], []) for _ in self.parts]
        for root, members in classes.items():
            fixed_values = {fixed[m] for m in members if m in fixed}
            if len(fixed_values) > 1:
                raise SlimConfigError(f"widths {', '.join(names[m] for m in members)} are tied "
                                      f"but fixed to different values {sorted(fixed_values)}")
            if self.in_channels is None and self._input_slot in members:
                self._external.add(root)
                continue
            if fixed_values:
                self._fixed_value[root] = fixed_values.pop()
                continue
            widths = {maxima[m] for m in members if m in maxima}
            if len(widths) != 1:
                raise SlimConfigError(f"widths {', '.join(names[m] for m in members)} are tied "
                                      f"but have different full widths {sorted(widths)}")
            shared, single = dims_of_part[owner[root]]
            (shared if len(members) > 1 else single).append(root)
        self.dims: list[Dimension] = []
        self._dim_of_root: dict[int, int] = {}
        self._part_dims: list[list[int]] = []
        for p, (shared, single) in enumerate(dims_of_part):
            own = []
            for root in sorted(shared) + sorted(single):
                members = classes[root]
                self._dim_of_root[root] = len(self.dims)
                own.append(len(self.dims))
                self.dims.append(Dimension(maxima[root], p, tuple(names[m] for m in members)))
            self._part_dims.append(own)
        self._uf = uf
        for part in self.parts:
            if part.scalar and part.num_slots > 1:
                raise SlimConfigError(f"{part.label}: a single-layer part has one width")

    # ------------------------------------------------------------------ the space

    @property
    def search_dim(self) -> int:
        """The number of independent widths."""
        return len(self.dims)

    def part_search_dim(self, part: int) -> int:
        """The number of dimensions a part owns."""
        return len(self._part_dims[part])

    @property
    def channel_space(self) -> list[Any]:
        """The full width of each dimension, hierarchical (an int per single-layer part)."""
        return self._arrange([d.max_channels for d in self.dims])

    def arrange(self, values: Sequence[int]) -> list[Any]:
        """Flat per-dimension counts as a hierarchical ``ch`` (the shape of
        ``channel_space``)."""
        return self._arrange(values)

    def _arrange(self, values: Sequence[int]) -> list[Any]:
        out: list[Any] = []
        for p, part in enumerate(self.parts):
            if not part.has_entry:
                continue
            own = [values[d] for d in self._part_dims[p]]
            out.append(own[0] if part.scalar else own)
        return out

    def unit_dimensions(self) -> list[list[tuple[int | None, ...]]]:
        """Per part, per unit: the dimension of each of its width slots (None: a fixed
        width), in ``set_out_ch`` order; tied slots name the same dimension."""
        def dim(slot: int) -> int | None:
            root = self._uf.find(slot)
            return None if root in self._fixed_value or root in self._external else (
                self._dim_of_root[root])

        return [[tuple(dim(i) for i in ids) for ids in part] for part in self._slot_ids]

    def describe(self, dim: int) -> str:
        """``"dimension 5 (stage 2.xif2_0.out = ... (max 32))"`` for messages."""
        return f"dimension {dim}: {self.dims[dim].describe()}"

    # ------------------------------------------------------------------ wm -> ch

    def decode_wm(self, wm: Sequence[float]) -> list[Any]:
        """Channel counts (hierarchical, like ``channel_space``) of width multipliers.

        ``c = round_channels(w * C_max, width_divisor)``, capped at ``C_max``; ``w = 1``
        gives ``C_max`` exactly, so the full-width network is the original one.
        """
        values = _as_list(wm, "wm")
        if len(values) != self.search_dim:
            raise SlimConfigError(f"wm has {len(values)} values but the network has "
                                  f"search_dim {self.search_dim}")
        counts = []
        for d, w in enumerate(values):
            if isinstance(w, bool) or not isinstance(w, numbers.Real):
                raise SlimConfigError(f"wm[{d}] must be a number, got {w!r} "
                                      f"({self.describe(d)})")
            w = float(w)
            if not (0.0 < w <= 1.0):  # also refuses NaN
                raise SlimConfigError(f"wm[{d}] = {w} is outside (0, 1] ({self.describe(d)})")
            full = self.dims[d].max_channels
            counts.append(full if w == 1.0
                          else min(full, round_channels(w * full, self.width_divisor)))
        return self._arrange(counts)

    # ------------------------------------------------------------------ ch -> real_ch

    def flatten_ch(self, ch: Sequence[Any]) -> list[int]:
        """The flat per-dimension counts of a hierarchical ``ch`` (checked)."""
        entries = _as_list(ch, "ch")
        parts = [p for p, part in enumerate(self.parts) if part.has_entry]
        if len(entries) != len(parts):
            raise SlimConfigError(f"ch has {len(entries)} entries but channel_space has "
                                  f"{len(parts)}")
        flat = [0] * self.search_dim
        for k, (p, entry) in enumerate(zip(parts, entries, strict=True)):
            own = self._part_dims[p]
            if self.parts[p].scalar:
                values, where = [entry], [f"ch[{k}]"]
            else:
                values = _as_list(entry, f"ch[{k}] ({self.parts[p].label})")
                where = [f"ch[{k}][{i}]" for i in range(len(values))]
                if len(values) != len(own):
                    raise SlimConfigError(f"ch[{k}] ({self.parts[p].label}) has {len(values)} "
                                          f"values, expected {len(own)}")
            for d, value, w in zip(own, values, where, strict=True):
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise SlimConfigError(f"{w} must be an int, got {value!r} "
                                          f"({self.describe(d)})")
                if not 1 <= value <= self.dims[d].max_channels:
                    raise SlimConfigError(f"{w} = {value} is outside [1, "
                                          f"{self.dims[d].max_channels}] ({self.describe(d)})")
                flat[d] = int(value)
        return flat

    def decode_ch(self, ch: Sequence[Any]) -> list[Any]:
        """One count per layer width (``real_ch``) of per-dimension counts ``ch``."""
        flat = self.flatten_ch(ch)
        real_ch: list[Any] = []
        for p, part in enumerate(self.parts):
            if not part.has_entry:
                continue
            values = [self._value(i, flat) for ids in self._slot_ids[p] for i in ids]
            real_ch.append(values[0] if part.scalar else values)
        return real_ch

    def _value(self, slot: int, flat: Sequence[int]) -> int:
        root = self._uf.find(slot)
        if root in self._fixed_value:
            return self._fixed_value[root]
        return flat[self._dim_of_root[root]]

    # ------------------------------------------------------------------ real_ch

    def check(self, real_ch: Sequence[Any]) -> list[UnitSetting]:
        """Each unit's input width and widths under ``real_ch``, checked.

        Raises:
            SlimConfigError: for a wrong structure, a width out of range, or a width that
                breaks a residual or depthwise tie, naming the entry and the layer.
        """
        if self.in_channels is None:
            raise SlimConfigError("these channel groups have an external input width")
        entries = _as_list(real_ch, "real_ch")
        parts = [p for p, part in enumerate(self.parts) if part.has_entry]
        if len(entries) != len(parts):
            raise SlimConfigError(f"real_ch has {len(entries)} entries but the network has "
                                  f"{len(parts)} parts with widths")
        by_part = dict(zip(parts, range(len(entries)), strict=True))
        settings = []
        current = self.in_channels
        for p, part in enumerate(self.parts):
            if p in by_part:
                k = by_part[p]
                entry = entries[k]
                values = [entry] if part.scalar else _as_list(entry, f"real_ch[{k}]")
                if not part.scalar and len(values) != part.num_slots:
                    raise SlimConfigError(f"real_ch[{k}] ({part.label}) has {len(values)} "
                                          f"widths, expected {part.num_slots}")
            else:
                k, values = -1, []
            start = 0
            for u, unit in enumerate(part.units):
                n = len(unit.slots)
                where = f"real_ch[{k}]" if part.scalar else f"real_ch[{k}][{start}:{start + n}]"
                widths = check_widths(unit, current, values[start:start + n], where)
                settings.append(UnitSetting(p, u, current, widths))
                start += n
                if unit.output is not None:
                    current = widths[unit.output]
                elif unit.fixed_output is not None:
                    current = unit.fixed_output
        return settings


def _as_list(value: Any, what: str) -> list[Any]:
    """A list of a sequence, numpy array or tensor (``np.random.rand(search_dim)`` works)."""
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SlimConfigError(f"{what} must be a list, got {value!r}")
    return list(value)


__all__ = [
    "ChannelGroups",
    "Dimension",
    "PartLayout",
    "UnitLayout",
    "UnitSetting",
    "WidthSlot",
    "check_widths",
]
