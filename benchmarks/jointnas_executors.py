"""JointNAS executors: worker start-up (forkserver vs spawn) and candidate throughput.

For each repeat, interleaved: a LocalExecutor with ``start_method`` forkserver and spawn is
timed from creation until its workers finished one warm-up job each (start-up), then over a
batch of tiny candidates (throughput, candidates per second), with 1 and with N workers.
Medians and spread over the repeats; the 1-worker spawn run is the baseline of the same
run. Also the results store's write rate (one committed transaction per result).

    python benchmarks/jointnas_executors.py --workers 2 --jobs 8 --repeats 3

The forkserver is Python's per-process service: the first forkserver executor of the
process pays its start (one import of torch and fbnas), later ones reuse it; each repeat
runs in a fresh process so every repeat pays it, as a search does once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_ARCH = {
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "blocks": [[("conv_k3_hs", 8, 2, 1)], [("ir_k3", 8, 1, 1, {"expansion": 2})],
               [("ir_k3_se", 16, 2, 1, {"expansion": 2})]],
}
RECIPE = {"epochs": 2, "batch_size": 32, "lr": 0.1, "label_smoothing": 0.0,
          "random_crop": False, "resolution": 16, "workers": 0}
DATA = "digits?per_class=10&val_per_class=10"


def one_run(start_method: str, workers: int, jobs: int) -> dict[str, float]:
    """In this (fresh) process: start-up seconds and candidates per second."""
    from fbnas.search.jointnas.candidate import CandidateJob
    from fbnas.search.jointnas.executor import LocalExecutor

    def job(seed: int) -> CandidateJob:
        return CandidateJob(TINY_ARCH, RECIPE, DATA, seed=seed)

    start = time.perf_counter()
    executor = LocalExecutor(workers, start_method=start_method)  # type: ignore[arg-type]
    executor.run([job(1000 + i) for i in range(workers)])  # each worker: one warm-up job
    startup = time.perf_counter() - start
    start = time.perf_counter()
    results = executor.run([job(i) for i in range(jobs)])
    seconds = time.perf_counter() - start
    executor.close()
    assert all(r.ok for r in results), [r.error for r in results]
    return {"startup_s": startup, "per_s": jobs / seconds}


def store_rate(n: int = 300) -> float:
    from fbnas.search.jointnas.candidate import CandidateJob, CandidateResult
    from fbnas.search.jointnas.store import ResultsStore

    with tempfile.TemporaryDirectory() as folder:
        store = ResultsStore(Path(folder) / "results.sqlite")
        jobs = [CandidateJob(TINY_ARCH, RECIPE, DATA, seed=i) for i in range(n)]
        start = time.perf_counter()
        for job in jobs:
            store.put(job, CandidateResult(job.key, "ok", 0.5, None, 1.0, {"val_top1": [0.5]}))
        seconds = time.perf_counter() - start
        store.close()
    return n / seconds


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "WORKERS", "JOBS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    settings = [(m, w) for w in (1, args.workers) for m in ("spawn", "forkserver")]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {s: [] for s in settings}
    for _ in range(args.repeats):
        for method, workers in settings:  # interleaved: load drifts hit every setting alike
            out = subprocess.run([sys.executable, __file__, "--one", method, str(workers),
                                  str(args.jobs)], capture_output=True, text=True,
                                 check=True, cwd=Path(__file__).resolve().parent)
            runs[(method, workers)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(r["per_s"] for r in runs[("spawn", 1)])
    print(f"{args.jobs} tiny candidates per batch, {args.repeats} repeats, median [min-max]")
    print("| start | workers | start-up s | candidates/s | × 1-worker spawn |")
    print("|---|---|---|---|---|")
    for (method, workers), rs in runs.items():
        rate = [r["per_s"] for r in rs]
        print(f"| {method} | {workers} | {spread([r['startup_s'] for r in rs])} | "
              f"{spread(rate)} | {statistics.median(rate) / base:.2f} |")
    rates = [store_rate() for _ in range(3)]
    print(f"results store: {spread(rates)} committed puts/s")


if __name__ == "__main__":
    main()
