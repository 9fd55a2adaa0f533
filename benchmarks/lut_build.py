"""Benchmark: time to build the latency table of a search space (target < 60 s for FBNetV1).

Runs what ``fbnas lut build --space SPACE`` runs (every distinct block, interleaved rounds,
then calibration on 5 networks) and reports the time of each phase, repeated.

Usage: python benchmarks/lut_build.py [--space fbnet_v1] [--repeats 2] [--method context]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import BuildSettings, LatencyTable, arch_items, calibrate, measure_table
from fbnas.search import get_space


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="fbnet_v1")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--method", choices=["context", "isolated"], default="isolated")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    space = get_space(args.space)
    totals = []
    for repeat in range(args.repeats):
        t0 = time.perf_counter()
        nets = [arch_items(a, name=f"cand{j}") for j, a in
                enumerate(space.all_candidate_archs())]
        rng = random.Random(0)
        calib = [arch_items(space.arch_def(space.sample(rng)), name=f"s{i}") for i in range(5)]
        settings = BuildSettings(backend=args.backend, method=args.method, rounds=args.rounds)
        table = LatencyTable(DeviceInfo.current(args.backend))
        measure_table(table, nets, settings)
        t1 = time.perf_counter()
        table.calibration = calibrate(table, calib, settings)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        print(f"repeat {repeat + 1}: {len(table)} entries measured in {t1 - t0:.1f} s, "
              f"calibration {t2 - t1:.1f} s, total {t2 - t0:.1f} s (scale {table.scale:.3f})",
              flush=True)
    print(f"{args.space} table ({args.backend}, {args.method}, {args.rounds} rounds): median "
          f"{statistics.median(totals):.1f} s (min {min(totals):.1f}, max {max(totals):.1f}); "
          f"target < 60 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
