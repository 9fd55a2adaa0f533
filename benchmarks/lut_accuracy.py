"""Benchmark: how well latency tables predict whole networks measured end to end.

Builds a table over every candidate block of a search space plus zoo models, calibrates it
on a few separate networks, then predicts and measures (end to end, interleaved rounds,
lowest per-round median) N random architectures of the space and the zoo models. Reports,
before calibration (plain sum of entries) and after (scale * sum): the share within ±10 %,
Spearman's rho and the mean absolute % error, and draws predicted vs measured (PNG).

Usage: python benchmarks/lut_accuracy.py [--samples 50] [--method context|isolated|both]
           [--backend torch|onnxruntime] [--threads 1] [--out-dir bench_out]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from fbnas.cost.latency import DeviceInfo, measure, reference_ms
from fbnas.cost.lut import BuildSettings, LatencyTable, arch_items, measure_table
from fbnas.search import get_space
from fbnas.search.space import space_networks

ZOO = ["fbnet_a", "fbnet_b", "fbnet_c", "FBNetV2_F1", "FBNetV2_F4", "FBNetV3_A", "mnv2",
       "mnv3", "mnv3_small", "default"]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict:
    err = (pred - meas) / meas
    return {"within_10pct": float(np.mean(np.abs(err) <= 0.10)), "spearman": spearman(pred, meas),
            "mape": float(np.mean(np.abs(err))), "mean_error": float(np.mean(err))}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="fbnet_v1")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--method", choices=["context", "isolated", "both"], default="both")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    rng = random.Random(args.seed)
    samples = [arch_items(space.arch_def(space.sample(rng)), name=f"sample{i}")
               for i in range(args.samples)]
    zoo = [arch_items(name, space.input_size) for name in ZOO]
    calib = space_networks(space, None, 1, 5)[1]  # what `fbnas lut build --space` uses
    candidates = [arch_items(a, name=f"cand{j}") for j, a in
                  enumerate(space.all_candidate_archs())]
    methods = ["context", "isolated"] if args.method == "both" else [args.method]
    if args.backend == "onnxruntime":
        methods = ["isolated"]
    quiet = min(reference_ms(args.threads) for _ in range(5))
    log(f"reference workload {quiet:.3f} ms (quiet baseline)")

    tables = {}
    for method in methods:
        settings = BuildSettings(backend=args.backend, threads=args.threads, method=method,
                                 rounds=args.rounds)
        table = LatencyTable(DeviceInfo.current(args.backend, args.threads))
        t0 = time.perf_counter()
        measure_table(table, candidates + zoo, settings, calibration=calib)
        log(f"{method}: {len(table)} entries + {len(calib)} calibration networks in "
            f"{time.perf_counter() - t0:.1f} s, scale {table.scale:.3f}, offset "
            f"{table.calibration.offset_ms:.2f} ms")
        tables[method] = table
        table.save(args.out_dir / f"lut_{method}.json")

    nets = samples + zoo
    models = [n.build() for n in nets]
    measured = [[] for _ in nets]
    busy_rounds = 0
    for r in range(args.rounds):
        ref = reference_ms(args.threads)
        busy = ref > 1.5 * quiet
        busy_rounds += busy
        order = list(range(len(nets)))
        random.Random(r).shuffle(order)
        for k, i in enumerate(order):
            shape = (1, 3, nets[i].resolution, nets[i].resolution)
            measured[i].append(measure(models[i], shape, args.backend, args.threads,
                                       budget_s=0.5).median_ms)
            print(f"\rround {r + 1}/{args.rounds}: {k + 1}/{len(nets)}", end="",
                  file=sys.stderr, flush=True)
        log(f"  reference {ref:.3f} ms{' (BUSY)' if busy else ''}")
    meas = np.array([min(m) for m in measured])
    is_zoo = np.array([i >= len(samples) for i in range(len(nets))])

    results = {"space": args.space, "samples": args.samples, "zoo": ZOO,
               "backend": args.backend, "threads": args.threads, "rounds": args.rounds,
               "busy_rounds": busy_rounds, "device": DeviceInfo.current(args.backend,
                                                                      args.threads).to_dict(),
               "methods": {}}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 * len(methods), figsize=(5.2 * 2 * len(methods), 5),
                             squeeze=False)
    for m_idx, method in enumerate(methods):
        table = tables[method]
        sums = np.array([table.predict(n).sum_ms for n in nets])
        offset = table.calibration.offset_ms
        for c_idx, (label, pred) in enumerate((("sum of entries", sums),
                                               (f"x {table.scale:.3f} + {offset:.2f} ms "
                                                f"(calibrated)",
                                                sums * table.scale + offset))):
            stats = {"all": metrics(pred, meas), "space": metrics(pred[~is_zoo], meas[~is_zoo]),
                     "zoo": metrics(pred[is_zoo], meas[is_zoo])}
            key = "before" if c_idx == 0 else "after"
            results["methods"].setdefault(method, {"scale": table.scale,
                                                   "offset_ms": offset})[key] = stats
            ax = axes[0][2 * m_idx + c_idx]
            ax.scatter(meas[~is_zoo], pred[~is_zoo], s=14, label=f"{args.space} samples")
            ax.scatter(meas[is_zoo], pred[is_zoo], s=24, marker="s", label="zoo models")
            for i in np.where(is_zoo)[0]:
                ax.annotate(nets[i].name, (meas[i], pred[i]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            lo, hi = 0.8 * min(meas.min(), pred.min()), 1.2 * max(meas.max(), pred.max())
            xs = np.linspace(lo, hi, 10)
            ax.plot(xs, xs, "k-", lw=1)
            ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="grey", alpha=0.2, label="±10 %")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            a = stats["all"]
            ax.set_title(f"{method}, {label}\n{a['within_10pct']:.0%} within ±10 %, "
                         f"ρ={a['spearman']:.3f}, MAPE {a['mape']:.1%}", fontsize=9)
            ax.set_xlabel("measured latency (ms)")
            ax.set_ylabel("predicted latency (ms)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Latency-table accuracy: {args.backend}, {args.threads} thread(s), "
                 f"{results['device']['cpu']}", fontsize=10)
    fig.tight_layout()
    png = args.out_dir / "lut_accuracy.png"
    fig.savefig(png, dpi=110)
    results["networks"] = [
        {"name": n.name, "resolution": n.resolution, "measured_ms": float(meas[i]),
         "rounds_ms": measured[i],
         "sum_ms": {m: tables[m].predict(n).sum_ms for m in methods}}
        for i, n in enumerate(nets)]
    (args.out_dir / "lut_accuracy.json").write_text(json.dumps(results, indent=1))

    print(f"{len(nets)} networks ({args.samples} {args.space} samples + {len(ZOO)} zoo), "
          f"{args.backend}, {args.threads} thread(s); busy rounds: {busy_rounds}/{args.rounds}")
    for method, res in results["methods"].items():
        for key in ("before", "after"):
            a, s, z = res[key]["all"], res[key]["space"], res[key]["zoo"]
            print(f"{method:9s} {key:6s} (scale {res['scale'] if key == 'after' else 1:.3f}, "
                  f"offset {res['offset_ms'] if key == 'after' else 0:.2f} ms): "
                  f"within ±10 % {a['within_10pct']:.0%} (space {s['within_10pct']:.0%}, zoo "
                  f"{z['within_10pct']:.0%}), Spearman {a['spearman']:.3f}, MAPE "
                  f"{a['mape']:.1%}, mean error {a['mean_error']:+.1%}")
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
