"""Benchmark: do latency tables survive a shared machine? (issue 15, item 5)

Starts its own bounded load (a numpy busy loop in a subprocess, one thread, holding one
core; stopped when the benchmark ends or after ``--load-s`` at most), then, under it:

1. builds the same table twice (``fbnas lut build --space SPACE``: every candidate block
   plus 5 calibration networks, interleaved rounds) and compares the two builds entry by
   entry, with today's values (the lowest per-round median, raw) and the speed-normalised
   ones (lowest relative to the reference bursts, times the table's reference speed) —
   both come from the same timings, so the comparison isolates the estimator;
2. times ``--networks`` random architectures of the space end to end twice, with the old
   ``fbnas latency --measure`` (three measurements back to back per network, the lowest)
   and the new one (:func:`fbnas.cost.lut.measure_networks`: interleaved rounds, the
   table's reference speed), the two methods' passes interleaved (old, new, old, new);
3. fits each build's calibration with the old rule (affine when the sums span 1.3x) and
   the new one (2x span and leave-one-out error < 5 %), and compares predictions of the
   networks with their measured latency (the mean of the two new-method passes).

Everything is a ratio between two things measured in this run: test-retest agreement
(share within ±5 % / ±10 %, Spearman's rho, median |difference|), so the machine's
absolute speed does not matter. Writes ``OUT/lut_shared_machine.json``.

Usage: python benchmarks/lut_shared_machine.py [--space fbnet_v1] [--networks 20]
           [--load matmul|stream|none] [--rounds 3] [--out-dir bench_out]
Runtime: ~6 minutes with the defaults on a 2-core machine (--quick: ~1 minute).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from fbnas.cost.latency import DeviceInfo, measure
from fbnas.cost.lut import (
    BuildSettings,
    Calibration,
    LatencyTable,
    arch_items,
    fit_calibration,
    measure_networks,
    measure_table,
    network_key,
)
from fbnas.search import get_space
from fbnas.search.space import space_networks

LOADS = {
    # BLAS matmul: compute and L3 traffic; one thread so it holds one core
    "matmul": "a = np.random.rand(1500, 1500)\nwhile time.time() < end: a @ a\n",
    # streaming copy of 128 MB arrays: memory bandwidth
    "stream": "a = np.ones(2 ** 24); b = np.empty_like(a)\n"
              "while time.time() < end: np.copyto(b, a)\n",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def background_load(kind: str, seconds: float) -> Iterator[None]:
    """A busy loop in a subprocess for at most ``seconds``, stopped on exit."""
    if kind == "none":
        yield
        return
    code = f"import time, numpy as np\nend = time.time() + {seconds}\n{LOADS[kind]}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        time.sleep(1.0)  # let it start
        yield
    finally:
        proc.kill()
        proc.wait()


def agreement(a: Sequence[float], b: Sequence[float]) -> dict:
    """Test-retest agreement of two measurements of the same things."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rel = np.abs(a - b) / np.minimum(a, b)
    return {"n": int(len(a)), "within_5pct": float(np.mean(rel <= 0.05)),
            "within_10pct": float(np.mean(rel <= 0.10)),
            "spearman": float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan"),
            "median_abs_diff": float(np.median(rel)), "p90_abs_diff": float(np.quantile(rel, 0.9))}


def accuracy(pred: Sequence[float], meas: Sequence[float]) -> dict:
    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    err = (pred - meas) / meas
    return {"within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "within_5pct": float(np.mean(np.abs(err) <= 0.05)),
            "mape": float(np.mean(np.abs(err))), "mean_error": float(np.mean(err)),
            "spearman": float(spearmanr(pred, meas).statistic) if len(pred) > 2 else float("nan")}


def old_fit(networks: Sequence[dict]) -> Calibration:
    """The calibration rule before issue 15 (kept here as the baseline): affine when at
    least 3 networks span 1.3x with a positive scale and non-negative offset, else the
    median ratio."""
    sums = [n["sum_ms"] for n in networks]
    measured = [n["measured_ms"] for n in networks]
    ratio = statistics.median(m / s for m, s in zip(measured, sums, strict=True))
    if len(networks) >= 3 and max(sums) >= 1.3 * min(sums):
        ms, mm = statistics.fmean(sums), statistics.fmean(measured)
        var = sum((s - ms) ** 2 for s in sums)
        scale = sum((s - ms) * (m - mm) for s, m in zip(sums, measured, strict=True)) / var
        offset = mm - scale * ms
        if scale > 0 and offset >= 0:
            return Calibration(scale, tuple(networks), offset, "affine")
    return Calibration(ratio, tuple(networks))


def old_measure(archs, backend: str, threads: int, budget_s: float) -> list[float]:
    """``fbnas latency --measure`` before issue 15: 3 measurements back to back, lowest."""
    out = []
    for arch in archs:
        model = arch.build()
        shape = (1, 3, arch.resolution, arch.resolution)
        out.append(min(measure(model, shape, backend, threads, budget_s=budget_s).median_ms
                       for _ in range(3)))
    return out


def table_values(table: LatencyTable, keys: Sequence[str], normalised: bool) -> list[float]:
    ref = table.value_reference_ms() if normalised else None
    return [table.entries[k].value_ms(ref) for k in keys]


def calibrations(table: LatencyTable, calib, normalised: bool) -> dict[str, Calibration]:
    ref = table.value_reference_ms() if normalised else None
    records = []
    for arch in calib:
        sum_ms = sum(table.entries[k].value_ms(ref) for k in arch.keys)
        measured = table.networks[network_key(arch)].value_ms(ref)
        records.append({"name": arch.name, "sum_ms": sum_ms, "measured_ms": measured})
    return {"old rule": old_fit(records), "new rule": fit_calibration(records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="fbnet_v1")
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--load", choices=[*LOADS, "none"], default="matmul")
    parser.add_argument("--load-s", type=float, default=900.0,
                        help="the load stops after this long at the latest")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=0.5,
                        help="seconds per network measurement (old and new method)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="fbnet_v1_tiny, 6 networks, short budgets: checks the script")
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    args = parser.parse_args()
    if args.quick:
        args.space, args.networks, args.budget_s = "fbnet_v1_tiny", 6, 0.1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    rng = random.Random(7)
    nets = [arch_items(space.arch_def(space.sample(rng)), name=f"net{i}")
            for i in range(args.networks)]
    cands, calib = space_networks(space, None, 1, 5)
    settings = BuildSettings(threads=args.threads, rounds=args.rounds,
                             budget_s=0.05 if args.quick else 0.3)
    started = time.perf_counter()
    results: dict = {"space": args.space, "load": args.load, "rounds": args.rounds,
                     "networks": args.networks, "threads": args.threads,
                     "device": DeviceInfo.current("torch", args.threads).to_dict()}
    with background_load(args.load, args.load_s):
        builds = []
        for b in range(2):
            t0 = time.perf_counter()
            table = LatencyTable(DeviceInfo.current("torch", args.threads))
            try:
                measure_table(table, cands, settings, calibration=calib)
            except Exception as exc:  # noqa: BLE001 - a busy machine is a result here
                log(f"build {b + 1}: {type(exc).__name__}: {exc}")
            builds.append(table)
            log(f"build {b + 1}: {len(table)} entries in {time.perf_counter() - t0:.1f} s, "
                f"reference {table.value_reference_ms():.4f} ms")
            table.save(args.out_dir / f"lut_shared_{b + 1}.json")
        passes: dict[str, list[list[float]]] = {"old": [], "new": []}
        new_settings = BuildSettings(threads=args.threads, rounds=args.rounds,
                                     budget_s=args.budget_s / args.rounds * 3)
        for p in range(2):
            t0 = time.perf_counter()
            passes["old"].append(old_measure(nets, "torch", args.threads, args.budget_s))
            t1 = time.perf_counter()
            timings = measure_networks(nets, new_settings, builds[0].value_reference_ms())
            passes["new"].append([t.ms for t in timings])
            log(f"pass {p + 1}: old {t1 - t0:.1f} s, new {time.perf_counter() - t1:.1f} s")
    keys = sorted(set(builds[0].entries) & set(builds[1].entries))
    results["builds"] = {
        name: agreement(table_values(builds[0], keys, norm), table_values(builds[1], keys, norm))
        for name, norm in (("today: lowest per-round median", False),
                           ("speed-normalised", True))}
    results["measure"] = {name: agreement(*passes[key]) for name, key in
                          (("today: 3 back to back, lowest", "old"),
                           ("interleaved rounds, normalised", "new"))}
    measured = {"raw": np.mean(passes["old"], axis=0), "normalised": np.mean(passes["new"], axis=0)}
    results["calibration"] = {}
    for b, table in enumerate(builds):
        for norm in (False, True):
            ref = table.value_reference_ms() if norm else None
            sums = [sum(table.entries[k].value_ms(ref) for k in n.keys) for n in nets]
            for rule, cal in calibrations(table, calib, norm).items():
                pred = [cal.scale * s + cal.offset_ms for s in sums]
                # raw tables against today's --measure; normalised ones against the new
                # method, whose values are at build 1's reference speed: rescaled to this one
                kind = "normalised" if norm else "raw"
                factor = ref / builds[0].value_reference_ms() if norm else 1.0
                results["calibration"][f"build {b + 1}, {kind}, {rule}"] = {
                    "scale": cal.scale, "offset_ms": cal.offset_ms, "kind": cal.kind,
                    **accuracy(pred, measured[kind] * factor)}
    results["seconds"] = time.perf_counter() - started
    (args.out_dir / "lut_shared_machine.json").write_text(json.dumps(results, indent=1))

    print(f"{args.space}, load {args.load!r}, {args.rounds} rounds, {args.threads} thread(s), "
          f"{results['seconds']:.0f} s")
    print("1. the same table built twice: entries of build 1 vs build 2")
    for name, a in results["builds"].items():
        print(f"   {name:34s} within ±5 % {a['within_5pct']:4.0%}  ±10 % "
              f"{a['within_10pct']:4.0%}  rho {a['spearman']:.3f}  median |diff| "
              f"{a['median_abs_diff']:.1%}  p90 {a['p90_abs_diff']:.1%}  (n={a['n']})")
    print(f"2. {args.networks} networks timed twice (pass 1 vs pass 2)")
    for name, a in results["measure"].items():
        print(f"   {name:34s} within ±5 % {a['within_5pct']:4.0%}  ±10 % "
              f"{a['within_10pct']:4.0%}  rho {a['spearman']:.3f}  median |diff| "
              f"{a['median_abs_diff']:.1%}")
    print("3. calibrated predictions vs measured (mean of 2 passes; raw tables vs today's "
          "--measure, normalised vs the new one)")
    for name, a in results["calibration"].items():
        print(f"   {name:34s} within ±10 % {a['within_10pct']:4.0%}  MAPE {a['mape']:.1%}  "
              f"mean error {a['mean_error']:+.1%}  ({a['kind']}: scale {a['scale']:.3f}, "
              f"offset {a['offset_ms']:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
