"""Benchmark: how well a block latency model predicts blocks and networks it never saw.

(issue 15, item 4) The model is trained as ``fbnas lut build --model-sample N`` trains it:
``N`` blocks spread by a Latin hypercube over the block ranges of training networks
(FBNetV3-style stage settings: per-stage channels x0.75-1.25, expansions 2-6, depths ±1,
around FBNetV3_A/B/C; FBNetV2-style width variants: per-block channels x0.5-1.25 around
FBNetV2_F1-F4), measured like a table (interleaved rounds, reference bursts, busy
detection), then the regressor chosen by cross-validation. It is then tested on

- blocks: a random set of distinct blocks of *other* variants (seeds the training never
  used) that the training table does not hold, each measured twice (two table builds,
  each in its own shuffled rounds): the model against build 1, and build 2 against
  build 1 (the test-retest spread of the same blocks with the same method);
- networks: those test variants and the zoo models FBNetV3_A/B, FBNetV2_F1/F4, every
  block predicted by the model (the few that coincide with training blocks by the
  table), calibrated (``scale * sum + offset``) on 5 training variants, against the
  network timed end to end (``measure_networks``), and timed twice for the test-retest
  spread.

Everything is expressed at the training table's reference speed (speed-normalised).
Reports the share within ±5 % / ±10 %, MAPE, Spearman's rho, the ratio of the model's
MAPE to the test-retest MAPE (goal <= 1.5), and plots predicted vs measured.

Usage: python benchmarks/latency_model.py [--train-blocks 300] [--test-blocks 150]
           [--test-networks 20] [--resolution 160] [--out-dir bench_out]
Runtime: ~8 minutes with the defaults on a 2-core machine (--quick: ~1.5 minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from fbnas.cost.block_model import BlockModelError, parse_block_key
from fbnas.cost.block_sampling import block_ranges, sample_blocks
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import (
    BuildSettings,
    LatencyTable,
    arch_items,
    fit_calibration,
    measure_networks,
    measure_table,
)
from fbnas.zoo.catalog import get_arch_def

V3_BASES = ("FBNetV3_A", "FBNetV3_B", "FBNetV3_C")
V2_BASES = ("FBNetV2_F1", "FBNetV2_F2", "FBNetV2_F3", "FBNetV2_F4")
ZOO = ("FBNetV3_A", "FBNetV3_B", "FBNetV2_F1", "FBNetV2_F4")
V2_WIDTHS = (0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def _searchable(stage_idx: int, stages: list) -> bool:
    return 0 < stage_idx < len(stages) - 1  # not the stem, not the last (head) stage


def v3_variant(base: str, rng: random.Random) -> dict:
    """FBNetV3-style: per-stage channels, per-block expansion, per-block depth."""
    arch = copy.deepcopy(get_arch_def(base))
    for s, stage in enumerate(arch["blocks"]):
        if not _searchable(s, arch["blocks"]):
            continue
        scale = rng.uniform(0.75, 1.25)
        for block in stage:
            block[1] = _round8(block[1] * scale)
            if block[3] > 1:
                block[3] = max(1, block[3] + rng.choice((-1, 0, 1)))
            for extra in block[4:]:
                if isinstance(extra, dict) and extra.get("expansion", 1) > 1:
                    extra["expansion"] = rng.choice((2, 3, 4, 5, 6))
    return arch


def v2_variant(base: str, rng: random.Random) -> dict:
    """FBNetV2-style: a width option per block (channel masking over a superset)."""
    arch = copy.deepcopy(get_arch_def(base))
    for s, stage in enumerate(arch["blocks"]):
        if _searchable(s, arch["blocks"]):
            for block in stage:
                block[1] = _round8(block[1] * rng.choice(V2_WIDTHS))
    return arch


def variants(count: int, seed: int, resolution: int | None, prefix: str) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 2 == 0:
            arch, kind = v3_variant(rng.choice(V3_BASES), rng), "v3"
        else:
            arch, kind = v2_variant(rng.choice(V2_BASES), rng), "v2"
        out.append(arch_items(arch, resolution, name=f"{prefix}_{kind}_{i}"))
    return out


def stats(pred, meas) -> dict:
    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    err = np.abs(pred - meas) / meas
    return {"n": int(len(err)), "within_5pct": float(np.mean(err <= 0.05)),
            "within_10pct": float(np.mean(err <= 0.10)), "mape": float(np.mean(err)),
            "p90": float(np.quantile(err, 0.9)),
            "spearman": float(spearmanr(pred, meas).statistic) if len(err) > 2 else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-blocks", type=int, default=300)
    parser.add_argument("--train-networks", type=int, default=40,
                        help="variants whose block ranges the training sample spans")
    parser.add_argument("--test-blocks", type=int, default=150)
    parser.add_argument("--test-networks", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=160,
                        help="input size of every network (default 160: shorter runs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script")
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    args = parser.parse_args()
    if args.quick:
        args.train_blocks, args.test_blocks, args.test_networks = 60, 30, 4
        args.train_networks, args.resolution, args.rounds = 10, 64, 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = DeviceInfo.current("torch", args.threads)
    settings = BuildSettings(threads=args.threads, rounds=args.rounds, budget_s=0.1)

    # 1. training: blocks sampled over the ranges of the training variants, with the
    # networks' classifier heads (held by the table, so never unseen; they train the
    # model's heads too)
    train_nets = variants(args.train_networks, 0, args.resolution, "train")
    test_nets = variants(args.test_networks, 1000, args.resolution, "test")
    test_nets += [arch_items(name, args.resolution) for name in ZOO]
    sample = sample_blocks(block_ranges(train_nets), args.train_blocks, seed=0)
    heads = {i.key: i for n in train_nets + test_nets for i in n.items if not describable(i.key)}
    table = LatencyTable(device)
    t0 = time.perf_counter()
    measure_table(table, [], settings, extra_items=sample + list(heads.values()))
    model = table.fit_model()
    reference = table.value_reference_ms()
    log(f"training: {len(sample)} blocks measured in {time.perf_counter() - t0:.0f} s; "
        f"{model.candidate.name} chosen (cross-validated error "
        + ", ".join(f"{k} {v:.1%}" for k, v in model.cv_errors.items()) + ")")

    # 2. unseen blocks, measured twice
    unseen = {}
    for net in test_nets:
        for item in net.items:
            if item.key not in table and table.model_prediction(item.key) is not None:
                unseen.setdefault(item.key, item)  # a block the model answers (not the head)
    picked = random.Random(1).sample(sorted(unseen), min(args.test_blocks, len(unseen)))
    builds = []
    for b in range(2):
        t0 = time.perf_counter()
        retest = LatencyTable(device)
        measure_table(retest, [], BuildSettings(threads=args.threads, rounds=args.rounds,
                                                budget_s=0.1, seed=b + 1),
                      extra_items=[unseen[k] for k in picked])
        builds.append([retest.entries[k].value_ms(reference) for k in picked])
        log(f"test blocks, build {b + 1}: {len(picked)} in {time.perf_counter() - t0:.0f} s")
    predicted_blocks = [model.predict_key(k).ms for k in picked]
    extrapolated = [bool(model.predict_key(k).extrapolated) for k in picked]

    # 3. networks: calibrated model sums vs end to end, timed twice
    calib = sorted(train_nets, key=lambda n: table.predict(n).sum_ms)
    calib = [calib[round(i * (len(calib) - 1) / 4)] for i in range(5)]
    passes = []
    for p in range(2):
        t0 = time.perf_counter()
        timings = measure_networks(calib + test_nets, replace_seed(settings, p + 7, 0.3),
                                   reference)
        passes.append([t.ms for t in timings])
        log(f"networks, pass {p + 1}: {len(timings)} in {time.perf_counter() - t0:.0f} s")
    calibration = fit_calibration([
        {"name": n.name, "sum_ms": table.predict(n).sum_ms, "measured_ms": passes[0][i]}
        for i, n in enumerate(calib)])
    predictions = [table.predict(n) for n in test_nets]
    predicted_nets = [calibration.scale * p.sum_ms + calibration.offset_ms for p in predictions]
    measured_nets = [passes[0][len(calib) + i] for i in range(len(test_nets))]
    retest_nets = [passes[1][len(calib) + i] for i in range(len(test_nets))]
    is_zoo = [n.name in ZOO for n in test_nets]

    results = {
        "device": device.to_dict(), "resolution": args.resolution, "rounds": args.rounds,
        "model": {"regressor": model.candidate.name, "cv_errors": model.cv_errors,
                  "training_blocks": len(model.blocks)},
        "blocks": {"model": stats(predicted_blocks, builds[0]),
                   "model_inside_ranges": stats(
                       [p for p, e in zip(predicted_blocks, extrapolated, strict=True) if not e],
                       [m for m, e in zip(builds[0], extrapolated, strict=True) if not e]),
                   "extrapolated_share": float(np.mean(extrapolated)),
                   "test_retest": stats(builds[1], builds[0])},
        "networks": {"model": stats(predicted_nets, measured_nets),
                     "model_zoo": stats([p for p, z in zip(predicted_nets, is_zoo, strict=True)
                                         if z],
                                        [m for m, z in zip(measured_nets, is_zoo, strict=True)
                                         if z]),
                     "test_retest": stats(retest_nets, measured_nets),
                     "model_block_share": float(np.mean(
                         [len(p.model_blocks) / len(p.block_ms) for p in predictions])),
                     "calibration": {"kind": calibration.kind, "scale": calibration.scale,
                                     "offset_ms": calibration.offset_ms,
                                     "loo_error": calibration.loo_error}},
        "per_network": [{"name": n.name, "predicted_ms": predicted_nets[i],
                         "measured_ms": measured_nets[i], "retest_ms": retest_nets[i],
                         "model_blocks": len(predictions[i].model_blocks),
                         "blocks": len(predictions[i].block_ms)}
                        for i, n in enumerate(test_nets)],
    }
    for part in ("blocks", "networks"):
        r = results[part]
        r["mape_ratio"] = r["model"]["mape"] / max(r["test_retest"]["mape"], 1e-9)
    results["seconds"] = time.perf_counter() - started
    (args.out_dir / "latency_model.json").write_text(json.dumps(results, indent=1))
    model.save(args.out_dir / "latency_model.model.json")
    plot(args.out_dir / "latency_model.png", predicted_blocks, builds, predicted_nets,
         measured_nets, retest_nets, is_zoo, results)

    print(f"{model.candidate.name} on {len(model.blocks)} blocks (cv "
          + ", ".join(f"{k} {v:.1%}" for k, v in model.cv_errors.items())
          + f"), resolution {args.resolution}, {results['seconds']:.0f} s")
    for part, label in (("blocks", f"{len(picked)} unseen blocks"),
                        ("networks", f"{len(test_nets)} unseen networks")):
        r = results[part]
        for name, s in (("model", r["model"]), ("test-retest", r["test_retest"])):
            print(f"  {label:20s} {name:12s} within ±5 % {s['within_5pct']:4.0%}  ±10 % "
                  f"{s['within_10pct']:4.0%}  MAPE {s['mape']:5.1%}  p90 {s['p90']:5.1%}  "
                  f"rho {s['spearman']:.3f}")
        print(f"  {label:20s} model MAPE / test-retest MAPE = {r['mape_ratio']:.2f} "
              f"(goal <= 1.5)")
    print(f"  blocks outside the training ranges: {results['blocks']['extrapolated_share']:.0%};"
          f" network blocks from the model: {results['networks']['model_block_share']:.0%}; "
          f"calibration {calibration.kind} (scale {calibration.scale:.3f}, offset "
          f"{calibration.offset_ms:.2f} ms)")
    print(f"plot: {args.out_dir / 'latency_model.png'}")
    return 0


def describable(key: str) -> bool:
    try:
        parse_block_key(key)
    except BlockModelError:
        return False
    return True


def replace_seed(settings: BuildSettings, seed: int, budget_s: float) -> BuildSettings:
    from dataclasses import replace

    return replace(settings, seed=seed, budget_s=budget_s)


def plot(path: Path, predicted_blocks, builds, predicted_nets, measured_nets, retest_nets,
         is_zoo, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    panels = ((axes[0], "unseen blocks", builds[0], predicted_blocks, builds[1], None),
              (axes[1], "unseen networks", measured_nets, predicted_nets, retest_nets, is_zoo))
    for ax, title, meas, pred, again, zoo in panels:
        meas, pred, again = (np.asarray(v, float) for v in (meas, pred, again))
        ax.scatter(meas, again, s=10, c="grey", alpha=0.6, label="measured again")
        if zoo is None:
            ax.scatter(meas, pred, s=12, label="model")
        else:
            zoo = np.asarray(zoo)
            ax.scatter(meas[~zoo], pred[~zoo], s=14, label="model: variants")
            ax.scatter(meas[zoo], pred[zoo], s=24, marker="s", label="model: zoo")
        lo, hi = 0.8 * min(meas.min(), pred.min()), 1.2 * max(meas.max(), pred.max())
        xs = np.geomspace(lo, hi, 20)
        ax.plot(xs, xs, "k-", lw=1)
        ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="grey", alpha=0.2, label="±10 %")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        part = results["blocks" if zoo is None else "networks"]
        ax.set_title(f"{title}: model {part['model']['within_10pct']:.0%} within ±10 %, "
                     f"MAPE {part['model']['mape']:.1%}\n(test-retest "
                     f"{part['test_retest']['within_10pct']:.0%}, MAPE "
                     f"{part['test_retest']['mape']:.1%})", fontsize=9)
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("predicted / measured again (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Block latency model ({results['model']['regressor']}), "
                 f"{results['device']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
