"""How well does the JointNAS predictor rank? Held-out candidates, the noise ceiling, and
what proxy pretraining adds, on the candidates a study already trained.

Reads the results stores of ``benchmarks/jointnas_study.py`` (``STUDY/seed*/search/
results.sqlite``): every short-schedule run (search rounds, calibration and the random
baseline). The held-out set is the random baseline's short runs of one seed (uniform
feasible pairs: the predictor's real use is ranking such candidates); the predictor is
fitted on every other short-schedule run of every seed. The noise ceiling is measured by
training ``--ceiling`` of the held-out candidates again with another seed (stored too)
and ranking seed against seed. Fits are repeated with ``--fits`` predictor seeds.

    nice -n 10 python benchmarks/jointnas_predictor.py --study /tmp/jn_study
        [--heldout-seed 0] [--ceiling 10] [--fits 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from fbnas.search.jointnas.coarse import CoarseSearch
from fbnas.search.jointnas.cost import Constraints, PopulationCost
from fbnas.search.jointnas.executor import make_executor
from fbnas.search.jointnas.predictor import (
    PredictorConfig,
    evaluate_predictor,
    rank_correlation,
)
from fbnas.search.jointnas.space import load_joint_space
from fbnas.search.jointnas.store import ResultsStore, run_jobs

DATA = "digits?per_class=20"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--space", default="jointnas_digits")
    parser.add_argument("--short", type=int, default=6, help="short-schedule epochs")
    parser.add_argument("--heldout-seed", type=int, default=0)
    parser.add_argument("--ceiling", type=int, default=10)
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = load_joint_space(args.space)
    cost = PopulationCost(space)
    train_x, train_y, test = [], [], []
    for path in sorted(args.study.glob("seed*/search/results.sqlite")):
        seed = int(path.parent.parent.name[4:])
        store = ResultsStore(path)
        random_keys = {job.key for job, _ in store.results("random-short")}
        for job, result in store.results():
            if result.status != "ok" or job.recipe["epochs"] != args.short or job.seed != seed:
                continue
            sample = space.sample_of(job.arch_def, job.recipe)
            if seed == args.heldout_seed and job.key in random_keys:
                test.append((sample, result.accuracy, job))
            else:
                train_x.append(sample)
                train_y.append(result.accuracy)
        store.close()
    heldout_keys = {t[0] for t in test}
    keep = [i for i, s in enumerate(train_x) if s not in heldout_keys]
    train = (np.array([train_x[i] for i in keep]), np.array([train_y[i] for i in keep]))
    print(f"fitted on {len(train[0])} short-schedule runs, held out {len(test)} random ones "
          f"of seed {args.heldout_seed}")

    # The noise ceiling: some held-out candidates trained again with another seed.
    store = ResultsStore(args.study / f"seed{args.heldout_seed}" / "search" / "results.sqlite")
    executor = make_executor("local", args.workers)
    try:
        search = CoarseSearch(space, cost, Constraints(), DATA,
                              lambda jobs: run_jobs(executor, store, jobs), seed=0)
        ceiling = test[:args.ceiling]
        again = run_jobs(executor, store, [search.job(s, args.short, "ceiling",
                                                       seed=args.heldout_seed + 50)
                                            for s, _, _ in ceiling])
    finally:
        executor.close()
        store.close()
    pairs = [(a, r.accuracy) for (_, a, _), r in zip(ceiling, again, strict=True)
             if r.status == "ok"]
    x = np.array([s for s, _, _ in test])
    y = np.array([a for _, a, _ in test])
    rows = {"pretrained": [], "scratch": []}
    for fit in range(args.fits):
        result = evaluate_predictor(space, cost, PredictorConfig(), train, x, y, None, fit)
        for key in rows:
            rows[key].append(result[key])
    noise = rank_correlation(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    print("\n| | Kendall τ | Spearman ρ | candidates |")
    print("|---|---|---|---|")
    for key, label in (("pretrained", "predictor, proxy-pretrained"),
                       ("scratch", "predictor without proxy pretraining")):
        k = [r["kendall"] for r in rows[key]]
        s = [r["spearman"] for r in rows[key]]
        print(f"| {label} (mean ± sd of {args.fits} fits) | {statistics.mean(k):.3f} ± "
              f"{statistics.pstdev(k):.3f} | {statistics.mean(s):.3f} ± "
              f"{statistics.pstdev(s):.3f} | {len(test)} |")
    print(f"| noise ceiling (seed vs seed) | {noise['kendall']:.3f} | {noise['spearman']:.3f} "
          f"| {len(pairs)} |")


if __name__ == "__main__":
    main()
