"""Does JointNAS work? Its choice against the best of random (arch, recipe) pairs.

On the hard digits proxy (``digits?per_class=20``) under one MACs budget, per seed:

1. **JointNAS**: a small search (the settings below) → its chosen pair, measured at the
   full schedule; it used N candidate runs and E training epochs in all.
2. **Random**: uniformly drawn feasible pairs trained with the same short schedule the
   search calibrated, as many as the epochs allow after the same final step (the best
   ``final_candidates`` by short-schedule accuracy retrained at the full schedule), so both
   get the same total epochs E (and about the same number of runs); its choice is the best
   measured of those finals.
3. Both choices are retrained with two fresh seeds (100, 101): the search's own number is
   the maximum over noisy runs (a winner's curse both sides share), the fresh seeds are not.

Results go to ``OUT/study.json`` and a Markdown table on stdout (for docs/jointnas.md).
Everything is stored in ``OUT/seedS/results.sqlite`` stores, so a killed study resumes.

    nice -n 10 python benchmarks/jointnas_study.py --out /tmp/jn_study [--seeds 0 1 2]
        [--max-macs 6e5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fbnas.search.jointnas.coarse import CoarseSearch
from fbnas.search.jointnas.cost import Constraints, PopulationCost
from fbnas.search.jointnas.executor import make_executor
from fbnas.search.jointnas.search import JointNASConfig, run_jointnas
from fbnas.search.jointnas.space import load_joint_space
from fbnas.search.jointnas.store import ResultsStore, run_jobs

DATA = "digits?per_class=20"
STUDY = {
    "space": "jointnas_digits",
    "data": DATA,
    "final_candidates": 2,
    "coarse": {"calibration_candidates": 5, "calibration_epochs": [6], "rounds": 2,
               "pool_log2": 12, "batch": 5, "explore": 0.4, "heldout": 0},
    "fine": {"population": 64, "generations": 30, "parents": 8, "patience": 5,
             "initial": 8, "top_k": 5},
}
EVAL_SEEDS = (100, 101)


def random_baseline(space, cost, constraints, search: CoarseSearch, train, budget: int,
                    short: int, full: int, finals: int, seed: int) -> dict:
    """Random feasible pairs at the short schedule, the best ``finals`` retrained fully,
    within ``budget`` epochs in all."""
    rng = np.random.default_rng(10_000 + seed)
    count = max(finals, (budget - finals * full) // short)
    picks: list[tuple[int, ...]] = []
    seen = set()
    while len(picks) < count:
        batch = space.sample_batch(4096, rng)
        mask = constraints.feasible(cost(batch))
        for row in batch[mask]:
            key = tuple(int(v) for v in row)
            if key not in seen:
                seen.add(key)
                picks.append(key)
            if len(picks) == count:
                break
    results = train([search.job(p, short, "random-short") for p in picks])
    scored = [(r.accuracy, p) for p, r in zip(picks, results, strict=True)
              if r.status == "ok"]
    top = [p for _, p in sorted(scored, key=lambda x: -x[0])[:finals]]
    finals_res = train([search.job(p, None, "random-final") for p in top])
    measured = [(r.accuracy, p) for p, r in zip(top, finals_res, strict=True)
                if r.status == "ok"]
    best_acc, best = max(measured) if measured else (None, top[0])
    epochs = count * short + len(top) * full
    return {"sample": list(best), "accuracy": best_acc, "runs": count + len(top),
            "epochs": int(epochs)}


def fresh_seeds(search: CoarseSearch, train, sample) -> list[float | None]:
    jobs = [search.job(sample, None, f"eval-s{s}", seed=s) for s in EVAL_SEEDS]
    return [r.accuracy if r.status == "ok" else None for r in train(jobs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-macs", type=float, default=6e5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        start = time.time()
        folder = args.out / f"seed{seed}"
        config = JointNASConfig.from_dict({**STUDY, "seed": seed, "max_macs": args.max_macs,
                                           "workers": args.workers})
        result = run_jointnas(config, folder / "search",
                              lambda m, seed=seed: print(f"  [{seed}] {m}", flush=True))
        coarse = json.loads((folder / "search" / "coarse.json").read_text())
        short, full = coarse["short_epochs"], coarse["full_epochs"]
        space = load_joint_space(config.space)
        cost = PopulationCost(space)
        constraints = Constraints(max_macs=args.max_macs)
        executor = make_executor("local", args.workers)
        store = ResultsStore(folder / "search" / "results.sqlite")
        try:
            def train(jobs, executor=executor, store=store):
                return run_jobs(executor, store, jobs)

            search = CoarseSearch(space, cost, constraints, DATA, train, config.coarse,
                                  config.predictor, seed)
            baseline = random_baseline(space, cost, constraints, search, train,
                                       result.total_epochs, short, full,
                                       config.final_candidates, seed)
            joint_fresh = fresh_seeds(search, train, result.chosen)
            random_fresh = fresh_seeds(search, train, baseline["sample"])
        finally:
            executor.close()
            store.close()
        macs = [int(cost.one(result.chosen).macs[0]),
                int(cost.one(baseline["sample"]).macs[0])]
        row = {"seed": seed, "short_epochs": short, "full_epochs": full,
               "joint": {"accuracy": result.measured, "fresh": joint_fresh,
                         "runs": result.trained, "epochs": result.total_epochs,
                         "macs": macs[0], "values": result.chosen_values},
               "random": {**baseline, "fresh": random_fresh, "macs": macs[1]},
               "minutes": (time.time() - start) / 60}
        rows.append(row)
        print(json.dumps(row, default=str))
        (args.out / "study.json").write_text(json.dumps(rows, indent=1, default=str))

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.mean(values) if values else float("nan")

    print("\n| seed | JointNAS runs / epochs | JointNAS acc (search) | JointNAS acc (fresh "
          "seeds) | random runs / epochs | random acc (search) | random acc (fresh seeds) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        j, b = r["joint"], r["random"]
        print(f"| {r['seed']} | {j['runs']} / {j['epochs']} | {j['accuracy']:.3f} | "
              f"{mean(j['fresh']):.3f} | {b['runs']} / {b['epochs']} | {b['accuracy']:.3f} | "
              f"{mean(b['fresh']):.3f} |")
    print(f"| mean | | {mean([r['joint']['accuracy'] for r in rows]):.3f} | "
          f"{mean([mean(r['joint']['fresh']) for r in rows]):.3f} | | "
          f"{mean([r['random']['accuracy'] for r in rows]):.3f} | "
          f"{mean([mean(r['random']['fresh']) for r in rows]):.3f} |")


if __name__ == "__main__":
    main()
