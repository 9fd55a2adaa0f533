"""Latency lookup tables: measure each distinct block once, predict whole networks.

A table entry is keyed by everything that decides a block's cost — the op, its effective
options (padding, groups, expansion, activation... after ``basic_args`` and presets), its
input shape and its width — so any registered op works, users' own included. Device,
backend, threads and library versions describe the whole table (metadata), not a key.

A network's latency is predicted as ``scale * sum(entries) + offset``: blocks timed alone
systematically under-estimate the whole network (framework overhead between blocks, cache
effects; ~20 % here), so ``scale`` and ``offset`` are fitted on a few full networks timed
end to end in the same rounds as the entries (see ``docs/benchmarks.md``).

Timings are speed-normalised: a short burst of a reference workload is timed between every
two measurements, each entry keeps its time relative to the bursts on both sides of it,
and the table's values are those relatives times one reference speed of the table
(:attr:`LatencyTable.reference_ms`). On a shared machine the host's speed changes within
seconds (memory and clock contention that a CPU-time clock does not remove); a spell that
slows an entry slows the bursts next to it too, and cancels in the ratio.

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
from fbnas.cost.block_model import (
    BlockLatencyModel,
    BlockModelError,
    BlockPrediction,
    TrainingBlock,
    is_head_key,
    key_features,
    model_path,
    positive_or_none,
)
from fbnas.cost.latency import Backend, DeviceInfo, measure, reference_burst_ms, reference_ms
from fbnas.errors import FbnasError
from fbnas.io import atomic_write_text, read_json_file
from fbnas.zoo.model import ArchSource, build_model, resolve_arch

logger = logging.getLogger(__name__)

TABLE_FORMAT = "fbnas-latency-table"
TABLE_VERSION = 1
BUSY_FACTOR = 1.5
"""A round whose reference workload runs this much slower than its quiet minimum is busy."""
REFERENCE_QUANTILE = 0.1
"""The table's reference speed: this quantile of its reference bursts (a quiet spell)."""
CALIBRATION_MIN_SPAN = 2.0
"""The affine calibration needs networks whose block sums span at least this ratio."""
CALIBRATION_MAX_LOO = 0.05
"""... and a leave-one-out relative error below this; otherwise a plain scale is fitted."""


class LatencyTableError(FbnasError, ValueError):
    """A table file that cannot be used (corrupted, wrong format) or a lookup that fails."""


class MissingEntriesError(LatencyTableError):
    """The table has no entry for some blocks of a network; lists their keys."""

    def __init__(self, missing: Sequence[str], what: str = "", note: str = "") -> None:
        self.missing = list(missing)
        shown = "\n  ".join(self.missing[:10])
        more = f"\n  ... ({len(self.missing)} in all)" if len(self.missing) > 10 else ""
        super().__init__(f"the latency table has no entry for {len(self.missing)} block(s)"
                         f"{' of ' + what if what else ''} (measure them with "
                         f"--fill-missing, build the table over this arch, or fit a block "
                         f"latency model: fbnas lut fit-model){note}:\n  {shown}{more}")


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
    """One measured item: per-round medians (ms), the reference speed next to each round,
    and whether every round was busy."""

    rounds_ms: list[float] = field(default_factory=list)
    runs: int = 0
    spread: float = 0.0
    busy: bool = False
    rounds_ref_ms: list[float] = field(default_factory=list)
    """The reference workload's time next to each round's measurement (geometric mean of
    the bursts before and after it); empty in tables written before speed normalisation."""

    @property
    def ms(self) -> float:
        """The lowest per-round median (raw, not normalised): the least disturbed round."""
        return min(self.rounds_ms)

    @property
    def normalised(self) -> bool:
        """Whether every round has its reference time (then :attr:`relative` is known)."""
        return bool(self.rounds_ms) and len(self.rounds_ref_ms) == len(self.rounds_ms)

    @property
    def relative(self) -> float | None:
        """The lowest over rounds of the time relative to the reference next to it.

        Dividing by the reference removes what slows the entry and the reference alike
        (the clock, a co-tenant's compute); the lowest round then removes what slows only
        the entry: measured here, a memory-streaming process on the other core slowed
        blocks with large activations 1.6-2.2x and left the small reference conv (and
        small blocks) within 4 %, which no single reference workload can follow.
        """
        if not self.normalised:
            return None
        return min(m / r for m, r in zip(self.rounds_ms, self.rounds_ref_ms, strict=True))

    def value_ms(self, reference_ms: float | None) -> float:
        """The entry in ms at the reference speed ``reference_ms`` (relative x reference);
        without either, the lowest per-round median, as tables were read before."""
        relative = self.relative
        if relative is None or reference_ms is None:
            return self.ms
        return relative * reference_ms

    def round_spread(self, normalised: bool = True) -> float:
        """(max - min) / median of the per-round values (relative ones when normalised and
        asked for)."""
        values = ([m / r for m, r in zip(self.rounds_ms, self.rounds_ref_ms, strict=True)]
                  if normalised and self.normalised else list(self.rounds_ms))
        if not values:
            return 0.0
        middle = statistics.median(values)
        return (max(values) - min(values)) / middle if middle else 0.0


@dataclass(frozen=True)
class Calibration:
    """``predicted = scale * sum(entries) + offset_ms``, fitted on networks measured end to
    end (the offset is the per-network overhead: framework calls between blocks).

    Attributes:
        kind: ``"affine"`` (scale and offset) or ``"scale"`` (median measured / sum).
        loo_error: the fit's leave-one-out mean relative error over its networks (``None``
            for fewer than two networks, and in tables written before it was recorded).
    """

    scale: float
    networks: tuple[dict, ...] = ()
    offset_ms: float = 0.0
    kind: Literal["affine", "scale"] = "scale"
    loo_error: float | None = None

    @property
    def range_ms(self) -> tuple[float, float] | None:
        """The lowest and highest block sum of the calibration networks (``None``: unknown)."""
        sums = [float(n["sum_ms"]) for n in self.networks
                if isinstance(n, dict) and isinstance(n.get("sum_ms"), (int, float))]
        return (min(sums), max(sums)) if sums else None

    def to_dict(self) -> dict:
        return {"scale": self.scale, "offset_ms": self.offset_ms, "kind": self.kind,
                "loo_error": self.loo_error, "networks": list(self.networks)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Calibration:
        offset = float(raw.get("offset_ms", 0.0))
        kind = raw.get("kind") or ("affine" if offset else "scale")
        if kind not in ("affine", "scale"):
            raise ValueError(f"calibration kind {kind!r} is neither 'affine' nor 'scale'")
        loo = raw.get("loo_error")
        return cls(float(raw["scale"]), tuple(raw.get("networks", ())), offset, kind,
                   float(loo) if loo is not None else None)


@dataclass(frozen=True)
class Prediction:
    """A network's predicted latency and where it comes from."""

    name: str
    resolution: int
    block_ms: tuple[tuple[str, float], ...]
    sum_ms: float
    scale: float
    offset_ms: float = 0.0
    calibration_range_ms: tuple[float, float] | None = None
    """The block sums the calibration was fitted over; outside it the fit extrapolates."""
    model_blocks: tuple[str, ...] = ()
    """The blocks (names) whose latency came from the block latency model, not the table."""
    extrapolated: tuple[str, ...] = ()
    """Model-predicted blocks with features outside its training ranges, with the reasons
    (``xif3_0: in_h=448 (trained 7-224)``): not to be trusted."""

    @property
    def predicted_ms(self) -> float:
        return self.sum_ms * self.scale + self.offset_ms

    @property
    def outside_calibration(self) -> bool:
        """Whether the network's block sum lies outside the calibration networks' range."""
        if self.calibration_range_ms is None:
            return False
        low, high = self.calibration_range_ms
        return not low <= self.sum_ms <= high


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
                 networks: dict[str, LatencyEntry] | None = None,
                 reference_ms: float | None = None, normalise: bool = True) -> None:
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
        self.reference_ms = reference_ms
        """The reference speed the entries are expressed at (ms of one reference burst),
        fixed when the first build completes; ``None`` before that (then taken from the
        bursts so far) and in tables written before speed normalisation."""
        self.normalise = normalise
        """Whether values are speed-normalised (else the lowest per-round median, raw; the
        bursts are recorded either way, so this can be switched without re-measuring)."""
        self.model: BlockLatencyModel | None = None
        """The block latency model that answers keys the table does not hold (see
        :meth:`attach_model`); kept in its own file beside the table."""
        self._model_answers: dict[str, BlockPrediction | None] = {}
        self._answer_flags: set[str] = set()  # "answered", "extrapolated" (see _remember)

    def value_reference_ms(self) -> float | None:
        """The reference speed values are expressed at: :attr:`reference_ms` once fixed,
        else the ``REFERENCE_QUANTILE`` of every reference burst the table holds."""
        if not self.normalise:
            return None
        if self.reference_ms is not None:
            return self.reference_ms
        return burst_reference([*self.entries.values(), *self.networks.values()])

    def entry_ms(self, entry: LatencyEntry) -> float:
        """An entry's value in ms at the table's reference speed (see :class:`LatencyEntry`)."""
        return entry.value_ms(self.value_reference_ms())

    # ------------------------------------------------------------------ lookup

    def __contains__(self, key: object) -> bool:
        entry = self.entries.get(key)  # type: ignore[arg-type]
        return entry is not None and bool(entry.rounds_ms) and not entry.busy

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, key: str) -> float:
        """The latency of one key (ms): the table's entry, else the block latency model's
        prediction; a key neither answers (or a busy entry without a model) raises."""
        if key in self:
            return self.entry_ms(self.entries[key])
        answer = self.model_prediction(key)
        if answer is None:
            raise MissingEntriesError([key], note=self._missing_note([key]))
        return answer.ms

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys neither the table nor its block latency model answers."""
        return [k for k in dict.fromkeys(keys) if k not in self
                and self.model_prediction(k) is None]

    def _missing_note(self, missing: Sequence[str]) -> str:
        """Why a model that is attached still leaves keys missing (heads, for a model
        fitted before heads were sampled)."""
        if self.model is None or self.model.has_heads or not any(map(is_head_key, missing)):
            return ""
        return ("; the block latency model was fitted without heads (one made before "
                "--model-sample drew heads): rebuild its sample and refit to have it "
                "answer heads")

    def unmeasured(self, keys: Iterable[str]) -> list[str]:
        """The keys the table holds no (usable) measurement of, model or not."""
        return [k for k in dict.fromkeys(keys) if k not in self]

    # ------------------------------------------------------------------ the model

    def attach_model(self, model: BlockLatencyModel | None) -> None:
        """Lets ``model`` answer the keys the table does not hold (``None``: none)."""
        self.model = model
        self._model_answers.clear()
        self._answer_flags.clear()

    def model_prediction(self, key: str) -> BlockPrediction | None:
        """The model's prediction for ``key``; ``None`` without a model or for keys it
        cannot describe (an op not registered here, a head when the model was trained
        without heads). A prediction outside the training ranges is logged once per key."""
        if self.model is None:
            return None
        if key not in self._model_answers:
            try:
                answer: BlockPrediction | None = self.model.predict_key(key)
            except BlockModelError:
                answer = None
            self._remember(key, answer)
        return self._model_answers[key]

    def predict_keys(self, keys: Iterable[str]) -> None:
        """Has the block latency model answer every key the table does not hold, in one
        batch (:meth:`BlockLatencyModel.predict_many`); :meth:`lookup` then reads them.

        Why: one regressor call per key dominates pricing a DMasking supernet's blocks.
        """
        if self.model is None:
            return
        todo, rows = [], []
        for key in dict.fromkeys(keys):
            if key in self or key in self._model_answers:
                continue
            try:
                rows.append(key_features(key, self.model.batch))
                todo.append(key)
            except BlockModelError:
                self._remember(key, None)
        for key, answer in zip(todo, self.model.predict_many(rows), strict=True):
            self._remember(key, answer)

    def _remember(self, key: str, answer: BlockPrediction | None) -> None:
        """Stores the model's answer for ``key``, logging the first extrapolation."""
        if self.model is not None:
            # Whether an earlier answer extrapolated / any answered: flags, not a scan of
            # every answer (that would be quadratic in a supernet's tens of thousands).
            flags = self._answer_flags
            if answer is not None and answer.extrapolated:
                first = "extrapolated" not in flags
                flags.add("extrapolated")
                logger.log(logging.WARNING if first else logging.DEBUG,
                           "block latency model extrapolates for %s: %s%s", key,
                           "; ".join(answer.extrapolated),
                           " (further blocks outside its training ranges are logged at "
                           "debug level; predictions list them)" if first else "")
            if answer is not None and "answered" not in flags:
                flags.add("answered")
                logger.info("blocks the latency table lacks are predicted by its block "
                            "latency model (%s, fitted on %d blocks)",
                            self.model.candidate.name, len(self.model.blocks))
            self._model_answers[key] = answer

    def training_blocks(self) -> list[TrainingBlock]:
        """Every measured (not busy) block and head entry as a model's training block;
        entries of ops not registered here are left out."""
        blocks = []
        for key, entry in sorted(self.entries.items()):
            if key not in self:
                continue
            try:
                features = key_features(key, self.batch)
            except BlockModelError:
                continue
            blocks.append(TrainingBlock(key, features, self.entry_ms(entry)))
        return blocks

    def fit_model(self) -> BlockLatencyModel:
        """Fits a block latency model on the table's measured blocks and attaches it."""
        model = BlockLatencyModel.fit(self.training_blocks(), self.device, self.batch,
                                      reference_ms=self.value_reference_ms())
        self.attach_model(model)
        return model

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
            raise MissingEntriesError(missing, items.name, self._missing_note(missing))
        per_block, from_model, extrapolated = [], [], []
        for item in items.items:
            name = item.label.split(":", 1)[1]
            per_block.append((name, self.lookup(item.key)))
            if item.key not in self:
                from_model.append(name)
                answer = self.model_prediction(item.key)
                if answer is not None and answer.extrapolated:
                    extrapolated.append(f"{name}: {'; '.join(answer.extrapolated)}")
        if from_model:
            logger.info("%s: %d of its %d blocks from the block latency model%s", items.name,
                        len(from_model), len(per_block),
                        f" ({len(extrapolated)} outside its training ranges)"
                        if extrapolated else "")
        cal = self.calibration
        return Prediction(items.name, items.resolution, tuple(per_block),
                          sum(ms for _, ms in per_block), self.scale,
                          cal.offset_ms if cal else 0.0, cal.range_ms if cal else None,
                          tuple(from_model), tuple(extrapolated))

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
            "reference_ms": self.reference_ms,
            "normalise": self.normalise,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "entries": _entries_dict(self.entries, self.value_reference_ms()),
            "networks": _entries_dict(self.networks, self.value_reference_ms()),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Writes the table atomically: a reader never sees a half-written file."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, expect: DeviceInfo | None = None,
             model: str | os.PathLike | None = None) -> LatencyTable:
        """Reads a table; warns (naming the fields) if it comes from another device/setup.

        The block latency model ``model`` (a file), or else the one beside the table
        (``lut.json`` -> ``lut.model.json``, :func:`fbnas.cost.block_model.model_path`)
        when there is one, is attached to answer the blocks the table lacks.
        """
        path = Path(path)
        data = read_json_file(path, "latency table", LatencyTableError,
                              "rebuild it or restore a copy")
        table = cls.from_dict(data, str(path))
        current = expect or DeviceInfo.current(table.device.backend, table.device.threads,
                                               table.device.device)
        differences = table.device.differences(current)
        if differences:
            logger.warning("latency table %s was measured elsewhere: %s", path,
                           "; ".join(differences))
        beside = model_path(path)
        if model is not None or beside.is_file():
            table.attach_model(BlockLatencyModel.load(model if model is not None else beside,
                                                      expect=table.device, batch=table.batch))
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
            calibration = Calibration.from_dict(cal) if cal else None
            reference = positive_or_none(data.get("reference_ms"), "reference_ms")
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"{source} is malformed: {exc}") from None
        quiet = data.get("quiet_reference_ms")
        return cls(device, int(data.get("batch", 1)), int(data.get("rounds", 3)), entries,
                   calibration, float(quiet) if quiet else None, networks, reference,
                   bool(data.get("normalise", True)))

    def merge(self, other: LatencyTable) -> LatencyTable:
        """A new table with the entries of both (``other`` wins); devices must agree."""
        differences = self.device.differences(other.device)
        if differences:
            raise LatencyTableError("cannot merge tables from different setups: "
                                    + "; ".join(differences))
        entries = {**self.entries, **other.entries}
        # Normalised entries hold relative times, so ours keep meaning the same with our
        # reference speed; the other's take it over (same device: the same workload).
        return LatencyTable(self.device, self.batch, self.rounds, entries,
                            other.calibration or self.calibration,
                            networks={**self.networks, **other.networks},
                            reference_ms=self.value_reference_ms() or other.reference_ms,
                            normalise=self.normalise)


def burst_reference(entries: Iterable[LatencyEntry]) -> float | None:
    """The ``REFERENCE_QUANTILE`` of the entries' reference bursts (``None``: none)."""
    bursts = sorted(r for e in entries for r in e.rounds_ref_ms)
    if not bursts:
        return None
    return bursts[min(len(bursts) - 1, int(REFERENCE_QUANTILE * len(bursts)))]


def _entries_dict(entries: Mapping[str, LatencyEntry], reference_ms: float | None) -> dict:
    return {k: {"ms": e.value_ms(reference_ms) if e.rounds_ms else None, **asdict(e)}
            for k, e in sorted(entries.items())}


def _entries_from_dict(raw_entries: Mapping[str, Any]) -> dict[str, LatencyEntry]:
    entries = {}
    for key, raw in raw_entries.items():
        rounds_ms = [float(v) for v in raw["rounds_ms"]]
        refs = [float(v) for v in raw.get("rounds_ref_ms") or ()]
        if any(not math.isfinite(v) or v <= 0 for v in rounds_ms + refs):
            raise ValueError(f"entry {key!r} has a non-positive latency")
        entries[key] = LatencyEntry(rounds_ms, int(raw.get("runs", 0)),
                                    float(raw.get("spread", 0.0)), bool(raw.get("busy", False)),
                                    refs)
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
            spread: float, busy: bool, busy_rounds: dict[str, int], ref_ms: float) -> None:
    entry = store.setdefault(key, LatencyEntry())
    entry.rounds_ms.append(median_ms)
    entry.rounds_ref_ms.append(ref_ms)
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
    label: str


def pending_measurements(table: LatencyTable, archs: Sequence[ArchItems],
                         settings: BuildSettings,
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
                  calibration: Sequence[ArchItems] = (),
                  extra_items: Sequence[TableItem] = ()) -> LatencyTable:
    """Measures every entry of ``archs`` still missing rounds, saving the table as it goes.

    Rounds are interleaved (a new random order each round) and each starts by timing a
    reference workload; a round whose reference is ``BUSY_FACTOR`` slower than the quietest
    one seen (kept in the table across runs) counts as busy. A short burst of the same
    workload is timed between every two measurements, and each entry stores its per-round
    medians with the reference next to them (see :class:`LatencyEntry`); the table's
    reference speed is fixed when its first build completes. Entries measured only in busy
    rounds get extra rounds; if the machine stays busy the table is saved with them flagged
    and :class:`MachineBusyError` is raised.

    ``calibration`` networks are timed end to end *within the same rounds*, shuffled among
    the entries, and the table's calibration is fitted on them at the end. Timing them in
    a separate phase after the entries was tried first: the machine's speed drifts by
    5-10 % between phases (allocator and CPU state, other tenants), and the scale inherited
    that drift, so predictions sat ~10 % off in some runs and not in others.

    ``extra_items`` are single blocks measured alongside (the training sample of a block
    latency model, :func:`fbnas.cost.block_model.sample_blocks`); isolated timing only.
    """
    if settings.method == "context" and settings.backend != "torch":
        raise ValueError("in-context timing needs the torch backend; use method='isolated' "
                         "for onnxruntime")
    if settings.method == "context":
        units = [_Unit("context", a, a.keys, f"network {a.name}") for a in archs]
        known = {k for a in archs for k in a.keys}
        units += [_Unit("block", i, (i.key,), i.label) for i in extra_items
                  if i.key not in known]
    else:
        items = distinct_items(archs)
        known = {i.key for i in items}
        items += [i for i in dict((i.key, i) for i in extra_items).values()
                  if i.key not in known]
        units = [_Unit("block", i, (i.key,), i.label) for i in items]
    units += [_Unit("network", a, (network_key(a),), f"calibration {a.name}")
              for a in calibration]
    still_busy = _measure_units(table, units, settings, path, progress)
    if still_busy:
        if path is not None:
            table.save(path)
        raise MachineBusyError(
            f"{len(still_busy)} entries were measured only while the machine was busy "
            f"(reference workload over {BUSY_FACTOR}x its quiet time); they are flagged in "
            f"the table — re-run the same command on a quieter machine to re-measure them")
    if table.reference_ms is None:
        table.reference_ms = burst_reference([*table.entries.values(),
                                              *table.networks.values()])
    if calibration:
        table.calibration = fit_calibration([
            _calibration_record(table, arch, table.entry_ms(table.networks[network_key(arch)]))
            for arch in calibration])
    if path is not None:
        table.save(path)
    return table


def _measure_units(table: LatencyTable, units: Sequence[_Unit], settings: BuildSettings,
                   path: str | os.PathLike | None, progress: Progress | None) -> list[str]:
    """Times ``units`` in interleaved rounds into ``table``; returns the keys still busy."""
    rng = random.Random(settings.seed)
    busy_rounds: dict[str, int] = {}
    quiet_ref = min([reference_ms(settings.threads) for _ in range(3)]
                    + [table.quiet_reference_ms or math.inf])
    table.quiet_reference_ms = quiet_ref

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
        burst_before = reference_burst_ms(settings.threads)
        for index in order:
            unit = units[index]
            if index not in models:
                models[index] = unit.source.build().eval()
            timed = _time_unit(unit, models[index], table.batch, settings)
            burst_after = reference_burst_ms(settings.threads)
            ref_ms = math.sqrt(burst_before * burst_after)
            burst_before = burst_after
            for key, (median, runs, spread) in timed.items():
                if _needs_round(store(unit), key, round_idx, extra):
                    _record(store(unit), key, median, runs, spread, busy, busy_rounds, ref_ms)
            if path is not None:
                table.save(path)
            done += not extra
            if progress:
                progress(min(done, todo), todo, unit.label)
    return [k for unit in units for k in unit.keys
            if store(unit).get(k, LatencyEntry()).busy]


def _time_unit(unit: _Unit, model: nn.Module, batch: int,
               settings: BuildSettings) -> dict[str, tuple[float, int, float]]:
    """Times one unit once: ``{key: (median ms, runs, spread)}``."""
    if unit.kind == "context":
        arch = unit.source
        shape = (batch, 3, arch.resolution, arch.resolution)
        times = _time_in_context(model, _network_blocks(model, arch), shape,
                                 settings.threads, settings.budget_s)
        out = {}
        for key in unit.keys:
            values = sorted(times.get(key, ()))
            if values:
                median = statistics.median(values)
                spread = (values[int(0.9 * (len(values) - 1))]
                          - values[int(0.1 * (len(values) - 1))]) / median
                out[key] = (median, len(values), spread)
        return out
    if unit.kind == "network":
        shape = (batch, 3, unit.source.resolution, unit.source.resolution)
        budget = settings.budget_s * 2
    else:
        shape, budget = unit.source.input_shape, settings.budget_s
    m = measure(model, shape, settings.backend, settings.threads, budget_s=budget)
    return {unit.keys[0]: (m.median_ms, m.runs, m.spread)}


@dataclass(frozen=True)
class NetworkTiming:
    """A whole network timed end to end in interleaved rounds.

    Attributes:
        ms: its latency at the reference speed it was asked for (speed-normalised: the
            lowest over rounds of its time relative to the reference bursts next to it),
            or without one the lowest per-round median.
        lowest_ms: the lowest per-round median, raw.
        spread: (max - min) / median of the per-round values ``ms`` comes from.
        busy: every round ran while the reference workload said the machine was busy.
    """

    name: str
    resolution: int
    ms: float
    lowest_ms: float
    rounds_ms: tuple[float, ...]
    rounds_ref_ms: tuple[float, ...]
    spread: float
    busy: bool


def measure_networks(archs: Sequence[ArchItems], settings: BuildSettings,
                     reference_ms: float | None = None,
                     progress: Progress | None = None) -> list[NetworkTiming]:
    """Times whole networks end to end as a table build does (interleaved shuffled rounds,
    busy detection, reference bursts between measurements).

    Timing each network several times back to back, as ``fbnas latency --measure`` did,
    let one slow spell of a shared machine decide a network's value: 20 FBNetV1 networks
    timed twice a minute apart agreed within ±10 % for 5 of 20. Pass the table's
    :meth:`LatencyTable.value_reference_ms` as ``reference_ms`` to get values at the
    table's reference speed, comparable with its predictions.
    """
    if not archs:
        return []
    batch = archs[0].items[0].input_shape[0] if archs[0].items else 1
    scratch = LatencyTable(DeviceInfo.current(settings.backend, settings.threads), batch)
    units = list({network_key(a): _Unit("network", a, (network_key(a),), f"network {a.name}")
                  for a in archs}.values())
    _measure_units(scratch, units, settings, None, progress)
    timings = []
    for arch in archs:
        entry = scratch.networks[network_key(arch)]
        timings.append(NetworkTiming(arch.name, arch.resolution, entry.value_ms(reference_ms),
                                     entry.ms, tuple(entry.rounds_ms),
                                     tuple(entry.rounds_ref_ms),
                                     entry.round_spread(reference_ms is not None),
                                     entry.busy))
    return timings


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
    missing = table.unmeasured(k for arch in archs for k in arch.keys)
    if missing:
        raise MissingEntriesError(missing, "calibration networks")
    measure_table(table, [], settings, path, progress, calibration=archs)
    assert table.calibration is not None
    return table.calibration


def fit_calibration(networks: Sequence[dict]) -> Calibration:
    """``measured = scale * sum + offset`` by least squares, or a plain median ratio.

    Measured here, the ratio measured / sum falls with network size (a fixed per-network
    overhead), so a scale alone fitted on small networks over-predicts large ones. But an
    offset is only well determined by networks far apart in cost: five networks of 11-17 ms
    gave scale 0.717 and a large offset, which extrapolates badly. So the affine fit is
    used only when the networks' sums span at least ``CALIBRATION_MIN_SPAN`` (2x), its
    leave-one-out relative error is below ``CALIBRATION_MAX_LOO`` (5 %) and not above the
    plain scale's, with a positive scale and a non-negative offset; otherwise the median
    ratio measured / sum.
    """
    sums = [float(n["sum_ms"]) for n in networks]
    measured = [float(n["measured_ms"]) for n in networks]
    if not sums:
        raise ValueError("fit_calibration needs at least one network")
    ratio_loo = _loo_error(sums, measured, _fit_ratio)
    if len(networks) >= 3 and max(sums) >= CALIBRATION_MIN_SPAN * min(sums):
        scale, offset = _fit_affine(sums, measured)
        affine_loo = _loo_error(sums, measured, _fit_affine)
        if (scale > 0 and offset >= 0 and affine_loo is not None
                and affine_loo < CALIBRATION_MAX_LOO
                and (ratio_loo is None or affine_loo <= ratio_loo)):
            return Calibration(scale, tuple(networks), offset, "affine", affine_loo)
        logger.info("calibration: plain scale (affine fit: scale %.3f, offset %.2f ms, "
                    "leave-one-out error %s)", scale, offset,
                    "n/a" if affine_loo is None else f"{affine_loo:.1%}")
    scale, _ = _fit_ratio(sums, measured)
    return Calibration(scale, tuple(networks), 0.0, "scale", ratio_loo)


def _fit_ratio(sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    return statistics.median(m / s for m, s in zip(measured, sums, strict=True)), 0.0


def _fit_affine(sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    mean_s, mean_m = statistics.fmean(sums), statistics.fmean(measured)
    var = sum((s - mean_s) ** 2 for s in sums)
    if var == 0:
        return _fit_ratio(sums, measured)
    scale = sum((s - mean_s) * (m - mean_m) for s, m in zip(sums, measured, strict=True)) / var
    return scale, mean_m - scale * mean_s


def _loo_error(sums: Sequence[float], measured: Sequence[float],
               fit: Callable[[Sequence[float], Sequence[float]], tuple[float, float]]
               ) -> float | None:
    """Mean |error| / measured of each network predicted by ``fit`` on the others."""
    if len(sums) < 2:
        return None
    errors = []
    for i in range(len(sums)):
        rest_s = [s for j, s in enumerate(sums) if j != i]
        rest_m = [m for j, m in enumerate(measured) if j != i]
        scale, offset = fit(rest_s, rest_m)
        errors.append(abs(scale * sums[i] + offset - measured[i]) / measured[i])
    return statistics.fmean(errors)
