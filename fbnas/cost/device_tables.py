"""Latency tables for a device that cannot run fbnas: export the blocks, time them there.

FBNet's point is to search for the device the network will run on (a phone, a board),
which is rarely the machine running the search and rarely has PyTorch. So the table is
built in three steps, the middle one on the device:

1. :func:`export_blocks` writes a folder: every distinct block (and classifier head) as a
   small ONNX file with its fixed input shape (eval mode, BN folded, MobileOne branches
   merged: the deploy form, as ``fbnas lut build --backend onnxruntime`` times it), a few
   whole networks to calibrate the table's scale, a reference conv to detect a busy
   device, ``manifest.json`` (table key, input shape, file, op of each file) and a copy
   of the standalone :mod:`fbnas.cost.runner`.
2. On the device: ``python runner.py FOLDER --out results.json`` (needs only
   ``onnxruntime`` and ``numpy``) times them the way fbnas's own tables are timed.
3. :func:`import_results` turns ``results.json`` into an ordinary :class:`LatencyTable`
   (backend ``onnxruntime``, the device the runner recorded), usable by
   ``fbnas latency --lut`` and the search like any other table.

Table keys never leave the manifest and results: file names are short and safe
(``block_0001.onnx``) for any file system the folder is copied to.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbnas.blocks.fuse import fold_batchnorm
from fbnas.blocks.mobileone import reparameterize_model
from fbnas.cost import runner
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import (
    ArchItems,
    Calibration,
    LatencyEntry,
    LatencyTable,
    LatencyTableError,
    TableItem,
    burst_reference,
    distinct_items,
    fit_calibration,
)
from fbnas.io import atomic_write_text
from fbnas.version import __version__

logger = logging.getLogger(__name__)

RUNNER_TORCH = "n/a (measured by the fbnas runner)"
"""``DeviceInfo.torch`` of an imported table: marks tables measured on another device."""

REFERENCE_SHAPE = (1, 32, 28, 28)
"""Input of the reference conv (32 -> 32, 3x3): the workload of ``latency.reference_ms``."""

DEFAULT_OPSET = 17
_OUR_FILES = re.compile(r"(block_\d+|network_\d+|reference)\.onnx|runner\.py|README\.txt"
                        r"|manifest\.json")

Progress = Callable[[int, int, str], None]


class DeviceTableError(LatencyTableError):
    """A block folder or runner results file that cannot be used; names file and entry."""


def measured_by_runner(device: DeviceInfo) -> bool:
    """Whether a table was imported from the standalone runner (measured on another device)."""
    return device.torch == RUNNER_TORCH


# --------------------------------------------------------------------------- exporting


def _export_onnx(module: nn.Module, input_shape: Sequence[int], path: Path, opset: int,
                 what: str) -> None:
    """Writes the deploy form of ``module`` (eval, branches merged, BN folded) to ``path``.

    The input shape is fixed (no dynamic axes): the runner times exactly the shape the
    table key names, and ORT may specialise kernels for it as it would in deployment.
    """
    import onnx

    prepared = fold_batchnorm(reparameterize_model(module.cpu().eval()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(prepared, (torch.zeros(*input_shape),), str(path), dynamo=False,
                              input_names=["input"], output_names=["output"],
                              opset_version=opset, do_constant_folding=True)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - any exporter failure names the block
        path.unlink(missing_ok=True)
        raise DeviceTableError(f"exporting {what} to ONNX failed: {type(exc).__name__}: "
                               f"{exc}") from exc


def _prepare_folder(out: Path) -> None:
    """Makes ``out`` ready for a new export, refusing a folder that holds other things.

    A previous export (even an interrupted one) is replaced; results files are kept so a
    runner can tell whether they still match (same manifest) and continue them.
    """
    if out.exists() and not out.is_dir():
        raise DeviceTableError(f"block folder {str(out)!r} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in out.iterdir()]
    ours = [n for n in names if _OUR_FILES.fullmatch(n)]
    if names and not ours:
        raise DeviceTableError(f"block folder {str(out)!r} is not empty and holds no earlier "
                               f"block export; give a new or empty folder")
    (out / runner.MANIFEST_NAME).unlink(missing_ok=True)  # first: no manifest, no stale mix
    for name in ours:
        (out / name).unlink(missing_ok=True)


def _batch_of(archs: Sequence[ArchItems]) -> int:
    batches = {item.input_shape[0] for arch in archs for item in arch.items}
    if len(batches) != 1:
        raise ValueError(f"the networks were itemised with different batch sizes "
                         f"{sorted(batches)}; use one")
    return batches.pop()


def _readme(batch: int, blocks: int, networks: int) -> str:
    return (f"fbnas block folder: {blocks} blocks and {networks} network(s) as ONNX files "
            f"(batch {batch}),\nlisted in manifest.json. On the device (Python 3.8+ with "
            f"onnxruntime and numpy):\n\n    python runner.py . --out results.json\n\n"
            f"Options: --threads T, --rounds R, --budget-s S, --provider NAME (python "
            f"runner.py -h).\nAn interrupted run continues when run again. Bring "
            f"results.json back and run:\n\n    fbnas lut import results.json --out "
            f"lut.json\n")


def export_blocks(archs: Sequence[ArchItems], out: str | os.PathLike, *,
                  space: str | None = None, calibration: Sequence[ArchItems] = (),
                  opset: int = DEFAULT_OPSET, progress: Progress | None = None,
                  extra_items: Sequence[TableItem] = ()) -> dict:
    """Writes every distinct block of ``archs`` as ONNX, plus manifest and runner, to ``out``.

    Args:
        archs: the networks whose blocks the table must cover (for a space, its
            ``all_candidate_archs``); blocks shared between them are written once.
        out: the folder to write (created; an earlier export there is replaced).
        space: the search space's name, recorded in the manifest.
        calibration: whole networks also written (``network_01.onnx``...): the runner
            times them end to end, and the import fits the table's scale on them, as
            ``fbnas lut build`` does on this machine. Their blocks are added if missing.
        opset: ONNX opset of every file.
        progress: called ``(done, total, label)`` after each file.
        extra_items: single blocks written too: the training sample of a block latency
            model (:func:`fbnas.cost.block_sampling.sample_blocks`); the manifest records
            how many (``source.model_sample``), and ``fbnas lut import`` then fits the
            model on the imported table.

    Returns:
        The manifest, as written to ``out/manifest.json``.
    """
    out = Path(out)
    everything = [*archs, *calibration]
    if not archs:
        raise ValueError("export_blocks needs at least one network")
    batch = _batch_of(everything)
    _prepare_folder(out)
    items = distinct_items(everything)
    known = {i.key for i in items}
    sampled = [i for i in dict((i.key, i) for i in extra_items).values() if i.key not in known]
    items += sampled
    total = len(items) + len(calibration) + 1
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, label)

    reference = nn.Conv2d(REFERENCE_SHAPE[1], REFERENCE_SHAPE[1], 3, padding=1)
    _export_onnx(reference, REFERENCE_SHAPE, out / "reference.onnx", opset, "the reference conv")
    step("reference")
    blocks = []
    for i, item in enumerate(items, 1):
        file = f"block_{i:04d}.onnx"
        _export_onnx(item.build(), item.input_shape, out / file, opset,
                     f"block {item.key!r} ({item.label})")
        blocks.append({"key": item.key, "input_shape": list(item.input_shape), "file": file,
                       "op": item.key.split("|", 1)[0], "label": item.label})
        step(item.label)
    networks = []
    for i, arch in enumerate(calibration, 1):
        file = f"network_{i:02d}.onnx"
        shape = [batch, 3, arch.resolution, arch.resolution]
        _export_onnx(arch.build(), shape, out / file, opset, f"network {arch.name!r}")
        networks.append({"name": arch.name, "resolution": arch.resolution,
                         "input_shape": shape, "file": file, "keys": list(arch.keys)})
        step(f"network {arch.name}")
    shutil.copyfile(runner.__file__, out / "runner.py")
    atomic_write_text(out / "README.txt", _readme(batch, len(blocks), len(networks)))
    resolutions = sorted({a.resolution for a in archs})
    manifest = {
        "format": runner.MANIFEST_FORMAT,
        "version": runner.MANIFEST_VERSION,
        "fbnas_version": __version__,
        "source": {"space": space, "archs": [] if space else [a.name for a in archs],
                   **({"model_sample": len(sampled)} if sampled else {})},
        "resolution": resolutions[0] if len(resolutions) == 1 else None,
        "batch": batch,
        "opset": opset,
        "runner": "runner.py",
        "reference": {"file": "reference.onnx", "input_shape": list(REFERENCE_SHAPE)},
        "blocks": blocks,
        "networks": networks,
    }
    atomic_write_text(out / runner.MANIFEST_NAME, json.dumps(manifest, indent=1))
    return manifest


# --------------------------------------------------------------------------- importing


def _fail(path: Path, message: str) -> DeviceTableError:
    return DeviceTableError(f"runner results {str(path)!r}: {message}")


def _entry(path: Path, what: str, raw: Any) -> LatencyEntry:
    """A table entry from a results entry; anything malformed raises naming it."""
    if not isinstance(raw, dict):
        raise _fail(path, f"{what} is not an object")
    rounds = raw.get("rounds_ms")
    if not isinstance(rounds, list) or not all(runner.positive_number(v) for v in rounds):
        raise _fail(path, f"{what}: rounds_ms must be a list of positive numbers, got "
                          f"{rounds!r}")
    refs = raw.get("rounds_ref_ms", [])  # absent in results of runners before it
    if not isinstance(refs, list) or not all(runner.positive_number(v) for v in refs):
        raise _fail(path, f"{what}: rounds_ref_ms must be a list of positive numbers, got "
                          f"{refs!r}")
    runs, spread, busy = raw.get("runs"), raw.get("spread"), raw.get("busy")
    if (not isinstance(runs, int) or isinstance(runs, bool)
            or not isinstance(spread, (int, float)) or not isinstance(busy, bool)):
        raise _fail(path, f"{what}: runs, spread and busy must be an integer, a number and "
                          f"true/false")
    return LatencyEntry([float(v) for v in rounds], runs, float(spread), busy,
                        [float(v) for v in refs])


def _device(path: Path, record: Any) -> DeviceInfo:
    """DeviceInfo from the runner's device record (``torch`` marks it as runner-measured)."""
    fields = {"processor": str, "cpu_count": int, "onnxruntime": str, "threads": int,
              "python": str, "system": str, "machine": str, "provider": str}
    if not isinstance(record, dict):
        raise _fail(path, "'device' is missing")
    for name, kind in fields.items():
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
            raise _fail(path, f"device field {name!r} must be a {kind.__name__}, got "
                              f"{record.get(name)!r}")
    provider = record["provider"]
    return DeviceInfo(cpu=record["processor"], cores=record["cpu_count"],
                      backend="onnxruntime", threads=record["threads"], torch=RUNNER_TORCH,
                      onnxruntime=record["onnxruntime"], python=record["python"],
                      system=f"{record['system']} {record['machine']}".strip(),
                      device="cpu" if provider == "CPUExecutionProvider" else provider)


def _unfinished(path: Path, field: str, entries: Mapping[str, LatencyEntry]) -> None:
    missing = [k for k, e in entries.items() if not e.rounds_ms]
    busy = [k for k, e in entries.items() if e.rounds_ms and e.busy]
    for names, state, advice in (
            (missing, "not measured yet", "run the runner again with the same --out to "
                                          "finish"),
            (busy, "measured only while the device was busy", "run the runner again when "
                                                              "the device is idle")):
        if names:
            shown = "\n  ".join(names[:5]) + (f"\n  ... ({len(names)} in all)"
                                              if len(names) > 5 else "")
            raise _fail(path, f"{len(names)} of {len(entries)} {field} {state} ({advice}):"
                              f"\n  {shown}")


def _calibration(path: Path, networks: Mapping[str, Any],
                 table: LatencyTable) -> Calibration | None:
    """The calibration fitted on the networks the runner timed end to end, as ``fbnas lut
    build`` fits it (:func:`fbnas.cost.lut.fit_calibration`)."""
    fitted = []
    for name, raw in networks.items():
        keys = raw.get("keys")
        if not isinstance(keys, list) or not keys:
            raise _fail(path, f"network {name!r} has no list of block keys")
        absent = [k for k in keys if k not in table]
        if absent:
            raise _fail(path, f"network {name!r} uses block {absent[0]!r}, which the results "
                              f"do not hold")
        sum_ms = sum(table.lookup(k) for k in keys)
        measured = table.entry_ms(_entry(path, f"network {name!r}", raw))
        fitted.append({"name": name, "resolution": raw.get("resolution"), "sum_ms": sum_ms,
                       "measured_ms": measured, "ratio": measured / sum_ms})
    if not fitted:
        return None
    return fit_calibration(fitted)


def results_model_sample(path: str | os.PathLike) -> int:
    """How many blocks of a runner's results were sampled for a block latency model (0:
    none; the results then hold only the networks' blocks)."""
    try:
        data = runner.read_json(Path(path), "runner results")
    except runner.RunnerError:
        return 0
    source = ((data.get("manifest") or {}).get("source") or {}) if isinstance(data, dict) \
        else {}
    value = source.get("model_sample") if isinstance(source, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def import_results(path: str | os.PathLike) -> LatencyTable:
    """The latency table in a runner's ``results.json``: every block entry, calibrated.

    Raises:
        DeviceTableError: if the file is missing, not runner results, malformed (naming the
            entry), or incomplete (entries not measured yet, or only while busy).
    """
    path = Path(path)
    try:
        data = runner.read_json(path, "runner results")
    except runner.RunnerError as exc:
        raise DeviceTableError(f"{exc} (the file 'python runner.py FOLDER --out FILE' "
                               f"writes)") from None
    if not isinstance(data, dict) or data.get("format") != runner.RESULTS_FORMAT:
        raise _fail(path, "not an fbnas runner results file (written by the runner.py of "
                          "'fbnas lut export-blocks')")
    if data.get("version") != runner.RESULTS_VERSION:
        raise _fail(path, f"results version {data.get('version')!r}; this fbnas reads "
                          f"version {runner.RESULTS_VERSION}")
    meta = data.get("manifest")
    if not isinstance(meta, dict) or not isinstance(meta.get("batch"), int):
        raise _fail(path, "'manifest' (with the batch size) is missing")
    if meta.get("fbnas_version") != __version__:
        logger.warning("%s: the blocks were exported by fbnas %s, this is %s; table keys "
                       "may differ", path, meta.get("fbnas_version"), __version__)
    device = _device(path, data.get("device"))
    tables = {}
    for field in ("blocks", "networks"):
        raw = data.get(field)
        if not isinstance(raw, dict):
            raise _fail(path, f"{field!r} must be an object")
        if len(raw) != meta.get(field):
            raise _fail(path, f"holds {len(raw)} {field}, its manifest lists "
                              f"{meta.get(field)!r}: the file was cut or edited")
        tables[field] = {k: _entry(path, f"{field[:-1]} {k!r}", v) for k, v in raw.items()}
        _unfinished(path, field, tables[field])
    rounds = (data.get("settings") or {}).get("rounds")
    table = LatencyTable(device, batch=meta["batch"],
                         rounds=rounds if isinstance(rounds, int) else 3,
                         entries=tables["blocks"])
    table.reference_ms = burst_reference([*tables["blocks"].values(),
                                          *tables["networks"].values()])
    table.calibration = _calibration(path, data["networks"], table)
    return table
