"""Benchmark: time to build the latency table of a search space (target < 60 s for FBNetV1).

Runs what ``fbnas lut build --space SPACE`` runs (every distinct block, interleaved rounds,
with 5 calibration networks timed among them) and reports the time, repeated.

Usage: python benchmarks/lut_build.py [--space fbnet_v1] [--repeats 2] [--method context]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import BuildSettings, LatencyTable, arch_items, measure_table
from fbnas.search import get_space
from fbnas.search.space import space_networks


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
        calib = space_networks(space, None, 1, 5)[1]
        settings = BuildSettings(backend=args.backend, method=args.method, rounds=args.rounds)
        table = LatencyTable(DeviceInfo.current(args.backend))
        measure_table(table, nets, settings, calibration=calib)
        t1 = time.perf_counter()
        totals.append(t1 - t0)
        print(f"repeat {repeat + 1}: {len(table)} entries + {len(calib)} calibration networks "
              f"in {t1 - t0:.1f} s (scale {table.scale:.3f}, offset "
              f"{table.calibration.offset_ms:.2f} ms)", flush=True)
    print(f"{args.space} table ({args.backend}, {args.method}, {args.rounds} rounds): median "
          f"{statistics.median(totals):.1f} s (min {min(totals):.1f}, max {max(totals):.1f}); "
          f"target < 60 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
