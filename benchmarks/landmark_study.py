"""Does the PFLD search help? (issue 18 item 7) Searched subnet vs MobileNetV3-PFLD vs
random subnets of the same latency band, on the synthetic landmark set, over seeds.

Per seed: a synthetic set (``--images``, seed-dependent), a short PFLD search on latency
from one table measured here (shared by all seeds), then from scratch and for the same
``--epochs``: the derived subnet, ``--randoms`` subnets drawn uniformly from the pfld space
with a predicted latency within ``--band`` of the derived one, and the baseline. Reported
per model: validation NME (NNI's 35-93 normalisation), deployed params, MACs, predicted
latency; then the mean over seeds. Results go to ``--out/results.jsonl`` as they come, so
a cut-short run keeps what it finished.

    python benchmarks/landmark_study.py --seeds 0 1 2 --out /tmp/lm_study
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from fbnas.blocks.counting import count_module
from fbnas.cli.demo_landmarks import _train
from fbnas.cli.landmarks import image_nmes
from fbnas.search.dnas.pfld import (
    build_pfld_table,
    pfld_layer_costs,
    pfld_search_config,
    run_pfld_search,
)
from fbnas.tasks.landmarks.models import pfld_layers
from fbnas.tasks.landmarks.synthetic import make_landmark_set
from fbnas.tasks.landmarks.task import LandmarkTask


def random_in_band(costs, target: float, band: float, count: int, rng: random.Random,
                   exclude: list[int], cap: int = 100_000) -> list[list[int]]:
    """``count`` distinct choices with predicted cost within ±band of ``target``."""
    found: list[list[int]] = []
    for _ in range(cap):
        choice = [rng.randrange(len(row)) for row in costs.per_layer]
        if choice != exclude and choice not in found and \
                abs(costs.network_cost(choice) - target) <= band * target:
            found.append(choice)
            if len(found) == count:
                return found
    raise RuntimeError(f"found {len(found)} of {count} random subnets in the band in {cap} "
                       f"draws; widen --band")


def evaluate(model, data, task) -> float:
    loader = torch.utils.data.DataLoader(data.val, batch_size=64)
    return 100 * float(image_nmes(model, loader, task).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--search-epochs", type=int, default=6)
    parser.add_argument("--randoms", type=int, default=3)
    parser.add_argument("--band", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--loss", choices=["pfld", "l2", "wing"], default="pfld",
                        help="the weight-step loss of the task")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    task = LandmarkTask(loss_kind=args.loss)
    table_path = args.out / "pfld_lut.json"
    if table_path.is_file():
        from fbnas.cost.lut import LatencyTable

        table = LatencyTable.load(table_path)
    else:
        table = build_pfld_table(table_path, threads=1, budget_s=0.15, rounds=2)
    costs = pfld_layer_costs("latency", table)
    names = [layer.names for layer in pfld_layers()]
    results = args.out / "results.jsonl"
    for seed in args.seeds:
        start = time.perf_counter()
        data_dir = args.out / f"data_{seed}"
        if not (data_dir / "train_data" / "list.txt").is_file():
            make_landmark_set(data_dir, args.images, seed=100 + seed)
        data = task.open_datasets(str(data_dir))
        config = pfld_search_config(epochs=args.search_epochs,
                                    warmup_epochs=max(1, args.search_epochs // 3),
                                    cost="latency", seed=seed, batch_size=args.batch, theta_lr=0.1,
                                    device="cpu", tensorboard=False, num_samples=0)
        search = run_pfld_search(str(data_dir), config, args.out / f"search_{seed}", task,
                                 table)
        rng = random.Random(seed)
        models = [("searched", search.choices)]
        models += [(f"random{k}", c) for k, c in enumerate(random_in_band(
            costs, search.cost, args.band, args.randoms, rng, search.choices))]
        if not args.no_baseline:
            models.append(("mbv3_pfld", None))
        for label, choice in models:
            if choice is None:
                source = "mbv3_pfld"
            else:
                source = {"family": "pfld",
                          "layers": [names[i][c] for i, c in enumerate(choice)]}
            torch.manual_seed(seed)
            model = task.build_model(source)
            _train(model, task, data, args.out / f"train_{seed}_{label}", args.epochs, seed,
                   args.batch)
            deployed = sum(p.numel() for p in model.parameters()) - sum(
                p.numel() for p in model.aux.parameters())
            row = {"seed": seed, "model": label, "layers": source if choice is None
                   else source["layers"], "nme": evaluate(model, data, task),
                   "params": deployed, "macs": count_module(model.eval(), (1, 3, 112, 112))[1],
                   "predicted_ms": costs.network_cost(choice) if choice else None}
            with results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    groups: dict[str, list[float]] = {}
    for row in rows:
        key = "random" if row["model"].startswith("random") else row["model"]
        groups.setdefault(key, []).append(row["nme"])
    for key, values in groups.items():
        spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
        print(f"{key:>10}: NME {statistics.mean(values):.2f} %{spread} over {len(values)} runs")


if __name__ == "__main__":
    main()
