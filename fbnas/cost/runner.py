"""Times the blocks written by ``fbnas lut export-blocks`` with ONNX Runtime, on this device.

FBNet searches for the phone or board the network will run on, which is rarely the machine
that runs the search, and that device usually has neither fbnas nor PyTorch. So this file
stands alone: ``export-blocks`` copies it into the block folder, and on the device it needs
only Python 3.8+, ``onnxruntime`` and ``numpy``. It imports nothing else beyond the standard
library (the tests run it isolated from fbnas and check which modules it loaded), which is
why it repeats the timing method of fbnas's own tables here instead of importing it:

- each measurement opens a fresh ``InferenceSession`` (``--threads`` intra-op threads,
  sequential execution, as ``fbnas lut build --backend onnxruntime``), warms it up, then
  times single runs in batches of 10 until the median moved less than 2 % twice in a row,
  or ``--budget-s`` is spent;
- all blocks (and the whole networks used to calibrate the table) are measured in
  ``--rounds`` interleaved rounds, each in a new shuffled order, so a slow spell of the
  device (thermal throttling, a background task) hits one round of many blocks rather
  than every round of one block; an entry keeps its lowest per-round median;
- each round starts by timing a fixed reference conv (``reference.onnx``); a round whose
  reference runs ``--busy-factor`` times slower than the quietest seen counts as busy, and
  entries measured only in busy rounds get up to ``--extra-rounds`` more;
- a short burst of the reference (20 runs) is timed between every two measurements, and
  each entry records, per round, the geometric mean of the bursts before and after it
  (``rounds_ref_ms``): ``fbnas lut import`` stores entries relative to it, so a spell that
  slows the device slows the reference next to the entry too and cancels out.

Usage (in the folder copied to the device)::

    python runner.py . --out results.json [--threads 1] [--rounds 3] [--budget-s 0.3]
    python -m fbnas.cost.runner DIR --out results.json      # where fbnas is installed

The results file is rewritten atomically after every measurement; running the same command
again continues where an interrupted run stopped. Bring it back and turn it into a table
with ``fbnas lut import results.json --out lut.json``.

Exit status: 0 done, 2 bad input (named in the message), 3 some entries were measured only
while the device was busy (saved and flagged; run again to re-measure them), 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fbnas-device-blocks"
MANIFEST_VERSION = 1
RESULTS_FORMAT = "fbnas-device-results"
RESULTS_VERSION = 1

DEVICE_IDENTITY = ("system", "machine", "processor", "cpu_count", "onnxruntime", "provider",
                   "threads")
"""Device fields that must agree to continue a results file (not the Python version)."""


class RunnerError(Exception):
    """Bad input (folder, manifest, results file, option): printed as one line, exit 2."""


class Unit:
    """One thing to time: a block (keyed by its table key) or a whole network."""

    def __init__(self, kind: str, name: str, file: str, input_shape: list[int]) -> None:
        self.kind = kind
        self.name = name
        self.file = file
        self.input_shape = input_shape


# --------------------------------------------------------------------------- files


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; a missing or broken file raises naming it."""
    if not path.is_file():
        raise RunnerError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunnerError(f"{what} {str(path)!r} is corrupted or truncated ({exc})") from None


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes ``data`` via a temp file in the same folder, fsync and rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name + ".",
                               suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp's 0600 -> what open() would give (umask)
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def manifest_fingerprint(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON: ties a results file to one block folder."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _shape(value: Any, where: str) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise RunnerError(f"{where}: input_shape must be a list of positive integers, "
                          f"got {value!r}")
    return list(value)


def load_manifest(folder: Path) -> tuple[dict, list[Unit], Unit]:
    """The manifest of a block folder, its units (blocks, then networks) and the reference.

    Every file the manifest names must exist, so a folder copied only in part fails here,
    before any timing, rather than halfway through.
    """
    if not folder.is_dir():
        raise RunnerError(f"block folder {str(folder)!r} does not exist")
    path = folder / MANIFEST_NAME
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise RunnerError(f"{path} is not an fbnas block manifest (written by "
                          f"'fbnas lut export-blocks')")
    if manifest.get("version") != MANIFEST_VERSION:
        raise RunnerError(f"{path} has manifest version {manifest.get('version')!r}; this "
                          f"runner reads version {MANIFEST_VERSION} (use the runner.py "
                          f"exported with it)")
    units = []
    seen = set()
    for kind, field in (("block", "blocks"), ("network", "networks")):
        entries = manifest.get(field)
        if not isinstance(entries, list):
            raise RunnerError(f"{path}: {field!r} must be a list")
        for i, entry in enumerate(entries):
            where = f"{path}: {field}[{i}]"
            if not isinstance(entry, dict):
                raise RunnerError(f"{where} must be an object")
            name = entry.get("key" if kind == "block" else "name")
            file = entry.get("file")
            if not isinstance(name, str) or not isinstance(file, str):
                raise RunnerError(f"{where} needs a {'key' if kind == 'block' else 'name'} "
                                  f"and a file name")
            if (kind, name) in seen:
                raise RunnerError(f"{where}: {name!r} is listed twice")
            seen.add((kind, name))
            units.append(Unit(kind, name, file, _shape(entry.get("input_shape"), where)))
    reference = manifest.get("reference")
    if not isinstance(reference, dict) or not isinstance(reference.get("file"), str):
        raise RunnerError(f"{path}: 'reference' must name the reference model's file")
    ref_unit = Unit("reference", "reference", reference["file"],
                    _shape(reference.get("input_shape"), f"{path}: reference"))
    for unit in [*units, ref_unit]:
        if Path(unit.file).name != unit.file or not (folder / unit.file).is_file():
            raise RunnerError(f"{path}: model file {unit.file!r} ({unit.kind} {unit.name!r}) "
                              f"is missing from {folder}")
    return manifest, units, ref_unit


# --------------------------------------------------------------------------- the device


def _processor_name() -> str:
    """The CPU's marketing name where the OS tells it (Linux/Android cpuinfo, macOS sysctl)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            fields = {}
            for line in fh:
                if ":" in line:
                    key, value = line.split(":", 1)
                    fields.setdefault(key.strip().lower(), value.strip())
        for key in ("model name", "hardware", "processor", "cpu model"):
            value = fields.get(key, "")
            if value and not value.isdigit():
                return value
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=5).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def device_record(ort: Any, threads: int, provider: str) -> dict:
    """Where and how the results were measured; ``fbnas lut import`` turns it into DeviceInfo."""
    return {"platform": platform.platform(), "system": platform.system(),
            "machine": platform.machine(), "processor": _processor_name(),
            "cpu_count": os.cpu_count() or 1, "onnxruntime": ort.__version__,
            "provider": provider, "threads": threads, "python": platform.python_version()}


# --------------------------------------------------------------------------- timing


def time_run(run: Callable[[], object], budget_s: float, warmup: int = 3, min_runs: int = 10,
             max_runs: int = 2000, rel_tol: float = 0.02) -> tuple[float, float, float, int]:
    """(median, p10, p90, runs) in ms of ``run``, timed until the median is stable.

    Single runs are timed in batches of ``min_runs``; timing stops once the median after a
    batch moved less than ``rel_tol`` from the one before (twice in a row), after
    ``max_runs`` runs, or when ``budget_s`` is spent (one batch is always taken).
    """
    for _ in range(warmup):
        run()
    samples: list[float] = []
    start = time.perf_counter()
    previous = None
    stable = 0
    while len(samples) < max_runs:
        for _ in range(min_runs):
            t0 = time.perf_counter()
            run()
            samples.append((time.perf_counter() - t0) * 1e3)
        median = statistics.median(samples)
        if previous is not None and abs(median - previous) <= rel_tol * previous:
            stable += 1
            if stable >= 2:
                break
        else:
            stable = 0
        previous = median
        if time.perf_counter() - start > budget_s:
            break
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return statistics.median(ordered), pick(0.1), pick(0.9), len(ordered)


class SessionFactory:
    """Opens ONNX Runtime sessions the way fbnas's onnxruntime tables do."""

    def __init__(self, ort: Any, np: Any, folder: Path, threads: int, provider: str,
                 seed: int) -> None:
        available = ort.get_available_providers()
        if provider not in available:
            raise RunnerError(f"execution provider {provider!r} is not available in this "
                              f"onnxruntime ({', '.join(available)})")
        self.ort, self.np, self.folder = ort, np, folder
        self.threads, self.provider = threads, provider
        self.rng = np.random.default_rng(seed)

    def runner(self, unit: Unit) -> Callable[[], object]:
        """A no-argument callable that runs ``unit``'s model once on a fixed random input."""
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        path = self.folder / unit.file
        try:
            session = self.ort.InferenceSession(str(path), options, providers=[self.provider])
        except Exception as exc:  # noqa: BLE001 - any ORT load failure names the file
            raise RunnerError(f"onnxruntime cannot load {path} ({unit.kind} {unit.name!r}): "
                              f"{exc}") from None
        inputs = session.get_inputs()
        declared = inputs[0].shape if inputs else None
        if len(inputs) != 1 or list(declared) != unit.input_shape:
            raise RunnerError(f"{path}: the model takes input(s) "
                              f"{[i.shape for i in inputs]}, the manifest says "
                              f"{unit.input_shape}")
        feed = {inputs[0].name: self.rng.standard_normal(unit.input_shape,
                                                         dtype=self.np.float32)}
        return lambda: session.run(None, feed)


# --------------------------------------------------------------------------- results


def _new_entry(unit: Unit, manifest_entry: dict) -> dict:
    entry = {"file": unit.file, "input_shape": unit.input_shape}
    for extra in ("op", "label", "resolution", "keys"):
        if extra in manifest_entry:
            entry[extra] = manifest_entry[extra]
    entry.update({"rounds_ms": [], "rounds_ref_ms": [], "runs": 0, "spread": 0.0,
                  "busy_rounds": 0, "busy": False})
    return entry


def _check_resumable(results: Any, path: Path, fingerprint: str, device: dict) -> None:
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise RunnerError(f"{path} exists but is not an fbnas runner results file; write "
                          f"to another --out")
    if results.get("version") != RESULTS_VERSION:
        raise RunnerError(f"{path} has results version {results.get('version')!r}; this "
                          f"runner writes version {RESULTS_VERSION}")
    theirs = (results.get("manifest") or {}).get("fingerprint")
    if theirs != fingerprint:
        raise RunnerError(f"{path} holds results for a different block folder (manifest "
                          f"fingerprint {str(theirs)[:12]}..., this folder's "
                          f"{fingerprint[:12]}...): the blocks were exported again with other "
                          f"settings; write to another --out or delete {path.name}")
    old = results.get("device") or {}
    differences = [f"{k}: {old.get(k)!r} != {device[k]!r}" for k in DEVICE_IDENTITY
                   if old.get(k) != device[k]]
    if differences:
        raise RunnerError(f"{path} was measured on another setup ({'; '.join(differences)}); "
                          f"write to another --out")
    quiet = results.get("quiet_reference_ms")
    if quiet is not None and not positive_number(quiet):
        raise RunnerError(f"{path}: quiet_reference_ms must be a positive number, got "
                          f"{quiet!r}; delete the file to start over")
    for field in ("blocks", "networks"):
        entries = results.get(field)
        if not isinstance(entries, dict):
            raise RunnerError(f"{path}: {field!r} must be an object; delete the file to "
                              f"start over")
        for name, entry in entries.items():
            problem = _entry_problem(entry)
            if problem:
                raise RunnerError(f"{path}: {field} entry {name!r}: {problem}; delete the "
                                  f"file to start over")


def positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite number above zero (bools are not numbers here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with a saved entry (``None`` if it can be continued)."""
    if not isinstance(entry, dict):
        return "not an object"
    rounds = entry.get("rounds_ms")
    if not isinstance(rounds, list) or not all(positive_number(v) for v in rounds):
        return "rounds_ms must be a list of positive numbers"
    refs = entry.get("rounds_ref_ms", [])  # absent in results of runners before it
    if not isinstance(refs, list) or not all(positive_number(v) for v in refs):
        return "rounds_ref_ms must be a list of positive numbers"
    for name in ("runs", "busy_rounds"):
        value = entry.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{name} must be a non-negative integer"
    if not isinstance(entry.get("spread"), (int, float)) or not isinstance(entry.get("busy"),
                                                                              bool):
        return "spread must be a number and busy true or false"
    return None


def open_results(path: Path, manifest: dict, units: list[Unit], device: dict,
                 settings: dict) -> dict:
    """The results to fill: a new skeleton, or ``path`` when it continues this folder's run."""
    fingerprint = manifest_fingerprint(manifest)
    if path.exists():
        results = read_json(path, "results file")
        _check_resumable(results, path, fingerprint, device)
    else:
        meta = {k: manifest.get(k) for k in ("fbnas_version", "source", "resolution", "batch",
                                             "opset")}
        results = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "unit": "ms",
                   "manifest": {"fingerprint": fingerprint, **meta,
                                "blocks": len(manifest["blocks"]),
                                "networks": len(manifest["networks"])},
                   "blocks": {}, "networks": {}, "quiet_reference_ms": None}
    results["device"] = device
    results["settings"] = settings
    by_name = {("block", e["key"]): e for e in manifest["blocks"]}
    by_name.update({("network", e["name"]): e for e in manifest["networks"]})
    for unit in units:
        table = results["blocks" if unit.kind == "block" else "networks"]
        if unit.name not in table:
            table[unit.name] = _new_entry(unit, by_name[(unit.kind, unit.name)])
    return results


def _entry(results: dict, unit: Unit) -> dict:
    return results["blocks" if unit.kind == "block" else "networks"][unit.name]


def _needs_round(entry: dict, round_idx: int, extra: bool) -> bool:
    if extra:
        return bool(entry["busy"])
    return len(entry["rounds_ms"]) <= round_idx


def _record(entry: dict, median: float, p10: float, p90: float, runs: int,
            busy: bool, ref_ms: float) -> None:
    entry["rounds_ms"].append(median)
    entry.setdefault("rounds_ref_ms", []).append(ref_ms)
    entry["runs"] += runs
    entry["spread"] = max(entry["spread"], (p90 - p10) / median if median else 0.0)
    entry["busy_rounds"] += int(busy)
    entry["busy"] = entry["busy_rounds"] == len(entry["rounds_ms"])


# --------------------------------------------------------------------------- the run


def measure_all(results: dict, out: Path, units: list[Unit], reference: Unit,
                sessions: SessionFactory, args: argparse.Namespace,
                log: Callable[[str], None]) -> list[Unit]:
    """Times every unit still missing rounds, saving ``out`` after each; returns busy units."""
    rng = random.Random(args.seed)
    run_reference = sessions.runner(reference)

    def reference_ms() -> float:
        return time_run(run_reference, budget_s=0.2, warmup=2, min_runs=15)[0]

    def burst_ms() -> float:  # a quick reading of the speed: 20 runs, no settling
        return time_run(run_reference, budget_s=0.0, warmup=2, min_runs=20)[0]

    quiet = min([reference_ms() for _ in range(3)]
                + [results.get("quiet_reference_ms") or math.inf])
    results["quiet_reference_ms"] = quiet
    todo = sum(_needs_round(_entry(results, u), r, False)
               for u in units for r in range(args.rounds))
    done = 0
    for round_idx in range(args.rounds + args.extra_rounds):
        extra = round_idx >= args.rounds
        pending = [u for u in units if _needs_round(_entry(results, u), round_idx, extra)]
        if not pending:
            continue
        ref = reference_ms()
        quiet = results["quiet_reference_ms"] = min(quiet, ref)
        busy = ref > args.busy_factor * quiet
        rng.shuffle(pending)
        name = f"extra round {round_idx - args.rounds + 1}" if extra else \
            f"round {round_idx + 1}/{args.rounds}"
        log(f"{name}: {len(pending)} model(s); reference {ref:.3f} ms (quiet {quiet:.3f})"
            f"{' - device busy' if busy else ''}")
        before = burst_ms()
        for unit in pending:
            median, p10, p90, runs = time_run(sessions.runner(unit), args.budget_s)
            after = burst_ms()
            _record(_entry(results, unit), median, p10, p90, runs, busy,
                    math.sqrt(before * after))
            before = after
            write_json_atomic(out, results)
            done += not extra
            log(f"  [{min(done, todo)}/{todo}] {unit.file:<18} {median:9.4f} ms  "
                f"{unit.kind} {unit.name}")
    return [u for u in units if _entry(results, u)["busy"]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="runner.py", description="Time the blocks of an fbnas block folder with "
        "ONNX Runtime (writes results for 'fbnas lut import').")
    parser.add_argument("folder", type=Path, help="the folder written by "
                        "'fbnas lut export-blocks' (holds manifest.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default: FOLDER/results.json); an existing one "
                             "for the same folder and setup is continued")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; each entry keeps its lowest median "
                             "(default 3)")
    parser.add_argument("--budget-s", type=float, default=0.3,
                        help="seconds of timed runs per model per round at most (default 0.3)")
    parser.add_argument("--extra-rounds", type=int, default=2,
                        help="rounds added for entries measured only while busy (default 2)")
    parser.add_argument("--busy-factor", type=float, default=1.5,
                        help="a round whose reference conv runs this much slower than its "
                             "quietest time is busy (default 1.5)")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        help="ONNX Runtime execution provider (default CPUExecutionProvider)")
    parser.add_argument("--seed", type=int, default=0, help="order of the rounds, inputs")
    args = parser.parse_args(argv)
    for name, low in (("threads", 1), ("rounds", 1), ("extra_rounds", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}")
    if not args.budget_s > 0:
        parser.error("--budget-s must be > 0")
    if not args.busy_factor > 1:
        parser.error("--busy-factor must be > 1")
    return args


def run(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    """Loads the folder, times what is missing and returns the exit status."""
    manifest, units, reference = load_manifest(args.folder)
    out = args.out if args.out is not None else args.folder / "results.json"
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        raise RunnerError(f"the runner needs onnxruntime and numpy ({exc}); install them "
                          f"with: pip install onnxruntime numpy") from None
    ort.set_default_logger_severity(3)  # errors only: no graph-optimizer chatter per block
    device = device_record(ort, args.threads, args.provider)
    settings = {"rounds": args.rounds, "extra_rounds": args.extra_rounds,
                "budget_s": args.budget_s, "busy_factor": args.busy_factor, "seed": args.seed}
    results = open_results(out, manifest, units, device, settings)
    measured = sum(bool(_entry(results, u)["rounds_ms"]) for u in units)
    log(f"timing {len(manifest['blocks'])} blocks and {len(manifest['networks'])} network(s) "
        f"of {args.folder} on {device['processor']} (onnxruntime {device['onnxruntime']}, "
        f"{args.provider}, {args.threads} thread(s), {args.rounds} rounds)"
        + (f"; continuing {out}: {measured} already measured" if measured else ""))
    sessions = SessionFactory(ort, np, args.folder, args.threads, args.provider, args.seed)
    busy = measure_all(results, out, units, reference, sessions, args, log)
    write_json_atomic(out, results)
    if busy:
        log(f"{len(busy)} model(s) were measured only while the device was busy (reference "
            f"over {args.busy_factor}x its quiet time); they are flagged in {out} - run the "
            f"same command again when the device is idle")
        return 3
    print(f"wrote {out}: {len(manifest['blocks'])} blocks, {len(manifest['networks'])} "
          f"network(s); bring it back and run: fbnas lut import {out.name} --out lut.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: bad input prints ``error: ...`` and returns 2, never a traceback."""
    args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        return run(args, log)
    except RunnerError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: every finished measurement is saved; run the same command again "
            "to continue")
        return 130


if __name__ == "__main__":
    sys.exit(main())
