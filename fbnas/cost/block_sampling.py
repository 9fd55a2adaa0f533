"""Training blocks for a block latency model: a space-filling sample over block ranges.

The model must see the blocks it will be asked about, so the ranges come from the blocks
of the networks in question (a space's candidate and sampled networks, a zoo family, a
user's own list): blocks are grouped by op, input size, stride and their non-numeric
options (SE, padding, flags), and each group spans the channels and numeric options
(expansion) its blocks take. A Latin hypercube (``scipy.stats.qmc``, optimised for
centred discrepancy, fixed seed) then spreads ``n`` blocks evenly over the groups and
their ranges, channels on a log scale rounded to the channel step the group uses: more
information per measured block than random sampling, and reproducible.

Heads are sampled too (:class:`HeadRange`, :func:`head_ranges`): every network has one, a
table over a few networks holds one or two, and a search that changes the last stage's
width (FBNetV3) or the task's classes asks for a new one with every candidate. A share of
the sample (:func:`head_count`: a few percent, at least a handful) goes to heads spread
over the networks' head input channels, spatial sizes and numeric options (classes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import BlockSpec, FrozenKwargs, HeadSpec, thaw
from fbnas.blocks import BLOCKS, HEADS
from fbnas.builder import BlockTrace, FBNetBuilder, build_head_plan, build_plan
from fbnas.cost.block_model import BlockModelError, parse_block_key, parse_head_key
from fbnas.cost.lut import ArchItems, TableItem, block_key, head_key
from fbnas.errors import ConfigError, reject_unknown_keys

SAMPLE_LABEL = "model_sample"
"""Label prefix of sampled blocks (``model_sample:12``, heads ``model_sample:head12``)."""
HEAD_SHARE = 0.05
"""The share of a sample that goes to heads when there are head ranges..."""
MIN_HEADS = 5
"""... but at least this many, as long as heads stay a quarter of the sample at most."""


@dataclass(frozen=True)
class BlockRange:
    """A family of blocks to sample from: one op at one input size and stride, with its
    other options fixed, over ranges of channels and numeric options.

    Attributes:
        op: the registry op.
        in_hw: the input's spatial size.
        stride: the block stride.
        in_channels: (low, high), inclusive.
        out_channels: (low, high); ignored when ``same_channels``.
        channel_step: sampled channels are multiples of it.
        same_channels: output channels equal input channels (residual layers).
        numeric: ``{option: (low, high)}`` for numeric options (``expansion``); an
            integer option gets integers.
        options: the fixed options (everything else the blocks set).
    """

    op: str
    in_hw: tuple[int, int]
    stride: int
    in_channels: tuple[int, int]
    out_channels: tuple[int, int]
    channel_step: int = 1
    same_channels: bool = False
    numeric: FrozenKwargs = FrozenKwargs()
    options: FrozenKwargs = FrozenKwargs()

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"block range {self.op}: {name} must be 1 <= low <= high, "
                                 f"got {(low, high)}")
        if self.channel_step < 1:
            raise ValueError(f"block range {self.op}: channel_step must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "block range") -> BlockRange:
        """From ``{"op": "ir_k3", "in_hw": [28, 28], "stride": 1, "in_channels": [16, 64],
        "out_channels": [16, 64], "numeric": {"expansion": [1, 6]}, ...}``; unknown keys
        are refused."""
        reject_unknown_keys(data, cls, source)
        try:
            return cls(str(data["op"]), _pair(data["in_hw"]), int(data.get("stride", 1)),
                       _pair(data["in_channels"]),
                       _pair(data.get("out_channels", data["in_channels"])),
                       int(data.get("channel_step", 1)), bool(data.get("same_channels", False)),
                       FrozenKwargs({k: _pair(v, float) for k, v in
                                     (data.get("numeric") or {}).items()}),
                       FrozenKwargs(data.get("options") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "in_hw": list(self.in_hw), "stride": self.stride,
                "in_channels": list(self.in_channels), "out_channels": list(self.out_channels),
                "channel_step": self.channel_step, "same_channels": self.same_channels,
                "numeric": {k: list(v) for k, v in self.numeric.items()},
                "options": thaw(self.options)}


def _pair(value: Any, kind: type = int) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (kind(value), kind(value))
    low, high = value
    return (kind(low), kind(high))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class HeadRange:
    """A family of heads to sample from: one head op with its non-numeric options fixed,
    over ranges of input channels, input spatial size (square inputs stay square) and
    numeric options (``num_classes``).

    Attributes:
        op: the head op (:data:`fbnas.blocks.HEADS`).
        in_channels: (low, high), inclusive: the last block's width.
        in_h, in_w: (low, high) of the input feature map's height and width.
        channel_step: sampled input channels are multiples of it.
        numeric: ``{option: (low, high)}``, sampled on a log scale (classes span decades);
            an integer option gets integers.
        options: the fixed options.
    """

    op: str
    in_channels: tuple[int, int]
    in_h: tuple[int, int]
    in_w: tuple[int, int]
    channel_step: int = 1
    numeric: FrozenKwargs = FrozenKwargs()
    options: FrozenKwargs = FrozenKwargs()

    def __post_init__(self) -> None:
        for name in ("in_channels", "in_h", "in_w"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"head range {self.op}: {name} must be 1 <= low <= high, "
                                 f"got {(low, high)}")
        for name, (low, high) in self.numeric.items():
            if not 0 < low <= high:
                raise ValueError(f"head range {self.op}: {name} must be 0 < low <= high, "
                                 f"got {(low, high)}")
        if self.channel_step < 1:
            raise ValueError(f"head range {self.op}: channel_step must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "head range") -> HeadRange:
        """From ``{"op": "cls_head", "in_channels": [1024, 2048], "in_h": [3, 7], "numeric":
        {"num_classes": [10, 1000]}, ...}`` (``in_w`` defaults to ``in_h``); unknown keys
        are refused."""
        reject_unknown_keys(data, cls, source)
        try:
            in_h = _pair(data["in_h"])
            return cls(str(data["op"]), _pair(data["in_channels"]), in_h,
                       _pair(data.get("in_w", in_h)), int(data.get("channel_step", 1)),
                       FrozenKwargs({k: _number_pair(v) for k, v in
                                     (data.get("numeric") or {}).items()}),
                       FrozenKwargs(data.get("options") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "in_channels": list(self.in_channels), "in_h": list(self.in_h),
                "in_w": list(self.in_w), "channel_step": self.channel_step,
                "numeric": {k: list(v) for k, v in self.numeric.items()},
                "options": thaw(self.options)}


def _number_pair(value: Any) -> tuple:
    """A numeric option's (low, high): integers stay integers (``num_classes``)."""
    low, high = _pair(value, float)
    raw = value if isinstance(value, (list, tuple)) else (value, value)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        return (int(low), int(high))
    return (low, high)


def range_from_dict(data: Mapping[str, Any], source: str = "range") -> BlockRange | HeadRange:
    """A :class:`HeadRange` when ``data["op"]`` is a registered head op, else a
    :class:`BlockRange` (the form of ``--model-ranges`` files)."""
    op = data.get("op") if isinstance(data, Mapping) else None
    if isinstance(op, str) and op in HEADS and op not in BLOCKS:
        return HeadRange.from_dict(data, source)
    return BlockRange.from_dict(data, source)


def block_ranges(archs: Iterable[ArchItems], widen: float = 1.0) -> list[BlockRange]:
    """The block ranges the blocks of ``archs`` span (see the module docstring).

    ``widen`` stretches every channel and numeric range by that factor both ways (a few
    networks span little; the variants a search tries around them span more). Items
    that are no block of a registered op (the heads: see :func:`head_ranges`) are left out.
    """
    if widen < 1:
        raise ValueError(f"widen must be >= 1, got {widen}")
    groups: dict[tuple, list[tuple[int, int, dict[str, Any]]]] = {}
    for arch in archs:
        for key in dict.fromkeys(arch.keys):
            try:
                op, c, hw, out, stride, options = parse_block_key(key)
            except BlockModelError:
                continue
            fixed = {k: v for k, v in options.items() if not _is_number(v)}
            numeric = {k: v for k, v in options.items() if _is_number(v)}
            group = (op, hw, stride, FrozenKwargs(fixed), tuple(sorted(numeric)))
            groups.setdefault(group, []).append((c, out, numeric))
    ranges = []
    for (op, hw, stride, fixed, names), rows in groups.items():
        channels = [c for c, _, _ in rows] + [o for _, o, _ in rows]
        step = min(8, functools.reduce(math.gcd, channels))
        numeric = {n: (min(r[2][n] for r in rows), max(r[2][n] for r in rows)) for n in names}
        constant = {n: low for n, (low, high) in numeric.items() if low == high}
        numeric = {n: v for n, v in numeric.items() if n not in constant}
        fixed = FrozenKwargs({**fixed, **constant})
        integer = {n for n in numeric if all(isinstance(r[2][n], int) for r in rows)}
        numeric = {n: (math.floor(lo / widen), math.ceil(hi * widen)) if n in integer
                   else (lo / widen, hi * widen) for n, (lo, hi) in numeric.items()}
        ranges.append(BlockRange(
            op, hw, stride, _widened([c for c, _, _ in rows], widen, step),
            _widened([o for _, o, _ in rows], widen, step), step,
            all(c == o for c, o, _ in rows),
            FrozenKwargs({n: (int(lo), int(hi)) if n in integer else (float(lo), float(hi))
                          for n, (lo, hi) in numeric.items()}), fixed))
    return ranges


def head_ranges(archs: Iterable[ArchItems], widen: float = 1.0) -> list[HeadRange]:
    """The head ranges the heads of ``archs`` span: one per head op and non-numeric options,
    over the input channels, spatial sizes and numeric options (``num_classes``) the heads
    take, each stretched by ``widen`` both ways (spatial sizes and numeric options too: a
    search changes the resolution and the task its classes)."""
    if widen < 1:
        raise ValueError(f"widen must be >= 1, got {widen}")
    groups: dict[tuple, list[tuple[int, tuple[int, int], dict[str, Any]]]] = {}
    for arch in archs:
        for key in dict.fromkeys(arch.keys):
            try:
                op, c, hw, options = parse_head_key(key)
            except BlockModelError:
                continue
            fixed = {k: v for k, v in options.items() if not _is_number(v)}
            numeric = {k: v for k, v in options.items() if _is_number(v)}
            groups.setdefault((op, FrozenKwargs(fixed), tuple(sorted(numeric))), []).append(
                (c, hw, numeric))
    ranges = []
    for (op, fixed, names), rows in groups.items():
        channels = [c for c, _, _ in rows]
        step = min(8, functools.reduce(math.gcd, channels))
        numeric = {}
        for name in names:
            values = [r[2][name] for r in rows]
            low, high = min(values), max(values)
            if all(isinstance(v, int) for v in values):
                numeric[name] = (max(1, math.floor(low / widen)), math.ceil(high * widen))
            else:
                numeric[name] = (low / widen, high * widen)
        ranges.append(HeadRange(
            op, _widened(channels, widen, step),
            _spatial([hw[0] for _, hw, _ in rows], widen),
            _spatial([hw[1] for _, hw, _ in rows], widen), step,
            FrozenKwargs(numeric), fixed))
    return ranges


def _spatial(values: Sequence[int], widen: float) -> tuple[int, int]:
    return max(1, math.floor(min(values) / widen)), math.ceil(max(values) * widen)


def _widened(values: Sequence[int], widen: float, step: int) -> tuple[int, int]:
    low, high = min(values), max(values)
    if widen == 1 or high <= 4:  # a stem's RGB (or grey) input is no width to vary
        return low, high
    return max(step, int(low / widen) // step * step), int(high * widen) // step * step


def _channels(u: float, bounds: tuple[int, int], step: int) -> int:
    """``u`` in [0, 1) -> channels on a log scale between ``bounds``, a multiple of ``step``."""
    low, high = bounds
    value = low * (high / low) ** u
    rounded = max(step, round(value / step) * step)
    return int(min(max(rounded, low), high)) if (high - low) >= step else low


def head_count(n: int, with_blocks: bool = True) -> int:
    """How many of a sample of ``n`` go to heads: ``HEAD_SHARE`` of it, at least
    ``MIN_HEADS``, at most a quarter (all ``n`` when there are no block ranges)."""
    if not with_blocks:
        return max(n, 0)
    return max(0, min(max(round(HEAD_SHARE * n), MIN_HEADS), n // 4))


def sample_blocks(ranges: Sequence[BlockRange | HeadRange], n: int, seed: int = 0,
                  batch: int = 1, exclude: Collection[str] = ()) -> list[TableItem]:
    """``n`` distinct blocks spread over ``ranges`` by a Latin hypercube (fixed ``seed``).

    Dimension 0 picks the range (each about equally often), the others its input and
    output channels and numeric options. Narrow ranges give duplicates, which are dropped;
    further hypercubes (seeds ``seed + 1``...) top the sample up, up to 8 of them, so fewer
    than ``n`` come back only when the ranges hold fewer distinct blocks. Blocks the op
    refuses (a channel count it cannot split into its groups) are skipped, and so are the
    keys in ``exclude`` (blocks measured anyway: the networks' own).

    :class:`HeadRange` entries get :func:`head_count` of the ``n``, listed after the
    blocks: first the two corners of each range (the smallest head and the largest: every
    head feature grows with channels, size and classes, so the model's training ranges
    then span the sampled ranges and only heads outside them are flagged as
    extrapolated, though a handful of heads is few), then a hypercube of their own
    (channels, spatial size, numeric options). Heads the ranges cannot fill are not made
    up by blocks.
    """
    blocks = [r for r in ranges if isinstance(r, BlockRange)]
    heads = [r for r in ranges if isinstance(r, HeadRange)]
    n_heads = head_count(n, bool(blocks)) if heads else 0
    out = _hypercube(blocks, n - n_heads, seed,
                     lambda u, i: _sample_item(blocks, u, batch, i), exclude,
                     3 + max((len(r.numeric) for r in blocks), default=0))
    head_dims = 3 + max((len(r.numeric) for r in heads), default=0)
    corners = [[(j + 0.5) / len(heads), *[corner] * (head_dims - 1)]
               for corner in (0.0, 1.0) for j in range(len(heads))]
    out += _hypercube(heads, n_heads, seed,
                      lambda u, i: _sample_head(heads, u, batch, i), exclude, head_dims,
                      corners)
    return out


def _hypercube(ranges: Sequence[Any], n: int, seed: int,
               item_at: Callable[[Sequence[float], int], TableItem | None],
               exclude: Collection[str], dims: int,
               first: Sequence[Sequence[float]] = ()) -> list[TableItem]:
    """``n`` distinct items ``item_at(u, index)`` at the points ``first``, then at
    Latin-hypercube points ``u``."""
    from scipy.stats import qmc

    if not ranges or n <= 0:
        return []
    items: dict[str, TableItem] = {}
    for u in first:
        item = item_at(u, len(items))
        if item is not None and item.key not in items and item.key not in exclude:
            items[item.key] = item
        if len(items) == n:
            return list(items.values())
    for attempt in range(8):
        sampler = qmc.LatinHypercube(d=dims, seed=seed + attempt, optimization="random-cd")
        for u in sampler.random(n):
            item = item_at(u, len(items))
            if item is not None and item.key not in items and item.key not in exclude:
                items[item.key] = item
            if len(items) == n:
                return list(items.values())
    return list(items.values())


def _sample_item(ranges: Sequence[BlockRange], u: Sequence[float], batch: int,
                 index: int) -> TableItem | None:
    """The block at the unit-cube point ``u`` (``None``: the op refuses it)."""
    block_range = ranges[min(len(ranges) - 1, int(u[0] * len(ranges)))]
    c = _channels(u[1], block_range.in_channels, block_range.channel_step)
    out = c if block_range.same_channels else _channels(
        u[2], block_range.out_channels, block_range.channel_step)
    kwargs = dict(thaw(block_range.options))
    for j, (name, (low, high)) in enumerate(block_range.numeric.items()):
        value = low + (high - low) * u[3 + j]
        kwargs[name] = round(value) if isinstance(low, int) else round(value, 3)
    spec = BlockSpec(block_range.op, out, block_range.stride, FrozenKwargs(kwargs))
    # No builder: its basic_args (width_divisor) would be added to the options, while the
    # ranges' options are already the effective ones of the table keys.
    try:
        plan = BLOCKS.get(spec.op).plan(c, out, spec.stride, spec.kwargs)
        _, out_hw = plan.cost(block_range.in_hw)
    except (ValueError, TypeError, RuntimeError):  # ArchDefError: the op refuses it
        return None
    trace = BlockTrace(spec, c, plan.out_channels, plan, block_range.in_hw, out_hw,
                       requested_out_channels=out)
    key = block_key(trace, {})
    return TableItem(key, (batch, c, *block_range.in_hw), functools.partial(build_plan, trace),
                     f"{SAMPLE_LABEL}:{index}")


def _log_between(u: float, low: float, high: float) -> float:
    return low * (high / low) ** u


def _sample_head(ranges: Sequence[HeadRange], u: Sequence[float], batch: int,
                 index: int) -> TableItem | None:
    """The head at the unit-cube point ``u`` (``None``: the op refuses it)."""
    head_range = ranges[min(len(ranges) - 1, int(u[0] * len(ranges)))]
    c = _channels(u[1], head_range.in_channels, head_range.channel_step)
    # one coordinate for both sides: square maps (the usual input) stay square
    h = round(_log_between(u[2], *head_range.in_h))
    w = round(_log_between(u[2], *head_range.in_w))
    options = dict(thaw(head_range.options))
    for j, (name, (low, high)) in enumerate(head_range.numeric.items()):
        value = _log_between(u[3 + j], low, high)
        options[name] = round(value) if isinstance(low, int) else round(value, 3)
    try:
        trace = FBNetBuilder().trace_head(HeadSpec(head_range.op, FrozenKwargs(options)), c,
                                          (h, w))
    except (ArchDefError, ValueError, TypeError, RuntimeError):  # the op refuses it
        return None
    return TableItem(head_key(trace), (batch, c, h, w),
                     functools.partial(build_head_plan, trace), f"{SAMPLE_LABEL}:head{index}")
