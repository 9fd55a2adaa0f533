"""Benchmark: analytic cost of all zoo models vs building + counting them.

Search evaluates millions of candidate architectures, so fbnas computes params and MACs
from the arch def (``fbnas.cost.arch_cost``) instead of building modules and running a
counting forward pass. This script times both over all 122 zoo models, interleaved model by
model and repeated, and prints the ratio with its spread.

Baselines (``--baseline``):
  meta  build each model on PyTorch's meta device + count params and MACs there (the
        fastest way to build and count; what the test suite does)  [default]
  cpu   build with real weights on the CPU + count on the meta device (what a user
        building models would pay; slow: allocates and initialises every weight)

Usage: python benchmarks/zoo_cost.py [--rounds 3] [--baseline meta|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import fbnas
from fbnas.builder.builder import clear_plan_cache
from fbnas.cost import arch_cost, count_macs, count_params
from fbnas.zoo import get_entry, list_archs


def build_and_count(name: str, baseline: str) -> tuple[int, int]:
    resolution = get_entry(name).resolution
    if baseline == "meta":
        with torch.device("meta"):
            model = fbnas.build_model(name)
    else:
        model = fbnas.build_model(name).to("meta")
    return count_params(model), count_macs(model, resolution)


def analytic(name: str) -> tuple[int, int]:
    cost = arch_cost(name)
    return cost.params, cost.macs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", choices=["meta", "cpu"], default="meta")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = list_archs()
    print(f"{len(names)} zoo models, {args.rounds} rounds, baseline: build on "
          f"{args.baseline} + count; torch {torch.__version__}", flush=True)
    rows = []
    for round_idx in range(args.rounds):
        built = cold = warm = 0.0
        clear_plan_cache()
        for i, name in enumerate(names):
            # interleave: baseline, analytic with a cold plan cache, analytic again (warm)
            t0 = time.perf_counter()
            expected = build_and_count(name, args.baseline)
            t1 = time.perf_counter()
            got = analytic(name)
            t2 = time.perf_counter()
            analytic(name)
            t3 = time.perf_counter()
            if got != expected:
                print(f"MISMATCH {name}: analytic {got} vs counted {expected}", file=sys.stderr)
                return 1
            built += t1 - t0
            cold += t2 - t1
            warm += t3 - t2
            print(f"\rround {round_idx + 1}/{args.rounds}: {i + 1}/{len(names)} {name:<24}",
                  end="", file=sys.stderr, flush=True)
        print("", file=sys.stderr)
        rows.append((built, cold, warm))
        print(f"round {round_idx + 1}: build+count {built:7.2f} s | analytic (first call) "
              f"{cold * 1e3:7.1f} ms = {built / cold:6.0f}x | analytic (cached plans) "
              f"{warm * 1e3:6.1f} ms = {built / warm:6.0f}x", flush=True)
    ratios = [b / c for b, c, _ in rows]
    warm_ratios = [b / w for b, _, w in rows]
    print(f"\nratio build+count / analytic over {args.rounds} rounds: median "
          f"{statistics.median(ratios):.0f}x (min {min(ratios):.0f}x, max {max(ratios):.0f}x); "
          f"with cached plans median {statistics.median(warm_ratios):.0f}x "
          f"(min {min(warm_ratios):.0f}x, max {max(warm_ratios):.0f}x)")
    print(f"all {len(names)} analytic figures equal the counted ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
