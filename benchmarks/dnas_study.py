"""Does the search work? DNAS against a latency target vs random architectures of that cost.

On the reduced FBNetV1 space (``fbnet_v1_tiny``, 32x32) and scikit-learn's digits:
1. a latency table measured here (10-class head), target = half the predicted latency of
   the space's largest network (the most expensive candidate in every layer);
2. one DNAS search per seed (the demo's settings) → the derived architecture, its predicted
   and measured latency (is it within ±15 % of the target?);
3. ``--random`` architectures sampled uniformly whose predicted latency is within ±15 % of the
   target (the same band);
4. every derived and random architecture trained on the hard digits proxy (20 images per
   class, ``digits_hard`` recipe: full digits is too easy to separate architectures) with
   each seed; mean ± std of the final val top-1.

Writes ``OUT/study.json`` and ``OUT/study.md`` (the table for docs/).

    python benchmarks/dnas_study.py --out bench_out/dnas_study [--seeds 0 1 2] [--random 5]
    python benchmarks/dnas_study.py --out bench_out/dnas_study --remeasure
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

import fbnas
from fbnas.cost.latency import DeviceInfo, measure, reference_ms
from fbnas.cost.lut import BuildSettings, LatencyTable, arch_items, measure_table
from fbnas.data import open_datasets
from fbnas.search import get_space
from fbnas.search.dnas.search import DNASConfig, run_search
from fbnas.search.dnas.supernet import layer_costs
from fbnas.search.space import space_networks
from fbnas.train import Trainer, load_recipe

SPACE = "fbnet_v1_tiny"
RESOLUTION = 32
CLASSES = 10
BAND = 0.15


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_all(records: list[dict], rounds: int = 5) -> None:
    """Sets ``measured_ms`` of every record: end to end, interleaved rounds, lowest median
    (timed after all training, so no search or training competes for the CPU)."""
    models = [fbnas.build_model(r["arch_def"], num_classes=CLASSES).eval() for r in records]
    times: list[list[float]] = [[] for _ in records]
    for round_idx in range(rounds):
        order = list(range(len(records)))
        random.Random(round_idx).shuffle(order)
        for i in order:
            times[i].append(measure(models[i], (1, 3, RESOLUTION, RESOLUTION),
                                    budget_s=0.3).median_ms)
    for record, values in zip(records, times, strict=True):
        record["measured_ms"] = min(values)


def proxy_top1(arch_def: dict, seed: int) -> float:
    config = load_recipe("digits_hard").replace(seed=seed)
    data = open_datasets("digits?per_class=20", config.resolution, config.augment)
    torch.manual_seed(seed)
    model = fbnas.build_model(arch_def, num_classes=data.num_classes)
    return Trainer(model, config, data, tensorboard=False).fit()[-1]["val_top1"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/dnas_study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--random", type=int, default=5)
    parser.add_argument("--search-epochs", type=int, default=16)
    parser.add_argument("--mode", choices=["soft", "single-path"], default="soft")
    parser.add_argument("--remeasure", action="store_true",
                        help="only time the architectures of OUT/study.json again")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.remeasure:
        return measure_and_report(json.loads((args.out / "study.json").read_text()), args.out)
    torch.set_num_threads(1)
    space = get_space(SPACE)
    started = time.perf_counter()

    table_path = args.out / "lut.json"
    table = (LatencyTable.load(table_path) if table_path.exists()
             else LatencyTable(DeviceInfo.current()))
    nets, calibration = space_networks(space, RESOLUTION, 1, 5, CLASSES)
    measure_table(table, nets, BuildSettings(), table_path, calibration=calibration)
    costs = layer_costs(space, "latency", table, RESOLUTION, num_classes=CLASSES)
    slowest = costs.most_expensive
    target = 0.5 * slowest
    log(f"table: {len(table)} entries; largest network {slowest:.3f} ms -> target "
        f"{target:.3f} ms (space {costs.cheapest:.3f}-{costs.most_expensive:.3f} ms)")

    searched = []
    for seed in args.seeds:
        run = args.out / f"search_seed{seed}"
        config = DNASConfig(epochs=args.search_epochs,
                            warmup_epochs=max(1, args.search_epochs // 4), mode=args.mode,
                            tau_final=1.0, target=target, cost="latency", seed=seed,
                            w_lr=0.05, theta_lr=0.2, resolution=RESOLUTION)
        t0 = time.perf_counter()
        result = run_search(space, "digits", config, run, table, resume=True)
        arch = json.loads((run / "arch.json").read_text())["arch_def"]
        record = json.loads((run / "arch.json").read_text())
        searched.append({"seed": seed, "arch_def": arch, "choices": result.choice_names,
                         "derived": record["derived"],
                         "argmax_ms": record.get("argmax_cost", record["predicted_cost"]),
                         "predicted_ms": table.predict(arch_items(arch, RESOLUTION, CLASSES))
                         .predicted_ms, "search_s": time.perf_counter() - t0})
        log(f"search seed {seed}: {result.choice_names} ({record['derived']}) predicted "
            f"{searched[-1]['predicted_ms']:.3f} ms, plain argmax "
            f"{searched[-1]['argmax_ms']:.3f} ms ({time.perf_counter() - t0:.0f} s)")

    rng = random.Random(1234)
    randoms = []
    tries = 0
    while len(randoms) < args.random:
        tries += 1
        if tries > 20000:
            raise SystemExit(f"found only {len(randoms)} random architectures within ±15 % of "
                             f"{target:.3f} ms in 20000 samples")
        arch = space.arch_def(space.sample(rng))
        predicted = table.predict(arch_items(arch, RESOLUTION, CLASSES)).predicted_ms
        if abs(predicted / target - 1) <= BAND:
            randoms.append({"arch_def": arch, "predicted_ms": predicted})
    log(f"{len(randoms)} random architectures in the band after {tries} samples")

    for record in searched:
        record["top1"] = [proxy_top1(record["arch_def"], seed) for seed in args.seeds]
        log(f"derived (search seed {record['seed']}): top-1 {record['top1']}")
    for i, record in enumerate(randoms):
        record["top1"] = [proxy_top1(record["arch_def"], seed) for seed in args.seeds]
        log(f"random {i}: top-1 {record['top1']}")

    results = {"target_ms": target, "slowest_ms": slowest, "searched": searched,
               "random": randoms, "train_and_search_s": time.perf_counter() - started}
    (args.out / "study.json").write_text(json.dumps(results, indent=1))
    return measure_and_report(results, args.out)


def measure_and_report(results: dict, out: Path) -> int:
    """Times every architecture (after all training: nothing competes for the CPU) and
    writes ``study.md``; ``--remeasure`` re-runs just this on a quieter machine."""
    searched, randoms, target = results["searched"], results["random"], results["target_ms"]
    quiet = min(reference_ms() for _ in range(5))
    log("measuring every architecture end to end (interleaved rounds)")
    measure_all(searched + randoms)
    busy = reference_ms() > 1.5 * quiet
    results["device"] = DeviceInfo.current().to_dict()
    (out / "study.json").write_text(json.dumps(results, indent=1))

    def fmt(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {spread:.2f}"

    lines = [f"Target {target:.3f} ms (half the largest network of the space, "
             f"{results['slowest_ms']:.3f} ms); band ±15 % = {target * (1 - BAND):.3f}-"
             f"{target * (1 + BAND):.3f} ms.", "",
             "| architecture | plain argmax ms | predicted ms | measured ms | vs target | "
             "proxy top-1 (%) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in searched:
        lines.append(f"| DNAS, search seed {r['seed']}: {' '.join(r['choices'])} | "
                     f"{r['argmax_ms']:.3f} | {r['predicted_ms']:.3f} | "
                     f"{r['measured_ms']:.3f} | {r['measured_ms'] / target - 1:+.1%} | "
                     f"{fmt(r['top1'])} |")
    for i, r in enumerate(randoms):
        lines.append(f"| random {i} | | {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | "
                     f"{r['measured_ms'] / target - 1:+.1%} | {fmt(r['top1'])} |")
    derived_all = [v for r in searched for v in r["top1"]]
    random_all = [v for r in randoms for v in r["top1"]]
    hits = sum(abs(r["measured_ms"] / target - 1) <= BAND for r in searched)
    lines += ["", f"DNAS mean {fmt(derived_all)} % over {len(derived_all)} runs; random mean "
              f"{fmt(random_all)} % over {len(random_all)} runs. Within ±15 % of the target "
              f"(measured): {hits}/{len(searched)} searches. Search + training "
              f"{results['train_and_search_s']:.0f} s."
              + (" The machine was busy while timing: latencies are inflated." if busy else "")]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
