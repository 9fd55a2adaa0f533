"""Does the demo's search converge by itself? θ's entropy and cost at the end, per setting.

The demo's search (``fbnas demo``: space ``fbnet_v1_tiny`` at 32x32, digits, a latency table
measured here with the 10-class head, target = half the predicted latency of the space's
slowest network) run with several settings and seeds. Per run it reports, from the
supernet's own cost model (so timing noise does not enter):

* ``H/Hmax``: θ's mean entropy at the end as a share of its maximum (ln 9);
* ``exp -3..-1``: the expected cost Σ softmax(θ)·cost of each of the last 3 epochs vs the
  target;
* ``argmax``: the cost of the plain argmax of θ vs the target;
* ``ok``: all of the issue's criteria — H/Hmax <= 50 %, each of the last 3 expected costs
  and the argmax within ±10 % of the target;
* the supernet's val top-1 of the argmax path (batch statistics: a trend), and the wall
  time of the search (the machine's load varies it: read it as a rough number).

Settings are named below (``SETTINGS``: overrides of the old demo's settings, ``old_demo``)
or are built-in search configs (``demo``, ``paper``: ``fbnas search dnas --config``), the
demo's epochs, target and resolution put on them as the demo does. Finished runs under
``OUT`` are reused, so the table can be printed again or extended.

    python benchmarks/dnas_convergence.py --out bench_out/dnas_convergence \\
        [--settings old_demo demo] [--seeds 0 1 2] [--epochs 16]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import BuildSettings, LatencyTable, measure_table
from fbnas.search import get_space
from fbnas.search.dnas.search import (
    DNASConfig,
    builtin_search_configs,
    load_search_config,
    run_search,
)
from fbnas.search.dnas.supernet import layer_costs
from fbnas.search.space import space_networks

SPACE = "fbnet_v1_tiny"
RESOLUTION = 32
CLASSES = 10
TARGET_SHARE = 0.5
ENTROPY_SHARE = 0.5
COST_BAND = 0.10

OLD_DEMO = {"batch_size": 64, "tau_final": 1.0, "w_lr": 0.05, "theta_lr": 0.2,
            "cost": "latency", "device": "cpu"}
"""The demo's search before issue 14 (with the paper's loss and the pull on the sampled
cost)."""

SETTINGS: dict[str, dict] = {
    "old_demo": {},
    "expected": {"pull_on": "expected"},
    "expected_w5": {"pull_on": "expected", "target_weight": 5.0},
    "expected_abs": {"pull_on": "expected", "target_form": "abs"},
    "expected_abs_w3": {"pull_on": "expected", "target_form": "abs", "target_weight": 3.0},
    "expected_lr05": {"pull_on": "expected", "theta_lr": 0.5},
    "expected_step": {"pull_on": "expected", "alternate": "step"},
    "expected_tau05": {"pull_on": "expected", "tau_final": 0.5},
    "expected_sgd": {"pull_on": "expected", "theta_optimizer": "sgd", "theta_lr": 5.0},
    "sample_w5": {"target_weight": 5.0},
    "expected_tau02": {"pull_on": "expected", "tau_final": 0.2},
    "expected_abs_tau02": {"pull_on": "expected", "target_form": "abs", "tau_final": 0.2},
    "expected_abs_w3_tau02": {"pull_on": "expected", "target_form": "abs",
                              "target_weight": 3.0, "tau_final": 0.2},
    "expected_w5_tau02": {"pull_on": "expected", "target_weight": 5.0, "tau_final": 0.2},
    "expected_lr05_tau02": {"pull_on": "expected", "theta_lr": 0.5, "tau_final": 0.2},
    "expected_step_tau02": {"pull_on": "expected", "alternate": "step", "tau_final": 0.2},
    "sample_tau02": {"tau_final": 0.2},
    "expected_w5_lr05_tau02": {"pull_on": "expected", "target_weight": 5.0,
                               "theta_lr": 0.5, "tau_final": 0.2},
    "expected_w5_lr1_tau02": {"pull_on": "expected", "target_weight": 5.0,
                              "theta_lr": 1.0, "tau_final": 0.2},
    "expected_w10_lr1_tau02": {"pull_on": "expected", "target_weight": 10.0,
                               "theta_lr": 1.0, "tau_final": 0.2},
    "expected_abs_w3_lr1_tau02": {"pull_on": "expected", "target_form": "abs",
                                  "target_weight": 3.0, "theta_lr": 1.0, "tau_final": 0.2},
}
"""Overrides of :data:`OLD_DEMO`, one cause at a time (docs/dnas.md, "Does the demo's
search converge?")."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def demo_table(out: Path) -> tuple[LatencyTable, float, float]:
    """The demo's latency table (measured here once, then reused), the space's slowest
    network's latency and the demo's target."""
    space = get_space(SPACE)
    path = out / "lut.json"
    table = LatencyTable.load(path) if path.exists() else LatencyTable(DeviceInfo.current())
    networks, calibration = space_networks(space, RESOLUTION, 1, 5, num_classes=CLASSES)
    if table.missing(k for n in networks for k in n.keys) or table.calibration is None:
        measure_table(table, networks, BuildSettings(threads=1), path, calibration=calibration)
    costs = layer_costs(space, "latency", table, RESOLUTION, num_classes=CLASSES)
    target = max(TARGET_SHARE * costs.most_expensive, costs.cheapest * 1.05)  # as the demo
    return table, costs.most_expensive, target


def setting_config(name: str, epochs: int, target: float, seed: int) -> DNASConfig:
    """A named setting with the demo's epochs, warm-up, target, resolution and ``seed``."""
    demo = {"epochs": epochs, "warmup_epochs": max(1, epochs // 4), "target": target,
            "resolution": RESOLUTION, "seed": seed, "device": "cpu"}
    if name in SETTINGS:
        return DNASConfig(**{**OLD_DEMO, **SETTINGS[name], **demo})
    return load_search_config(name).replace(**demo)


def finished_history(run: Path, epochs: int) -> list[dict] | None:
    metrics, arch = run / "metrics.jsonl", run / "arch.json"
    if not (metrics.is_file() and arch.is_file()):
        return None
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    return history if len(history) == epochs else None


def search(name: str, seed: int, epochs: int, table: LatencyTable, target: float,
           out: Path) -> dict:
    run = out / name / f"seed{seed}"
    history = finished_history(run, epochs)
    seconds = None
    if history is None:
        config = setting_config(name, epochs, target, seed)
        started = time.perf_counter()
        history = run_search(SPACE, "digits", config, run, table, resume=True).history
        seconds = time.perf_counter() - started
        (run / "wall_s.txt").write_text(f"{seconds:.1f}\n")
    elif (run / "wall_s.txt").is_file():
        seconds = float((run / "wall_s.txt").read_text())
    record = json.loads((run / "arch.json").read_text())
    most = math.log(len(history[-1]["probabilities"][0]))
    last = history[-1]
    return {
        "setting": name, "seed": seed, "entropy_share": last["entropy"] / most,
        "expected_vs_target": [r["expected_cost"] / target - 1 for r in history[-3:]],
        "argmax_vs_target": last["argmax_cost"] / target - 1,
        "derived": record["derived"], "val_top1": last["val_top1"],
        "choices": record.get("argmax_choices", record["choices"]), "search_s": seconds,
    }


def converged(row: dict) -> bool:
    return (row["entropy_share"] <= ENTROPY_SHARE
            and all(abs(v) <= COST_BAND for v in row["expected_vs_target"])
            and abs(row["argmax_vs_target"]) <= COST_BAND)


def table_text(rows: list[dict], target: float, slowest: float) -> str:
    lines = [f"Target {target:.3f} ms (half the slowest network of the space, "
             f"{slowest:.3f} ms). Criteria: H/Hmax <= {ENTROPY_SHARE:.0%}, expected cost of "
             f"each of the last 3 epochs and the argmax within ±{COST_BAND:.0%}.", "",
             "| setting | seed | H/Hmax | expected -3 / -2 / -1 | argmax | ok | val top-1 "
             "(supernet) | search s |",
             "|---|---:|---:|---|---:|:-:|---:|---:|"]
    for r in rows:
        expected = " / ".join(f"{v:+.1%}" for v in r["expected_vs_target"])
        seconds = f"{r['search_s']:.0f}" if r["search_s"] is not None else ""
        lines.append(f"| {r['setting']} | {r['seed']} | {r['entropy_share']:.0%} | "
                     f"{expected} | {r['argmax_vs_target']:+.1%} | "
                     f"{'yes' if converged(r) else 'no'} | {r['val_top1']:.1%} | "
                     f"{seconds} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/dnas_convergence"))
    parser.add_argument("--settings", nargs="+", default=["old_demo", "demo"],
                        help=f"named settings ({', '.join(SETTINGS)}) or built-in search "
                             f"configs ({', '.join(builtin_search_configs())})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=16, help="the demo's default")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable times on a shared machine)")
    args = parser.parse_args()
    unknown = [s for s in args.settings
               if s not in SETTINGS and s not in builtin_search_configs()]
    if unknown:
        parser.error(f"unknown settings {unknown}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    table, slowest, target = demo_table(args.out)
    log(f"target {target:.3f} ms (slowest network {slowest:.3f} ms)")
    rows = []
    for name in args.settings:
        for seed in args.seeds:
            rows.append(search(name, seed, args.epochs, table, target, args.out))
            r = rows[-1]
            log(f"{name} seed {seed}: H/Hmax {r['entropy_share']:.0%}, expected "
                f"{[f'{v:+.1%}' for v in r['expected_vs_target']]}, argmax "
                f"{r['argmax_vs_target']:+.1%} -> {'converged' if converged(r) else 'not'}")
    text = table_text(rows, target, slowest)
    (args.out / "convergence.json").write_text(json.dumps(
        {"target_ms": target, "slowest_ms": slowest, "epochs": args.epochs,
         "device": DeviceInfo.current().to_dict(), "rows": rows}, indent=1))
    (args.out / "convergence.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
