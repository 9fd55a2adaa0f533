"""Latency of any width setting of a slim network: measured grids per block + interpolation.

A latency table (:mod:`fbnas.cost.lut`) holds one entry per distinct block, but a slim
network has a block for every combination of its widths: no table can hold them all. Each
block's latency, however, depends only on the few search dimensions that set its own
widths (its input, hidden and output widths: at most three), and smoothly so: the MACs of
an inverted residual are ``HW * (in * mid + k^2 * mid + mid * out)``, *multilinear* in
(in, mid, out). So per block (and the classifier head) we measure a grid over its own
dimensions, every dimension at the multipliers ``levels``, and predict any other setting
by multilinear interpolation (bilinear for two dimensions), extrapolating linearly below
the lowest level. Where latency were exactly proportional to MACs, two levels would
already be exact; more levels follow the steps of real kernels (vector widths, cache
sizes).

The grid points are ordinary table entries: each is the static block that
:func:`fbnas.slim.extract_arch_spec` makes of the slim block at those widths, keyed and
measured like any block (:func:`fbnas.cost.lut.measure_table`: interleaved rounds, busy
detection, a resumable file). The sum over blocks is calibrated as tables are
(``scale * sum + offset``), on whole subnets timed end to end in the same rounds: the
uniform multipliers ``levels`` and a few random width vectors (:func:`calibration_wms`).
``benchmarks/slim_latency.py`` reports the accuracy against extracted subnets timed end to
end::

    predictor = build_width_latency(model, 224, "mbv2_lut.json")   # measures the grid
    predictor.save("mbv2_widths.json")
    predictor.predict_wm(model, wm)                                 # ms, any wm
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import (
    ArchItems,
    BuildSettings,
    Calibration,
    LatencyTable,
    LatencyTableError,
    Progress,
    arch_items,
    measure_table,
)
from fbnas.io import atomic_write_text, read_json_file
from fbnas.slim.dyn_model import DynModel
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.extract import extract_arch_spec
from fbnas.slim.models import SlimFBNet

FORMAT = "fbnas-slim-latency"
VERSION = 1
DEFAULT_LEVELS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class UnitGrid:
    """The measured grid of one block (or the head) over the dimensions that set it.

    Attributes:
        label: the block (``"stage 2, block 0 (ir_k3, SlimInvertedResidual)"``) or head.
        dims: the search dimensions its latency depends on (at most a few).
        axes: per dimension, the grid's channel counts (ascending).
        ms: latencies in row-major order over ``axes`` (the last axis fastest).
        keys: the latency-table key of every grid point, in the same order.
    """

    label: str
    dims: tuple[int, ...]
    axes: tuple[tuple[int, ...], ...]
    ms: tuple[float, ...]
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.axes):
            raise ValueError(f"{self.label}: {len(self.dims)} dims but {len(self.axes)} axes")
        size = math.prod(len(a) for a in self.axes)
        if len(self.ms) != size:
            raise ValueError(f"{self.label}: a grid of {size} points has {len(self.ms)} values")
        for axis in self.axes:
            if not axis or list(axis) != sorted(set(axis)):
                raise ValueError(f"{self.label}: grid axes must be ascending and distinct, "
                                 f"got {axis}")

    def interpolate(self, channels: Sequence[int]) -> float:
        """Multilinear interpolation (linear extrapolation outside the grid) at ``channels``,
        one count per dimension of ``dims``."""
        cells: list[tuple[int, float]] = []  # per axis: lower index, fraction to the next
        for axis, value in zip(self.axes, channels, strict=True):
            if len(axis) == 1:
                cells.append((0, 0.0))
                continue
            lower = max(0, min(len(axis) - 2, _bisect_right(axis, value) - 1))
            fraction = (value - axis[lower]) / (axis[lower + 1] - axis[lower])
            cells.append((lower, fraction))
        total = 0.0
        for corner in itertools.product((0, 1), repeat=len(self.axes)):
            weight, flat = 1.0, 0
            for (lower, fraction), step, axis in zip(cells, corner, self.axes, strict=True):
                weight *= fraction if step else 1.0 - fraction
                flat = flat * len(axis) + min(lower + step, len(axis) - 1)
            if weight:
                total += weight * self.ms[flat]
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "dims": list(self.dims),
                "axes": [list(a) for a in self.axes], "ms": list(self.ms),
                "keys": list(self.keys)}


def _bisect_right(values: Sequence[int], x: float) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < values[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class WidthLatencyModel:
    """Predicted latency (ms) of any width setting: interpolated blocks, calibrated sum.

    ``predicted = scale * sum(unit grids interpolated) + offset_ms``.

    Attributes:
        model: the slim network's name.
        search_dim: its number of dimensions (checked on every prediction).
        resolution, batch, num_classes: what was measured.
        levels: the width multipliers of the grids.
        units: one grid per block, then the head.
        scale, offset_ms: the calibration (see :class:`fbnas.cost.lut.Calibration`).
        device: where it was measured.
    """

    model: str
    search_dim: int
    resolution: int
    batch: int
    num_classes: int | None
    levels: tuple[float, ...]
    units: tuple[UnitGrid, ...]
    scale: float
    offset_ms: float
    device: DeviceInfo

    def block_ms(self, counts: Sequence[int]) -> list[float]:
        """Each unit's interpolated latency (uncalibrated) at per-dimension ``counts``."""
        if len(counts) != self.search_dim:
            raise SlimConfigError(f"{len(counts)} channel counts for a network of "
                                  f"search_dim {self.search_dim}")
        return [u.interpolate([counts[d] for d in u.dims]) for u in self.units]

    def predict_counts(self, counts: Sequence[int]) -> float:
        """Predicted latency (ms) of flat per-dimension channel counts (``ch`` flattened)."""
        return self.scale * sum(self.block_ms(counts)) + self.offset_ms

    def predict_ch(self, model: DynModel, ch: Sequence[Any]) -> float:
        """Predicted latency (ms) of hierarchical counts ``ch`` (``model.decode_wm(wm)``)."""
        return self.predict_counts(model.channel_groups.flatten_ch(ch))

    def predict_wm(self, model: DynModel, wm: Sequence[float]) -> float:
        """Predicted latency (ms) of width multipliers ``wm``."""
        return self.predict_ch(model, model.decode_wm(wm))

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "unit": "ms", "model": self.model,
                "search_dim": self.search_dim, "resolution": self.resolution,
                "batch": self.batch, "num_classes": self.num_classes,
                "levels": list(self.levels), "scale": self.scale,
                "offset_ms": self.offset_ms, "device": self.device.to_dict(),
                "units": [u.to_dict() for u in self.units]}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the model as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WidthLatencyModel:
        """Reads a file written by :meth:`save`.

        Raises:
            LatencyTableError: missing, corrupted or not a width-latency file.
        """
        path = Path(path)
        data = read_json_file(path, "width-latency file", LatencyTableError,
                              "measure it again")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LatencyTableError(f"{str(path)!r} is not an fbnas width-latency file")
        if data.get("version") != VERSION:
            raise LatencyTableError(f"{str(path)!r} has version {data.get('version')}; this "
                                    f"fbnas reads {VERSION}")
        try:
            units = tuple(UnitGrid(u["label"], tuple(u["dims"]),
                                   tuple(tuple(a) for a in u["axes"]),
                                   tuple(float(v) for v in u["ms"]), tuple(u.get("keys", ())))
                          for u in data["units"])
            return cls(str(data["model"]), int(data["search_dim"]), int(data["resolution"]),
                       int(data["batch"]), data.get("num_classes"),
                       tuple(float(v) for v in data["levels"]), units, float(data["scale"]),
                       float(data["offset_ms"]), DeviceInfo(**data["device"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"width-latency file {str(path)!r} is malformed: {exc}"
                                    ) from None


# --------------------------------------------------------------------------- the grid


def unit_dims(model: DynModel) -> list[tuple[int, ...]]:
    """The search dimensions that set each unit's widths (its input and its own), per unit.

    Found through the public maps alone: narrowing dimension ``d`` alone changes exactly the
    widths of the units that depend on it.
    """
    groups = model.channel_groups
    full = groups.check(model.decode_ch(model.channel_space))
    found: list[set[int]] = [set() for _ in full]
    for d in range(model.search_dim):
        wm = [1.0] * model.search_dim
        wm[d] = 1e-6  # the smallest count the rounding gives: differs from the full width
        narrow = groups.check(model.decode_ch(model.decode_wm(wm)))
        for u, (a, b) in enumerate(zip(full, narrow, strict=True)):
            if (a.in_channels, a.widths) != (b.in_channels, b.widths):
                found[u].add(d)
    return [tuple(sorted(dims)) for dims in found]


def _level_counts(model: DynModel, levels: Sequence[float]) -> list[dict[float, int]]:
    """Per dimension: the channel count of every level (levels that round alike merged)."""
    by_level = [model.channel_groups.flatten_ch(model.decode_wm([w] * model.search_dim))
                for w in levels]
    return [{w: counts[d] for w, counts in zip(levels, by_level, strict=True)}
            for d in range(model.search_dim)]


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    levels = tuple(sorted({float(w) for w in levels}))
    if len(levels) < 2 or not all(0.0 < w <= 1.0 for w in levels) or levels[-1] != 1.0:
        raise SlimConfigError(f"levels must hold at least two multipliers in (0, 1], "
                              f"including 1.0; got {levels}")
    return levels


@dataclass(frozen=True)
class _GridPoint:
    unit: int
    counts: tuple[int, ...]


def grid_items(model: SlimFBNet, resolution: int, levels: Sequence[float] = DEFAULT_LEVELS,
               num_classes: int | None = None, batch: int = 1
               ) -> tuple[list[tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]],
                          dict[_GridPoint, Any]]:
    """Every unit's grid (dims, axes) and the table item of each grid point.

    A grid point of unit ``u`` is the network at full width except ``u``'s dimensions,
    each set to one level; the item is that network's ``u``-th block (or its head), as
    the static builder makes it.
    """
    levels = _check_levels(levels)
    num_classes = model.num_classes if num_classes is None else num_classes
    counts_at = _level_counts(model, levels)
    grids = []
    items: dict[_GridPoint, Any] = {}
    for u, dims in enumerate(unit_dims(model)):
        per_dim = [sorted(set(counts_at[d].values())) for d in dims]
        grids.append((dims, tuple(tuple(a) for a in per_dim)))
        # One level per distinct count (the lowest level giving it).
        level_of = [{c: min(w for w, x in counts_at[d].items() if x == c) for c in axis}
                    for d, axis in zip(dims, per_dim, strict=True)]
        for point in itertools.product(*per_dim):
            wm = [1.0] * model.search_dim
            for d, count, lookup in zip(dims, point, level_of, strict=True):
                wm[d] = lookup[count]
            spec = extract_arch_spec(model, model.decode_ch(model.decode_wm(wm)))
            network = arch_items(spec, resolution, num_classes, batch)
            items[_GridPoint(u, tuple(point))] = network.items[u]
    return grids, items


def calibration_wms(model: DynModel, levels: Sequence[float], samples: int = 4,
                    seed: int = 0) -> list[tuple[str, list[float]]]:
    """The calibration networks: ``(name, wm)`` of each uniform level, then ``samples``
    random per-dimension vectors in ``[min(levels), 1]``.

    Uniform networks alone leave a bias: measured here, random non-uniform vectors ran
    ~8 % slower relative to their block sums than the uniform ones (width changes between
    blocks cost layout and cache work that no block timed alone sees).
    """
    levels = _check_levels(levels)
    rng = random.Random(seed)
    dims = model.search_dim
    networks = [(f"wm{w:g}", [w] * dims) for w in levels]
    networks += [(f"random{i}", [rng.uniform(levels[0], 1.0) for _ in range(dims)])
                 for i in range(samples)]
    return networks


def build_width_latency(model: SlimFBNet, resolution: int, table_path: str | os.PathLike,
                        levels: Sequence[float] = DEFAULT_LEVELS,
                        settings: BuildSettings | None = None,
                        num_classes: int | None = None, batch: int = 1,
                        progress: Progress | None = None,
                        calibration_samples: int = 4, seed: int = 0) -> WidthLatencyModel:
    """Measures the per-block width grids of ``model`` (resumable) and returns the predictor.

    Args:
        model: a slim network built from an arch def.
        resolution: input side.
        table_path: the latency table file holding the grid entries; entries already in it
            (a previous, interrupted build on the same device) are not measured again.
        levels: width multipliers of the grid, including 1.0; the same for every dimension.
            Queries below the lowest are extrapolated linearly.
        settings: how to measure (backend, threads, rounds, budget); default isolated
            blocks, torch eager, one thread.
        num_classes: classes of the head (default: the model's).
        batch: images per measured forward.
        calibration_samples, seed: random width vectors among the calibration networks
            (:func:`calibration_wms`); their blocks are measured too, in the same rounds.

    Raises:
        MachineBusyError: entries stayed disturbed by other processes (the table keeps
            what was measured; run again).
    """
    settings = settings or BuildSettings()
    levels = _check_levels(levels)
    num_classes = model.num_classes if num_classes is None else num_classes
    grids, items = grid_items(model, resolution, levels, num_classes, batch)
    device = DeviceInfo.current(settings.backend, settings.threads)
    table_path = Path(table_path)
    table = (LatencyTable.load(table_path, expect=device) if table_path.exists()
             else LatencyTable(device, batch=batch, rounds=settings.rounds))
    distinct = {item.key: item for item in items.values()}
    grid_network = ArchItems(f"{model.name} width grid", model.arch_spec, resolution,
                             num_classes, tuple(distinct), tuple(distinct.values()))
    calibration = [arch_items(extract_arch_spec(model, model.decode_ch(model.decode_wm(wm))),
                              resolution, num_classes, batch, name=f"{model.name}@{name}")
                   for name, wm in calibration_wms(model, levels, calibration_samples, seed)]
    measure_table(table, [grid_network, *calibration], settings, table_path, progress,
                  calibration=calibration)
    assert table.calibration is not None
    return _from_table(model, table, grids, items, resolution, batch, num_classes, levels)


def _from_table(model: SlimFBNet, table: LatencyTable,
                grids: Sequence[tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]],
                items: dict[_GridPoint, Any], resolution: int, batch: int,
                num_classes: int | None, levels: tuple[float, ...]) -> WidthLatencyModel:
    labels = [b.label for stage in model.stages for b in stage.blocks] + ["head"]
    units = []
    for u, (dims, axes) in enumerate(grids):
        keys = tuple(items[_GridPoint(u, point)].key for point in itertools.product(*axes))
        units.append(UnitGrid(labels[u], dims, axes, tuple(table.lookup(k) for k in keys),
                              keys))
    calibration = table.calibration or Calibration(1.0)
    return WidthLatencyModel(model.name, model.search_dim, resolution, batch, num_classes,
                             levels, tuple(units), calibration.scale, calibration.offset_ms,
                             table.device)


__all__ = [
    "DEFAULT_LEVELS",
    "UnitGrid",
    "WidthLatencyModel",
    "build_width_latency",
    "calibration_wms",
    "grid_items",
    "unit_dims",
]
