"""``fbnas demo``: the whole FBNet flow on this machine in a few minutes.

latency table of a reduced FBNetV1 space measured here → DNAS search against a latency
target on scikit-learn's digits → training of the derived network → ONNX export checked by
ONNX Runtime → a report folder (θ heatmaps, cost and accuracy curves, the final network
block by block with predicted and measured latency). Everything goes under ``--out``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fbnas.cli.format import human, progress_bar
from fbnas.train.memory import keep_freed_memory

if TYPE_CHECKING:  # imported where the demo runs, so that CLI start-up stays light
    from fbnas.search.dnas.report import BlockRow

DEMO_SPACE = "fbnet_v1_tiny"
DEMO_RESOLUTION = 32


def _step(number: int, title: str) -> float:
    click.secho(f"\n[{number}/5] {title}", bold=True, err=True)
    return time.perf_counter()


def _done(start: float, what: str) -> None:
    click.echo(f"      {what} ({time.perf_counter() - start:.0f} s)", err=True)


@click.command()
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("fbnas-demo"), show_default=True,
              help="Folder for everything the demo writes.")
@click.option("--search-epochs", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--train-epochs", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--target-share", type=click.FloatRange(0.05, 1.0), default=0.5,
              show_default=True,
              help="Latency target as a share of the space's slowest network.")
@click.option("--mode", type=click.Choice(["soft", "single-path"]), default="soft",
              show_default=True)
@click.option("--data", "data_spec", default="digits", show_default=True,
              help="Dataset spec (10 classes): digits, or a proxy such as "
                   "'digits?per_class=20' for a quicker run.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for latency measurement.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, search_epochs: int, train_epochs: int, target_share: float, mode: str,
         data_spec: str, threads: int, seed: int) -> None:
    """Runs the FBNet flow end to end on the embedded digits data (a few minutes, CPU).

    1. measures a latency table of the reduced FBNetV1 space (7 layers x 9 candidates,
    32x32) on this machine; 2. searches it with DNAS, pulling the latency towards
    --target-share of the slowest network; 3. trains the derived network; 4. exports it to
    ONNX and checks it with ONNX Runtime; 5. writes OUT/report.md with plots. Re-running
    with the same --out reuses the table.
    """
    keep_freed_memory()  # steps reuse freed activation memory: fbnas.train.memory
    import torch

    from fbnas.cost.latency import DeviceInfo, measure
    from fbnas.cost.lut import BuildSettings, LatencyTable, arch_items, measure_table
    from fbnas.data import open_datasets
    from fbnas.search import get_space
    from fbnas.search.dnas.search import DNASConfig, run_search
    from fbnas.search.dnas.supernet import layer_costs
    from fbnas.search.space import space_networks

    num_classes = open_datasets(data_spec, DEMO_RESOLUTION).num_classes  # a bad spec fails now
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    space = get_space(DEMO_SPACE)
    click.echo(f"fbnas demo -> {out}/  (space {space.name}: {space.num_layers} layers x 9 "
               f"candidates, {space.size:.2g} architectures; data: {data_spec} at "
               f"{DEMO_RESOLUTION}x{DEMO_RESOLUTION})", err=True)

    # 1. latency table ------------------------------------------------------------------
    start = _step(1, "latency table of every candidate block, measured on this machine")
    lut_path = out / "lut.json"
    device = DeviceInfo.current("torch", threads)
    table = (LatencyTable.load(lut_path, expect=device) if lut_path.exists()
             else LatencyTable(device))
    networks, calibration = space_networks(space, DEMO_RESOLUTION, 1, 5,
                                           num_classes=num_classes)
    bar, update = progress_bar("      blocks", width=32, leave=False)
    try:
        measure_table(table, networks, BuildSettings(threads=threads), lut_path, update,
                      calibration=calibration)
    finally:
        bar.close()
    costs = layer_costs(space, "latency", table, DEMO_RESOLUTION, num_classes=num_classes)
    target = max(target_share * costs.most_expensive, costs.cheapest * 1.05)
    _done(start, f"{len(table)} entries, calibration x{table.scale:.3f} + "
                 f"{table.calibration.offset_ms:.3f} ms; networks of the space cost "
                 f"{costs.cheapest:.3f}-{costs.most_expensive:.3f} ms -> target "
                 f"{target:.3f} ms")

    # 2. search -------------------------------------------------------------------------
    start = _step(2, f"DNAS search ({mode}, {search_epochs} epochs, target {target:.3f} ms)")
    # A short search: θ needs a larger step than the paper's 0.01 to decide within ~12
    # search epochs, and τ stops at 1 so that the shared weights keep working for the
    # sharper samples (annealing to 0.5 in this few epochs collapsed train accuracy).
    config = DNASConfig(epochs=search_epochs, warmup_epochs=max(1, search_epochs // 4),
                        mode=mode, batch_size=64, tau_final=1.0, target=target,  # type: ignore
                        cost="latency", seed=seed, w_lr=0.05, theta_lr=0.2,
                        resolution=DEMO_RESOLUTION)
    from fbnas.cli.search import SearchProgress

    saved_config = out / "search" / "search_config.json"
    if saved_config.exists():
        saved = json.loads(saved_config.read_text())
        if any(saved.get(k) != v for k, v in asdict(config).items()):
            click.echo("      the settings differ from the search in this folder: starting "
                       "it over", err=True)
            (out / "search" / "last.pt").unlink(missing_ok=True)
    progress = SearchProgress()
    try:
        result = run_search(space, data_spec, config, out / "search", table, resume=True,
                            progress=progress)
    finally:
        progress.close()
    last = result.history[-1]
    _done(start, f"derived {', '.join(result.choice_names)}; predicted "
                 f"{result.cost:.3f} ms (target {target:.3f}); supernet val top-1 "
                 f"{last['val_top1']:.1%}")

    # 3. training -----------------------------------------------------------------------
    start = _step(3, f"training the derived network ({train_epochs} epochs, recipe digits)")
    from fbnas.cli.train import ConsoleProgress
    from fbnas.train.config import load_recipe
    from fbnas.train.trainer import Trainer
    from fbnas.zoo.model import build_model

    arch_def = json.loads((out / "search" / "arch.json").read_text())["arch_def"]
    recipe = load_recipe("digits")
    recipe = recipe.replace(epochs=train_epochs, seed=seed,
                            warmup_epochs=min(recipe.warmup_epochs, train_epochs - 1))
    data = open_datasets(data_spec, recipe.resolution, recipe.augment)
    torch.manual_seed(seed)
    model = build_model(arch_def, num_classes=data.num_classes)
    trainer = Trainer(model, recipe, data, out_dir=out / "train", device="cpu",
                      listeners=[ConsoleProgress(bar=True)],
                      run_info={"arch": str(out / "search" / "arch.json")},
                      tensorboard=False)
    train_history = trainer.fit()
    best = max(train_history, key=lambda r: r["val_top1"])
    _done(start, f"best val top-1 {best['val_top1']:.2f} % (epoch {best['epoch']})")

    # 4. export -------------------------------------------------------------------------
    start = _step(4, "ONNX export, checked against PyTorch in ONNX Runtime")
    from fbnas.export import to_onnx
    from fbnas.export.checkpoint import load_model_from_checkpoint

    trained = load_model_from_checkpoint(out / "train" / "best.pt")
    shape = (1, 3, DEMO_RESOLUTION, DEMO_RESOLUTION)
    export = to_onnx(trained, out / "model.onnx", shape, threads=threads, timing_runs=50)
    _done(start, export.summary())

    # 5. report -------------------------------------------------------------------------
    start = _step(5, "report: latency measured vs predicted, plots")
    from fbnas.search.dnas.report import (
        architecture_rows,
        plot_search_curves,
        plot_theta,
        read_candidates,
        rows_markdown,
    )

    items = arch_items(arch_def, DEMO_RESOLUTION, num_classes, name="derived")
    missing = table.missing(items.keys)
    if missing:
        measure_table(table, [items], BuildSettings(threads=threads), lut_path)
    predicted = table.predict(items).predicted_ms
    measured = min(measure(trained, shape, threads=threads, budget_s=0.5).median_ms
                   for _ in range(3))
    rows = architecture_rows(arch_def, DEMO_RESOLUTION, num_classes, table, threads=threads)
    history = result.history
    plot_theta(history, read_candidates(out / "search"), out / "theta.png",
               result.choices)
    plot_search_curves(history, out / "curves.png", target, train_history)
    record = json.loads((out / "search" / "arch.json").read_text())
    drift = machine_drift(rows)
    summary = {
        "space": space.name, "data": data_spec, "resolution": DEMO_RESOLUTION,
        "target_ms": target, "derived": result.choice_names,
        "predicted_ms": predicted, "measured_ms": measured,
        "prediction_error": predicted / measured - 1,
        "blocks_now_vs_table": drift,
        "params": record["params"], "macs": record["macs"],
        "val_top1": best["val_top1"], "onnx": str(out / "model.onnx"),
        "onnx_max_abs_diff": export.max_abs_diff, "onnx_ort_ms": export.ort_latency_ms,
        "device": device.to_dict(), "seconds": time.perf_counter() - began,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(_report_text(summary, rows_markdown(rows), costs))
    _done(start, f"predicted {predicted:.3f} ms, measured {measured:.3f} ms "
                 f"({predicted / measured - 1:+.1%})")
    if drift is not None and _drifted(drift):
        click.echo(f"      note: {_drift_note(drift, predicted, measured)}", err=True)
    click.echo(f"\nderived network: {human(record['params'])} params, "
               f"{human(record['macs'])} MACs, val top-1 {best['val_top1']:.2f} %, latency "
               f"{measured:.3f} ms measured / {predicted:.3f} ms predicted (target "
               f"{target:.3f} ms)")
    click.echo(f"report: {out / 'report.md'} (theta.png, curves.png); model: "
               f"{out / 'model.onnx'}; total {time.perf_counter() - began:.0f} s")


DRIFT_TOLERANCE = 0.15
"""Blocks re-timed now that differ from their table entries by more than this (median
ratio) mean the machine's speed changed since the table was built."""


def machine_drift(rows: Sequence[BlockRow]) -> dict[str, float] | None:
    """Median (min, max) of measured/table over the blocks timed in both, or None.

    Blocks are re-timed alone for the report: when all of them moved together, the machine
    ran at another speed (load from other processes, frequency) than when the table was
    built, which a whole-network prediction error would otherwise hide.
    """
    ratios = sorted(r.measured_ms / r.table_ms for r in rows
                    if r.table_ms and r.measured_ms and r.table_ms > 0.01)
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}


def _drifted(drift: dict[str, float]) -> bool:
    return abs(drift["median"] - 1) > DRIFT_TOLERANCE


def _drift_note(drift: dict[str, float], predicted: float, measured: float) -> str:
    ratio = drift["median"]
    at_table_speed = measured / ratio
    return (f"every block timed now is {ratio:.2f}x its table entry (median; "
            f"{drift['min']:.2f}-{drift['max']:.2f}x): the machine ran "
            f"{'slower' if ratio > 1 else 'faster'} than when the table was built (other "
            f"processes, clock). At the table's speed the network would take "
            f"{at_table_speed:.3f} ms ({predicted / at_table_speed - 1:+.1%} prediction "
            f"error). Compare on a quiet machine, or rebuild the table (fbnas lut build).")


def _report_text(summary: dict, rows_table: str, costs) -> str:
    error = summary["prediction_error"]
    drift = summary.get("blocks_now_vs_table")
    note = (f"\n**Note:** {_drift_note(drift, summary['predicted_ms'], summary['measured_ms'])}"
            f"\n" if drift is not None and _drifted(drift) else "")
    return f"""# fbnas demo report

Space `{summary['space']}` ({len(summary['derived'])} searchable layers x 9 candidates),
data `{summary['data']}` at {summary['resolution']}x{summary['resolution']}, measured on
{summary['device']['cpu']} ({summary['device']['threads']} thread(s), torch
{summary['device']['torch']}). Total time {summary['seconds']:.0f} s.

## Result

| | |
|---|---|
| latency target | {summary['target_ms']:.3f} ms |
| latency range of the space | {costs.cheapest:.3f}-{costs.most_expensive:.3f} ms |
| predicted latency (table) | {summary['predicted_ms']:.3f} ms |
| measured latency (end to end) | {summary['measured_ms']:.3f} ms ({error:+.1%} prediction error) |
| params / MACs | {summary['params']:,} / {summary['macs']:,} |
| val top-1 after training | {summary['val_top1']:.2f} % |
| ONNX: ORT vs PyTorch max diff | {summary['onnx_max_abs_diff']:.2e} |
| ONNX Runtime latency | {summary['onnx_ort_ms']:.3f} ms |
{note}
Derived choices per searchable layer: {', '.join(f'`{c}`' for c in summary['derived'])}.

## The search

![theta](theta.png)

![curves](curves.png)

## The network, block by block

"table ms" is the latency table's entry (each block timed alone when the table was built);
"measured ms" is the same block timed alone now. The network's prediction is
`scale x sum + offset` of the table (calibrated on whole networks); its measurement is the
whole network end to end.

{rows_table}
"""
