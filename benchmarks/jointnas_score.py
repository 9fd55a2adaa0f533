"""Scoring speed of JointNAS populations: candidates per second, against arch_cost.

Scoring a population is what stage 1 does to every Sobol pool and stage 2 to every
generation: decode the points, encode them for the predictor, predict accuracy, compute
MACs, params and latency, check the constraints. The target (issue 17) is >= 1e5
candidates/s on 2 cores at batch 4096. The baseline, measured in the same run, is the
obvious loop: ``fbnas.cost.arch_cost`` (and freezing) per candidate.

Rounds interleave the two, after a warm-up pool that fills the per-block tables (a real
search fills them on its first pools); each round scores a fresh Sobol pool. Latency uses a
latency table whose entries are made up here (the benchmark times lookups, not a device).

    python benchmarks/jointnas_score.py [--space jointnas_digits] [--batch 4096]
        [--rounds 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.stats import qmc

from fbnas.cost import arch_cost
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyTable
from fbnas.search.jointnas.cost import Constraints, PopulationCost
from fbnas.search.jointnas.predictor import AccuracyPredictor
from fbnas.search.jointnas.space import load_joint_space


class _AnyKeyTable(LatencyTable):
    """A latency table that answers every key with a made-up, key-dependent value."""

    def __contains__(self, key: object) -> bool:
        return True

    def lookup(self, key: str) -> float:
        return (hash(key) % 1000) / 1000.0


def _table() -> LatencyTable:
    return _AnyKeyTable(DeviceInfo.current())


def score(space, cost, predictor, constraints, points):
    samples = space.decode_batch(points)
    accuracy = predictor.predict(samples)
    costs = cost(samples)
    feasible = constraints.feasible(costs)
    return accuracy, costs, feasible


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="jointnas_digits")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", type=int, default=200,
                        help="candidates the arch_cost loop costs per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the predictor (2 cores: 1 leaves one to numpy)")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_joint_space(args.space)
    table = None if args.no_latency else _table()
    cost = PopulationCost(space, table)
    predictor = AccuracyPredictor(space)
    sobol = qmc.Sobol(space.dims, seed=0)
    warm = sobol.random(args.batch)
    _, costs, _ = score(space, cost, predictor, Constraints(), warm)
    constraints = Constraints(max_macs=float(np.median(costs.macs)),
                              max_params=float(np.median(costs.params)),
                              max_ms=float(np.median(costs.latency_ms))
                              if costs.latency_ms is not None else None)
    for _ in range(3):  # fill the tables as a search's first pools do
        score(space, cost, predictor, constraints, sobol.random(args.batch))
    fast, slow = [], []
    for _ in range(args.rounds):
        points = sobol.random(args.batch)
        start = time.perf_counter()
        _, _, feasible = score(space, cost, predictor, constraints, points)
        fast.append(args.batch / (time.perf_counter() - start))
        samples = space.decode_batch(points[:args.baseline])
        start = time.perf_counter()
        for row in samples:
            full = space.full_indices([int(i) for i in row])
            arch_cost(space.arch_def_of_full(full), num_classes=space.num_classes)
        slow.append(args.baseline / (time.perf_counter() - start))
    print(f"space {space.name} ({space.dims} dims), batch {args.batch}, {args.threads} "
          f"threads, {args.rounds} rounds, latency {'off' if table is None else 'on'}")
    print(f"population scoring: median {statistics.median(fast):,.0f} cand/s "
          f"(min {min(fast):,.0f}, max {max(fast):,.0f}); feasible share "
          f"{feasible.mean():.2f}")
    print(f"arch_cost loop:     median {statistics.median(slow):,.0f} cand/s "
          f"(min {min(slow):,.0f}, max {max(slow):,.0f})")
    print(f"ratio (median): {statistics.median(fast) / statistics.median(slow):,.0f}x; "
          f"target 1e5 cand/s: {'met' if statistics.median(fast) >= 1e5 else 'NOT met'}")


if __name__ == "__main__":
    main()
