"""Latency lookup tables: measure each distinct block once, predict whole networks.

A table entry is keyed by everything that decides a block's cost — the op, its effective
options (padding, groups, expansion, activation... after ``basic_args`` and presets), its
input shape and its width — so any registered op works, users' own included. Device,
backend, threads and library versions describe the whole table (metadata), not a key.

A network's latency is predicted as ``scale * sum(entries) + offset``: blocks timed alone
systematically under-estimate the whole network (framework overhead between blocks, cache
effects; ~20 % here), so ``scale`` and ``offset`` are fitted on a few full networks timed
end to end in the same rounds as the entries (see ``docs/benchmarks.md``).

Files are JSON, written atomically (temp file, fsync, rename) after every measured entry,
so an interrupted build loses nothing and continues where it stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from fbnas.arch.spec import ArchSpec, FrozenKwargs, HeadSpec, thaw
from fbnas.blocks import BLOCKS, HEADS
from fbnas.blocks.heads import head_classes, head_spec_for
from fbnas.builder import BlockTrace, FBNetBuilder, HeadTrace, build_head_plan, build_plan
from fbnas.cost.latency import Backend, DeviceInfo, measure, reference_ms
from fbnas.errors import FbnasError
from fbnas.io import atomic_write_text
from fbnas.zoo.model import ArchSource, build_model, resolve_arch

logger = logging.getLogger(__name__)

TABLE_FORMAT = "fbnas-latency-table"
TABLE_VERSION = 1
BUSY_FACTOR = 1.5
"""A round whose reference workload runs this much slower than its quiet minimum is busy."""


class LatencyTableError(FbnasError, ValueError):
    """A table file that cannot be used (corrupted, wrong format) or a lookup that fails."""


class MissingEntriesError(LatencyTableError):
    """The table has no entry for some blocks of a network; lists their keys."""

    def __init__(self, missing: Sequence[str], what: str = "") -> None:
        self.missing = list(missing)
        shown = "\n  ".join(self.missing[:10])
        more = f"\n  ... ({len(self.missing)} in all)" if len(self.missing) > 10 else ""
        super().__init__(f"the latency table has no entry for {len(self.missing)} block(s)"
                         f"{' of ' + what if what else ''} (measure them with "
                         f"--fill-missing, or build the table over this arch):\n  {shown}{more}")


# --------------------------------------------------------------------------- keys


def _value_text(value: Any) -> str:
    return json.dumps(thaw(value), sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=65536)
def _option_text(op: str, kwargs: FrozenKwargs, basic_args: FrozenKwargs) -> str:
    """Options that differ from the op's own defaults, as ``k=v`` text (sorted)."""
    entry = BLOCKS.get(op)
    options = entry.options(kwargs, basic_args)
    defaults = entry.options({}, {})
    return ",".join(f"{k}={_value_text(v)}" for k, v in sorted(options.items())
                    if k not in defaults or thaw(defaults[k]) != thaw(v))


def block_key(trace: BlockTrace, basic_args: Mapping[str, Any]) -> str:
    """The table key of a traced block: ``op|CxHxW|out|s<stride>|options``."""
    if trace.in_hw is None:
        raise ValueError("block_key needs a trace made with a resolution")
    h, w = trace.in_hw
    options = _option_text(trace.spec.op, trace.spec.kwargs, FrozenKwargs(basic_args))
    return (f"{trace.spec.op}|{trace.in_channels}x{h}x{w}|{trace.requested_out_channels}|"
            f"s{trace.spec.stride}|{options}")


def head_key(trace: HeadTrace) -> str:
    """The table key of a traced head: ``op|CxHxW|required options[|other options]``.

    The options the head requires are written as bare values in the op's declared order,
    the others only where they differ from their defaults, as ``k=v``. So the classifier's
    key is ``cls_head|CxHxW|classes``, the key tables have always used for it.
    """
    if trace.in_hw is None:
        raise ValueError("head_key needs a head trace made with an input size")
    op = HEADS.get(trace.spec.op)
    options = op.options(trace.spec.options)
    required = op.schema.required()
    values = ",".join(_value_text(options[name]) for name in required)
    others = ",".join(f"{k}={_value_text(v)}" for k, v in sorted(options.items())
                      if k not in required and thaw(op.schema.fields[k][1]) != thaw(v))
    h, w = trace.in_hw
    return (f"{trace.spec.op}|{trace.in_channels}x{h}x{w}|{values}"
            + (f"|{others}" if others else ""))


@dataclass(frozen=True)
class TableItem:
    """Something a table measures: its key, how to build it, its input shape."""

    key: str
    input_shape: tuple[int, ...]
    build: Callable[[], nn.Module]
    label: str


@dataclass(frozen=True)
class ArchItems:
    """The items of one network, in order (blocks then head), and the network itself.

    ``head`` is the head's description; left None with ``num_classes`` set it is that
    classifier (the form callers wrote before heads were data).
    """

    name: str
    spec: ArchSpec
    resolution: int
    num_classes: int | None
    keys: tuple[str, ...]
    items: tuple[TableItem, ...]
    head: HeadSpec | None = None

    def __post_init__(self) -> None:
        if self.head is None and self.num_classes:
            object.__setattr__(self, "head", head_spec_for(self.num_classes, None))

    def build(self) -> nn.Module:
        """The whole network, for end-to-end measurement."""
        return build_model(self.spec, num_classes=None, head=self.head).eval()


def arch_items(arch: ArchSource | ArchSpec, resolution: int | None = None,
               num_classes: int | None = 1000, batch: int = 1,
               name: str | None = None, *, head: HeadSpec | None = None) -> ArchItems:
    """The table items (blocks + head) of a network at a resolution.

    ``head`` (a task's ``head_spec``) replaces the classifier of ``num_classes``.
    """
    spec, source_name, native = resolve_arch(arch)
    name = name or source_name
    resolution = resolution or native
    head = head_spec_for(num_classes, head)
    builder = FBNetBuilder()
    builder.add_basic_args(spec.basic_args)
    traces = builder.trace(spec, resolution=resolution)
    items = []
    for trace in traces:
        key = block_key(trace, builder.basic_args)
        items.append(TableItem(key, (batch, trace.in_channels, *trace.in_hw),
                               functools.partial(build_plan, trace), f"{name}:{trace.name}"))
    if head is not None:
        last = traces[-1]
        head_trace = builder.trace_head(head, last.out_channels, last.out_hw)
        items.append(TableItem(head_key(head_trace), (batch, last.out_channels, *last.out_hw),
                               functools.partial(build_head_plan, head_trace), f"{name}:head"))
    return ArchItems(name, spec, resolution, head_classes(head), tuple(i.key for i in items),
                     tuple(items), head)


def distinct_items(archs: Iterable[ArchItems]) -> list[TableItem]:
    """Every distinct item of several networks, first occurrence kept."""
    seen: dict[str, TableItem] = {}
    for arch in archs:
        for item in arch.items:
            seen.setdefault(item.key, item)
    return list(seen.values())


# --------------------------------------------------------------------------- the table


@dataclass
class LatencyEntry:
    """One measured item: per-round medians (ms) and whether every round was busy."""

    rounds_ms: list[float] = field(default_factory=list)
    runs: int = 0
    spread: float = 0.0
    busy: bool = False

    @property
    def ms(self) -> float:
        """The lowest per-round median: the least disturbed measurement."""
        return min(self.rounds_ms)


@dataclass(frozen=True)
class Calibration:
    """``predicted = scale * sum(entries) + offset_ms``, fitted on networks measured end to
    end (the offset is the per-network overhead: framework calls between blocks)."""

    scale: float
    networks: tuple[dict, ...] = ()
    offset_ms: float = 0.0

    def to_dict(self) -> dict:
        return {"scale": self.scale, "offset_ms": self.offset_ms,
                "networks": list(self.networks)}


@dataclass(frozen=True)
class Prediction:
    """A network's predicted latency and where it comes from."""

    name: str
    resolution: int
    block_ms: tuple[tuple[str, float], ...]
    sum_ms: float
    scale: float
    offset_ms: float = 0.0

    @property
    def predicted_ms(self) -> float:
        return self.sum_ms * self.scale + self.offset_ms


class LatencyTable:
    """Key -> measured latency (ms), with the device/backend it was measured on.

    Example:
        >>> table = LatencyTable.load("lut.json")            # doctest: +SKIP
        >>> table.predict("fbnet_a").predicted_ms             # doctest: +SKIP
        18.7
    """

    def __init__(self, device: DeviceInfo, batch: int = 1, rounds: int = 3,
                 entries: dict[str, LatencyEntry] | None = None,
                 calibration: Calibration | None = None,
                 quiet_reference_ms: float | None = None,
                 networks: dict[str, LatencyEntry] | None = None) -> None:
        self.device = device
        self.batch = batch
        self.rounds = rounds
        self.entries: dict[str, LatencyEntry] = entries or {}
        self.networks: dict[str, LatencyEntry] = networks or {}
        """Whole networks timed end to end among the entries (:func:`network_key` ->
        rounds), kept so that a resumed build still calibrates on every round."""
        self.calibration = calibration
        self.quiet_reference_ms = quiet_reference_ms
        """The fastest time of :func:`reference_ms` seen while building: the quiet speed."""

    # ------------------------------------------------------------------ lookup

    def __contains__(self, key: object) -> bool:
        entry = self.entries.get(key)  # type: ignore[arg-type]
        return entry is not None and bool(entry.rounds_ms) and not entry.busy

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, key: str) -> float:
        """The latency of one key (ms); a missing or busy entry raises."""
        if key not in self:
            raise MissingEntriesError([key])
        return self.entries[key].ms

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self]

    @property
    def scale(self) -> float:
        return self.calibration.scale if self.calibration else 1.0

    def predict(self, arch: ArchSource | ArchSpec | ArchItems,
                resolution: int | None = None, num_classes: int | None = 1000, *,
                head: HeadSpec | None = None) -> Prediction:
        """Predicted latency of a network: ``scale * sum`` over its blocks and head."""
        items = arch if isinstance(arch, ArchItems) else arch_items(
            arch, resolution, num_classes, self.batch, head=head)
        missing = self.missing(items.keys)
        if missing:
            raise MissingEntriesError(missing, items.name)
        per_block = tuple((item.label.split(":", 1)[1], self.entries[item.key].ms)
                          for item in items.items)
        return Prediction(items.name, items.resolution, per_block,
                          sum(ms for _, ms in per_block), self.scale,
                          self.calibration.offset_ms if self.calibration else 0.0)

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "unit": "ms",
            "device": self.device.to_dict(),
            "batch": self.batch,
            "rounds": self.rounds,
            "quiet_reference_ms": self.quiet_reference_ms,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "entries": _entries_dict(self.entries),
            "networks": _entries_dict(self.networks),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Writes the table atomically: a reader never sees a half-written file."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike,
             expect: DeviceInfo | None = None) -> LatencyTable:
        """Reads a table; warns (naming the fields) if it comes from another device/setup."""
        path = Path(path)
        if not path.is_file():
            raise LatencyTableError(f"latency table {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LatencyTableError(f"latency table {str(path)!r} is corrupted or truncated "
                                    f"({exc}); rebuild it or restore a copy") from None
        table = cls.from_dict(data, str(path))
        current = expect or DeviceInfo.current(table.device.backend, table.device.threads,
                                               table.device.device)
        differences = table.device.differences(current)
        if differences:
            logger.warning("latency table %s was measured elsewhere: %s", path,
                           "; ".join(differences))
        return table

    @classmethod
    def from_dict(cls, data: Any, source: str = "table") -> LatencyTable:
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise LatencyTableError(f"{source} is not an fbnas latency table")
        if data.get("version") != TABLE_VERSION:
            raise LatencyTableError(f"{source} has table version {data.get('version')}; this "
                                    f"fbnas reads version {TABLE_VERSION}")
        try:
            device = DeviceInfo(**data["device"])
            entries = _entries_from_dict(data["entries"])
            networks = _entries_from_dict(data.get("networks") or {})
            cal = data.get("calibration")
            calibration = (Calibration(float(cal["scale"]), tuple(cal.get("networks", ())),
                                       float(cal.get("offset_ms", 0.0)))
                           if cal else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"{source} is malformed: {exc}") from None
        quiet = data.get("quiet_reference_ms")
        return cls(device, int(data.get("batch", 1)), int(data.get("rounds", 3)), entries,
                   calibration, float(quiet) if quiet else None, networks)

    def merge(self, other: LatencyTable) -> LatencyTable:
        """A new table with the entries of both (``other`` wins); devices must agree."""
        differences = self.device.differences(other.device)
        if differences:
            raise LatencyTableError("cannot merge tables from different setups: "
                                    + "; ".join(differences))
        entries = {**self.entries, **other.entries}
        return LatencyTable(self.device, self.batch, self.rounds, entries,
                            other.calibration or self.calibration,
                            networks={**self.networks, **other.networks})


def _entries_dict(entries: Mapping[str, LatencyEntry]) -> dict:
    return {k: {"ms": e.ms if e.rounds_ms else None, **asdict(e)}
            for k, e in sorted(entries.items())}


def _entries_from_dict(raw_entries: Mapping[str, Any]) -> dict[str, LatencyEntry]:
    entries = {}
    for key, raw in raw_entries.items():
        rounds_ms = [float(v) for v in raw["rounds_ms"]]
        if any(not math.isfinite(v) or v <= 0 for v in rounds_ms):
            raise ValueError(f"entry {key!r} has a non-positive latency")
        entries[key] = LatencyEntry(rounds_ms, int(raw.get("runs", 0)),
                                    float(raw.get("spread", 0.0)), bool(raw.get("busy", False)))
    return entries


def network_key(arch: ArchItems) -> str:
    """Key of a whole network timed end to end: its name, resolution and a digest of its
    block keys (two networks given the same name stay apart)."""
    import hashlib

    digest = hashlib.sha1("\n".join(arch.keys).encode()).hexdigest()[:12]
    return f"network {arch.name}@{arch.resolution} {digest}"


# --------------------------------------------------------------------------- building


class MachineBusyError(FbnasError, RuntimeError):
    """Measurements stayed disturbed by other processes; the partial table is kept."""


Progress = Callable[[int, int, str], None]


@dataclass
class BuildSettings:
    """How a table is measured.

    Attributes:
        method: ``"context"`` times every block inside whole networks (forward hooks around
            each block during end-to-end runs): it sees the caches and memory traffic the
            block really runs with. ``"isolated"`` times each block alone on its own input.
        rounds: interleaved rounds; an entry keeps its lowest per-round median.
        budget_s: time spent per measurement (per block isolated, per network in context).
        extra_rounds: rounds added for entries that were measured only while busy.
    """

    backend: Backend = "torch"
    threads: int = 1
    method: Literal["context", "isolated"] = "isolated"
    rounds: int = 3
    budget_s: float = 0.3
    extra_rounds: int = 2
    seed: int = 0


def _needs_round(store: Mapping[str, LatencyEntry], key: str, round_idx: int,
                 extra: bool) -> bool:
    entry = store.get(key)
    if extra:
        return entry is not None and entry.busy
    return entry is None or len(entry.rounds_ms) <= round_idx


def _record(store: dict[str, LatencyEntry], key: str, median_ms: float, runs: int,
            spread: float, busy: bool, busy_rounds: dict[str, int]) -> None:
    entry = store.setdefault(key, LatencyEntry())
    entry.rounds_ms.append(median_ms)
    entry.runs += runs
    entry.spread = max(entry.spread, spread)
    busy_rounds[key] = busy_rounds.get(key, 0) + busy
    entry.busy = busy_rounds[key] == len(entry.rounds_ms)


def _time_in_context(model: nn.Module, blocks: Sequence[tuple[str, nn.Module]],
                     input_shape: tuple[int, ...], threads: int,
                     budget_s: float) -> dict[str, list[float]]:
    """Runs ``model`` end to end and returns each block's time (ms) per run, via hooks."""
    import time

    import torch

    from fbnas.cost.latency import torch_threads

    starts: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name, _ in blocks}
    handles = []
    for name, block in blocks:
        handles.append(block.register_forward_pre_hook(
            lambda _m, _i, name=name: starts.__setitem__(name, time.perf_counter())))
        handles.append(block.register_forward_hook(
            lambda _m, _i, _o, name=name: times[name].append(
                (time.perf_counter() - starts[name]) * 1e3)))
    x = torch.randn(*input_shape)
    try:
        with torch_threads(threads), torch.inference_mode():
            for _ in range(3):
                model(x)
            for values in times.values():
                values.clear()
            start = time.perf_counter()
            runs = 0
            while runs < 5 or (time.perf_counter() - start < budget_s and runs < 200):
                model(x)
                runs += 1
    finally:
        for handle in handles:
            handle.remove()
    return times


def _network_blocks(model: nn.Module, arch: ArchItems) -> list[tuple[str, nn.Module]]:
    blocks = list(model.backbone.stages.children())
    if arch.head is not None:
        blocks.append(model.head)
    if len(blocks) != len(arch.keys):
        raise AssertionError("network blocks and table items disagree")
    return list(zip(arch.keys, blocks, strict=True))


@dataclass(frozen=True)
class _Unit:
    """One thing timed per round: a block alone, a network with hooks around its blocks
    (in-context entries), or a calibration network end to end."""

    kind: Literal["block", "context", "network"]
    source: TableItem | ArchItems
    keys: tuple[str, ...]


def unmeasured(table: LatencyTable, archs: Sequence[ArchItems], settings: BuildSettings,
               calibration: Sequence[ArchItems] = ()) -> list[str]:
    """Keys :func:`measure_table` would still time for these networks (empty: none).

    An entry is unmeasured when it is absent, has fewer than ``settings.rounds`` rounds
    (a build stopped part-way) or was measured only while the machine was busy; the
    calibration networks' end-to-end entries count the same way.
    """
    if settings.method == "context":
        keys = [k for arch in archs for k in arch.keys]
    else:
        keys = [item.key for item in distinct_items(archs)]

    def short(store: Mapping[str, LatencyEntry], key: str) -> bool:
        entry = store.get(key)
        return entry is None or len(entry.rounds_ms) < settings.rounds or entry.busy

    return ([k for k in dict.fromkeys(keys) if short(table.entries, k)]
            + [k for k in map(network_key, calibration) if short(table.networks, k)])


def measure_table(table: LatencyTable, archs: Sequence[ArchItems], settings: BuildSettings,
                  path: str | os.PathLike | None = None,
                  progress: Progress | None = None,
                  calibration: Sequence[ArchItems] = ()) -> LatencyTable:
    """Measures every entry of ``archs`` still missing rounds, saving the table as it goes.

    Rounds are interleaved (a new random order each round) and each starts by timing a
    reference workload; a round whose reference is ``BUSY_FACTOR`` slower than the quietest
    one seen (kept in the table across runs) counts as busy. An entry keeps the lowest of
    its per-round medians. Entries measured only in busy rounds get extra rounds; if the
    machine stays busy the table is saved with them flagged and :class:`MachineBusyError`
    is raised.

    ``calibration`` networks are timed end to end *within the same rounds*, shuffled among
    the entries, and the table's calibration is fitted on them at the end. Timing them in
    a separate phase after the entries was tried first: the machine's speed drifts by
    5-10 % between phases (allocator and CPU state, other tenants), and the scale inherited
    that drift, so predictions sat ~10 % off in some runs and not in others.
    """
    if settings.method == "context" and settings.backend != "torch":
        raise ValueError("in-context timing needs the torch backend; use method='isolated' "
                         "for onnxruntime")
    rng = random.Random(settings.seed)
    items = distinct_items(archs)
    busy_rounds: dict[str, int] = {}
    quiet_ref = min([reference_ms(settings.threads) for _ in range(3)]
                    + [table.quiet_reference_ms or math.inf])
    table.quiet_reference_ms = quiet_ref
    if settings.method == "context":
        units = [_Unit("context", a, a.keys) for a in archs]
    else:
        units = [_Unit("block", i, (i.key,)) for i in items]
    units += [_Unit("network", a, (network_key(a),)) for a in calibration]

    def store(unit: _Unit) -> dict[str, LatencyEntry]:
        return table.networks if unit.kind == "network" else table.entries

    def pending(round_idx: int, extra: bool) -> list[int]:
        return [i for i, unit in enumerate(units)
                if any(_needs_round(store(unit), k, round_idx, extra) for k in unit.keys)]

    todo = sum(len(pending(r, False)) for r in range(settings.rounds))
    done = 0
    models: dict[int, nn.Module] = {}
    for round_idx in range(settings.rounds + settings.extra_rounds):
        extra = round_idx >= settings.rounds
        order = pending(round_idx, extra)
        if not order:
            continue
        ref = reference_ms(settings.threads)
        quiet_ref = table.quiet_reference_ms = min(quiet_ref, ref)
        busy = ref > BUSY_FACTOR * quiet_ref
        rng.shuffle(order)
        for index in order:
            unit = units[index]
            if index not in models:
                models[index] = unit.source.build().eval()
            model = models[index]
            if unit.kind == "context":
                arch = unit.source
                shape = (table.batch, 3, arch.resolution, arch.resolution)
                times = _time_in_context(model, _network_blocks(model, arch), shape,
                                         settings.threads, settings.budget_s)
                for key in unit.keys:
                    values = sorted(times.get(key, ()))
                    if values and _needs_round(table.entries, key, round_idx, extra):
                        median = statistics.median(values)
                        spread = (values[int(0.9 * (len(values) - 1))]
                                  - values[int(0.1 * (len(values) - 1))]) / median
                        _record(table.entries, key, median, len(values), spread, busy,
                                busy_rounds)
                label = f"network {arch.name}"
            else:
                if unit.kind == "network":
                    shape = (table.batch, 3, unit.source.resolution, unit.source.resolution)
                    budget, label = settings.budget_s * 2, f"calibration {unit.source.name}"
                else:
                    shape, budget, label = (unit.source.input_shape, settings.budget_s,
                                            unit.source.label)
                m = measure(model, shape, settings.backend, settings.threads, budget_s=budget)
                _record(store(unit), unit.keys[0], m.median_ms, m.runs, m.spread, busy,
                        busy_rounds)
            if path is not None:
                table.save(path)
            done += not extra
            if progress:
                progress(min(done, todo), todo, label)
    still_busy = [k for unit in units for k in unit.keys
                  if store(unit).get(k, LatencyEntry()).busy]
    if still_busy:
        if path is not None:
            table.save(path)
        raise MachineBusyError(
            f"{len(still_busy)} entries were measured only while the machine was busy "
            f"(reference workload over {BUSY_FACTOR}x its quiet time); they are flagged in "
            f"the table — re-run the same command on a quieter machine to re-measure them")
    if calibration:
        table.calibration = fit_calibration([
            _calibration_record(table, arch, table.networks[network_key(arch)].ms)
            for arch in calibration])
        if path is not None:
            table.save(path)
    return table


def _calibration_record(table: LatencyTable, arch: ArchItems, measured_ms: float) -> dict:
    sum_ms = table.predict(arch).sum_ms
    return {"name": arch.name, "resolution": arch.resolution, "sum_ms": sum_ms,
            "measured_ms": measured_ms, "ratio": measured_ms / sum_ms}


def calibrate(table: LatencyTable, archs: Sequence[ArchItems], settings: BuildSettings,
              *, path: str | os.PathLike | None = None,
              progress: Progress | None = None) -> Calibration:
    """Calibrates an already measured table on ``archs`` timed end to end now (networks
    the table already holds every round of are reused, not timed again).

    For a table being built, pass the networks to :func:`measure_table` (``calibration=``)
    instead: timed among the entries they share the machine's state, timed afterwards they
    carry the drift between the two phases into the scale.
    """
    missing = table.missing(k for arch in archs for k in arch.keys)
    if missing:
        raise MissingEntriesError(missing, "calibration networks")
    measure_table(table, [], settings, path, progress, calibration=archs)
    assert table.calibration is not None
    return table.calibration


def fit_calibration(networks: Sequence[dict]) -> Calibration:
    """``measured = scale * sum + offset`` by least squares, or a plain median ratio.

    Measured here, the ratio measured / sum falls with network size (a fixed per-network
    overhead), so a scale alone fitted on small networks over-predicts large ones. The
    affine fit is used when the networks span at least a 1.3x range of sums and it yields
    a positive scale and a non-negative offset; otherwise the median ratio.
    """
    sums = [n["sum_ms"] for n in networks]
    measured = [n["measured_ms"] for n in networks]
    ratio_scale = statistics.median(m / s for m, s in zip(measured, sums, strict=True))
    if len(networks) >= 3 and max(sums) >= 1.3 * min(sums):
        mean_s, mean_m = statistics.fmean(sums), statistics.fmean(measured)
        var = sum((s - mean_s) ** 2 for s in sums)
        scale = sum((s - mean_s) * (m - mean_m) for s, m in zip(sums, measured,
                                                                 strict=True)) / var
        offset = mean_m - scale * mean_s
        if scale > 0 and offset >= 0:
            return Calibration(scale, tuple(networks), offset)
    return Calibration(ratio_scale, tuple(networks))
