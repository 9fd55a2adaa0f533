"""Benchmark: export every zoo model to ONNX, check it with ONNX Runtime, time ORT vs eager.

For each model (at its native resolution unless --resolution): build it, calibrate its BN
statistics on 8 random images (2 above 320 px; untrained weights otherwise give
input-independent outputs and the check would compare constants), ``fbnas.export.to_onnx``
it (BN folded, MobileOne re-parameterised, ``onnx.checker``, ORT vs eager at batch 1 and
2), then time ORT and eager PyTorch at batch 1 with the same number of threads,
interleaved run by run.

Eager is the model as built, in eval mode under ``torch.inference_mode`` (BN not folded,
MobileOne train-form not re-parameterised): what a user runs without exporting.

Each model's timing is ``--rounds`` rounds of up to ``--runs`` interleaved runs (fewer
for slow models: at least 3, about ``--budget`` seconds per backend and round), after one
warm-up each; the per-round medians are reported as median (min-max), with the fastest
run of each backend beside them.

Threads: one for both by default. On a shared 2-core machine eager PyTorch with 2 OpenMP
threads collapses whenever another process takes a core (fbnet_c at 224: 17 ms with one
thread, 50 ms to 2.6 s with two under the same load; ONNX Runtime slows 2-3x), so
two-thread ratios measure the neighbours; use ``--threads 2`` on a quiet machine.

Usage: python benchmarks/export_zoo.py [--names fbnet_a,eff_0] [--resolution R]
           [--out-dir DIR] [--runs 10] [--rounds 1] [--budget 10] [--threads N] [--json F]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import fbnas
from fbnas.export import calibrate_batchnorm, to_onnx
from fbnas.zoo import list_archs

CALIBRATION_MAX_RES = 320
"""BN is calibrated on 8 random images up to this resolution, on 2 above it (memory)."""


@dataclass
class Row:
    name: str
    resolution: int
    params: int
    ok: bool
    error: str = ""
    max_abs_diff: float = math.nan
    max_rel_diff: float = math.nan
    output_spread: float = math.nan
    size_mib: float = math.nan
    external_data: bool = False
    export_s: float = math.nan
    ort_ms: float = math.nan
    ort_ms_range: tuple[float, float] = (math.nan, math.nan)
    ort_min_ms: float = math.nan
    eager_ms: float = math.nan
    eager_ms_range: tuple[float, float] = (math.nan, math.nan)
    eager_min_ms: float = math.nan
    runs: int = 0
    total_s: float = math.nan

    @property
    def ratio(self) -> float:
        return self.ort_ms / self.eager_ms

    @property
    def min_ratio(self) -> float:
        """ORT/eager of the fastest runs: the least disturbed by other processes."""
        return self.ort_min_ms / self.eager_min_ms


def interleaved_ms(eager, onnx_run, runs: int, rounds: int,
                   budget_s: float) -> tuple[list[list[float]], list[list[float]], int]:
    """Latencies (ms) of eager and ORT per round, alternating run by run.

    Interleaving puts both backends under the same load when other processes share the
    cores; the run count shrinks for slow models (at least 3) to stay near the budget.
    """

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    first = max(timed(eager), timed(onnx_run))  # warm-up; sizes the run count
    runs = max(3, min(runs, int(budget_s * 1e3 / max(first, 1e-3))))
    eager_rounds, ort_rounds = [], []
    for _ in range(rounds):
        pairs = [(timed(eager), timed(onnx_run)) for _ in range(runs)]
        eager_rounds.append([e for e, _ in pairs])
        ort_rounds.append([o for _, o in pairs])
    return eager_rounds, ort_rounds, runs


def spread(rounds: list[list[float]]) -> tuple[float, tuple[float, float], float]:
    """(median of the round medians, (min, max) of the round medians, fastest run)."""
    medians = [statistics.median(r) for r in rounds]
    return statistics.median(medians), (min(medians), max(medians)), min(map(min, rounds))


def benchmark(name: str, resolution: int | None, out_dir: Path, args) -> Row:
    """Exports, checks and times one zoo model; a failure is recorded, not raised."""
    start = time.perf_counter()
    model = fbnas.build_model(name)
    resolution = resolution or model.resolution
    row = Row(name, resolution, sum(p.numel() for p in model.parameters()), ok=False)
    path = out_dir / f"{name}.onnx"
    try:
        export_and_time(model, row, path, args)
        row.ok = True
    except Exception as exc:  # noqa: BLE001 - one failure must not stop the survey
        row.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".data").unlink(missing_ok=True)
    row.total_s = time.perf_counter() - start
    return row


def export_and_time(model: torch.nn.Module, row: Row, path: Path, args) -> None:
    shape = (1, 3, row.resolution, row.resolution)
    # 8 images: a BN over pooled 1x1 features (MobileOne's last block) estimated from 2
    # values per channel gets variances ~1e-9 that blow float32 rounding up ~300x. Above
    # 320 px 2 images bound the memory (eff_l2: 800 px), and no such BN is there.
    calibration_batch = 8 if row.resolution <= CALIBRATION_MAX_RES else 2
    calibrate_batchnorm(model, (calibration_batch, *shape[1:]), steps=1)
    model.eval()
    start = time.perf_counter()
    report = to_onnx(model, path, shape, threads=args.threads, timing_runs=0)
    row.export_s = time.perf_counter() - start
    row.max_abs_diff, row.output_spread = report.max_abs_diff, report.output_spread
    row.max_rel_diff = report.max_rel_diff
    row.size_mib, row.external_data = report.size_bytes / 2**20, report.external_data

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(shape)
    feed = {"input": x.numpy()}

    def eager() -> None:
        with torch.inference_mode():
            model(x)

    eager_ms, ort_ms, row.runs = interleaved_ms(
        eager, lambda: session.run(None, feed), args.runs, args.rounds, args.budget)
    row.eager_ms, row.eager_ms_range, row.eager_min_ms = spread(eager_ms)
    row.ort_ms, row.ort_ms_range, row.ort_min_ms = spread(ort_ms)


def describe(row: Row, index: int, count: int) -> str:
    head = f"[{index:3d}/{count}] {row.name:<22} {row.resolution:4d}px"
    if not row.ok:
        return f"{head}  FAILED {row.error}"
    ranges = ""
    if row.eager_ms_range[0] != row.eager_ms_range[1]:
        ranges = (f" (eager {row.eager_ms_range[0]:.1f}-{row.eager_ms_range[1]:.1f}, ORT "
                  f"{row.ort_ms_range[0]:.1f}-{row.ort_ms_range[1]:.1f})")
    return (f"{head}  |diff| {row.max_abs_diff:8.2e} (rel {row.max_rel_diff:7.1e}, spread "
            f"{row.output_spread:7.1e})  "
            f"ORT {row.ort_ms:9.2f} ms  eager {row.eager_ms:9.2f} ms  ORT/eager "
            f"{row.ratio:5.2f} (fastest runs {row.ort_min_ms:.2f} / {row.eager_min_ms:.2f} = "
            f"{row.min_ratio:.2f}){ranges}  {row.size_mib:7.1f} MiB"
            f"{' ext' if row.external_data else ''}  x{row.runs}  "
            f"export+check {row.export_s:5.1f} s, all {row.total_s:5.1f} s")


def summarize(rows: list[Row], wall_s: float, start_load: float) -> str:
    passed = [r for r in rows if r.ok]
    lines = [f"\n{len(passed)}/{len(rows)} exported and matched ONNX Runtime "
             f"(wall time {wall_s / 60:.1f} min)"]
    if passed:
        ratios = sorted(r.ratio for r in passed)
        q1, median, q3 = np.percentile(ratios, [25, 50, 75])
        worst = max(passed, key=lambda r: r.max_rel_diff)
        lines.append(f"ORT/eager latency ratio (medians): median over models {median:.2f} "
                     f"(quartiles {q1:.2f}-{q3:.2f}, min {ratios[0]:.2f}, max "
                     f"{ratios[-1]:.2f}); ORT faster for {sum(r.ratio < 1 for r in passed)} "
                     f"of {len(passed)}")
        min_ratios = [r.min_ratio for r in passed]
        lines.append(f"ORT/eager latency ratio (fastest runs): median over models "
                     f"{statistics.median(min_ratios):.2f} (min {min(min_ratios):.2f}, max "
                     f"{max(min_ratios):.2f})")
        lines.append(f"1-min load average at start / end: {start_load:.2f} / "
                     f"{os.getloadavg()[0]:.2f} (other processes on these cores disturb timings)")
        lines.append(f"largest max |diff| relative to max |output|: {worst.name} "
                     f"{worst.max_rel_diff:.2e} ({worst.max_abs_diff:.2e}); largest max "
                     f"|diff| {max(r.max_abs_diff for r in passed):.2e}")
        external = [r.name for r in passed if r.external_data]
        biggest = max(passed, key=lambda r: r.size_mib)
        lines.append(f"largest file {biggest.name} {biggest.size_mib:.0f} MiB; external data: "
                     f"{', '.join(external) or 'none'}")
        slowest = sorted(passed, key=lambda r: -r.total_s)[:3]
        lines.append("slowest to benchmark: " + ", ".join(f"{r.name} {r.total_s:.0f} s"
                                                         for r in slowest))
    failed = [r for r in rows if not r.ok]
    lines += [f"FAILED {r.name}: {r.error}" for r in failed]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--names", help="Comma-separated zoo names (default: all).")
    parser.add_argument("--resolution", type=int, help="Input size (default: native).")
    parser.add_argument("--out-dir", type=Path,
                        help="Keep the .onnx files here (default: a temp dir, each file "
                             "deleted after its model, the dir at the end).")
    parser.add_argument("--runs", type=int, default=10, help="Timed runs per round (max).")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--budget", type=float, default=10.0,
                        help="Seconds per backend and round that bound the run count.")
    parser.add_argument("--threads", type=int, default=1,
                        help="Intra-op threads of both (default 1: see the docstring).")
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args()
    names = args.names.split(",") if args.names else list_archs()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="fbnas-export-zoo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args.keep = args.out_dir is not None
    print(f"{len(names)} models -> {out_dir}; {args.threads} threads for both; torch "
          f"{torch.__version__}, onnxruntime {ort.__version__}", flush=True)
    rows: list[Row] = []
    start, start_load = time.perf_counter(), os.getloadavg()[0]
    try:
        for index, name in enumerate(names, 1):
            rows.append(benchmark(name, args.resolution, out_dir, args))
            gc.collect()  # the model and its session are gone: free them before the next
            print(describe(rows[-1], index, len(names)), flush=True)
    finally:
        if args.out_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio if r.ok else None}
                                             for r in rows], indent=1))
    print(summarize(rows, time.perf_counter() - start, start_load))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
