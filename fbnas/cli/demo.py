"""``fbnas demo``: the whole FBNet flow on this machine in a few minutes.

latency table of a reduced FBNetV1 space measured here → DNAS search against a latency
target on scikit-learn's digits → training of the derived network → ONNX export checked by
ONNX Runtime → a report folder (θ heatmaps, cost and accuracy curves, the final network
block by block with predicted and measured latency). Everything goes under ``--out``.

Running it again into the same folder redoes only what is not there yet. Each step checks
its own result against the settings of this run: a table with every entry measured on this
setup, a search and a training run that finished with the same settings and inputs, an ONNX
file exported from the training's current best checkpoint. What matches is reused (one
``[n/5] step: reusing ...`` line on stderr); an interrupted step continues; a step whose
settings or inputs changed is done over, saying what changed, and so is each later step
whose inputs changed with it. The report is always rewritten: it times the network now.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fbnas.cli.format import human, progress_bar
from fbnas.train.memory import keep_freed_memory

if TYPE_CHECKING:  # imported where the demo runs, so that CLI start-up stays light
    from fbnas.arch.spec import ArchSpec
    from fbnas.cost.latency import DeviceInfo
    from fbnas.cost.lut import LatencyTable
    from fbnas.export import ExportReport
    from fbnas.search.dnas.report import BlockRow
    from fbnas.search.dnas.search import DNASConfig, SearchResult
    from fbnas.search.dnas.supernet import LayerCosts
    from fbnas.search.space import SearchSpace
    from fbnas.train.config import TrainConfig

DEMO_SPACE = "fbnet_v1_tiny"
DEMO_RESOLUTION = 32
DEMO_CONFIG = "demo"
"""The built-in search config of the demo's search (``fbnas search dnas --config demo``)."""
EXPORT_RECORD = "export.json"
"""Beside ``model.onnx``: the checkpoint it was exported from (SHA-256), the file's own
SHA-256, the export settings and the ONNX Runtime check, so that a re-run can reuse it."""


@dataclass(frozen=True)
class _Demo:
    """What every step of one demo run shares."""

    out: Path
    space: SearchSpace
    data_spec: str
    num_classes: int
    threads: int
    device: DeviceInfo
    began: float


def _step(number: int, title: str) -> float:
    click.secho(f"\n[{number}/5] {title}", bold=True, err=True)
    return time.perf_counter()


def _reused(number: int, step: str, what: str) -> None:
    click.secho(f"\n[{number}/5] {step}: reusing {what}", bold=True, err=True)


def _done(start: float, what: str) -> None:
    click.echo(f"      {what} ({time.perf_counter() - start:.0f} s)", err=True)


def _note(text: str) -> None:
    click.echo(f"      {text}", err=True)


def _changes(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """``key saved -> now`` for the keys whose values differ, for a message."""
    return ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}"
                     for k in now if saved.get(k) != now.get(k))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@click.command()
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("fbnas-demo"), show_default=True,
              help="Folder for everything the demo writes.")
@click.option("--search-epochs", type=click.IntRange(min=2),
              help="Search epochs, a quarter of them warm-up (default: the built-in search "
                   "config demo's, fbnas search dnas --config demo).")
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
@click.option("--task", "task_name", type=click.Choice(["classification", "landmarks"]),
              default="classification", show_default=True,
              help="landmarks: seed 004's flow on a synthetic 106-point set (MobileNetV3-PFLD "
                   "baseline, PFLD supernet search, fine-tune, eval, export; "
                   "fbnas.cli.demo_landmarks); its defaults: 6 search and 8 train epochs, "
                   "batch 16.")
@click.option("--images", type=click.IntRange(min=10), default=300, show_default=True,
              help="--task landmarks: images of the synthetic set (a fifth validates).")
@click.pass_context
def demo(ctx: click.Context, out: Path, search_epochs: int | None, train_epochs: int,
         target_share: float, mode: str, data_spec: str, threads: int, seed: int,
         task_name: str = "classification", images: int = 300) -> None:
    """Runs the FBNet flow end to end on the embedded digits data (a few minutes, CPU).

    1. measures a latency table of the reduced FBNetV1 space (7 layers x 9 candidates,
    32x32) on this machine; 2. searches it with DNAS, pulling the latency towards
    --target-share of the slowest network; 3. trains the derived network; 4. exports it to
    ONNX and checks it with ONNX Runtime; 5. writes OUT/report.md with plots. Re-running
    with the same --out reuses every finished step whose settings did not change (and
    continues an interrupted one); a step whose settings changed is done over, with the
    steps after it.
    """
    keep_freed_memory()  # steps reuse freed activation memory: fbnas.train.memory
    if task_name == "landmarks":
        from fbnas.cli.demo_landmarks import run_landmark_demo

        default = ctx.get_parameter_source("train_epochs") is click.core.ParameterSource.DEFAULT
        report = run_landmark_demo(out if ctx.get_parameter_source("out") is not
                                   click.core.ParameterSource.DEFAULT else
                                   Path("fbnas-demo-landmarks"), images, search_epochs or 6,
                                   8 if default else train_epochs, mode, threads, seed)
        click.echo(f"report: {report}")
        return
    from fbnas.cost.latency import DeviceInfo
    from fbnas.data import open_datasets
    from fbnas.search import get_space
    from fbnas.search.dnas.search import load_search_config

    num_classes = open_datasets(data_spec, DEMO_RESOLUTION).num_classes  # a bad spec fails now
    out.mkdir(parents=True, exist_ok=True)
    space = get_space(DEMO_SPACE)
    run = _Demo(out, space, data_spec, num_classes, threads,
                DeviceInfo.current("torch", threads), time.perf_counter())
    click.echo(f"fbnas demo -> {out}/  (space {space.name}: {space.num_layers} layers x 9 "
               f"candidates, {space.size:.2g} architectures; data: {data_spec} at "
               f"{DEMO_RESOLUTION}x{DEMO_RESOLUTION})", err=True)

    table, costs, target = _latency_table(run, target_share)
    # The built-in search config 'demo' (fbnas/search/dnas/configs/demo.yaml: a short
    # search that converges by itself, docs/dnas.md), with this run's epochs, target, seed.
    config = load_search_config(DEMO_CONFIG)
    if search_epochs is not None:
        config = config.replace(epochs=search_epochs,
                                warmup_epochs=max(1, search_epochs // 4))
    config = config.replace(mode=mode, target=target, cost="latency", seed=seed,
                            resolution=DEMO_RESOLUTION)
    result = _search(run, config, table)
    arch_def = json.loads((out / "search" / "arch.json").read_text())["arch_def"]
    train_history = _training(run, arch_def, train_epochs, seed)
    export = _export(run)
    _report(run, table, costs, target, result, arch_def, train_history, export)


# --------------------------------------------------------------------------- 1. table


def _latency_table(run: _Demo, target_share: float
                   ) -> tuple[LatencyTable, LayerCosts, float]:
    """The table of every candidate block (reused when all of it was measured on this
    setup, else measured or completed), the space's costs and the latency target."""
    from fbnas.cost.lut import BuildSettings, LatencyTable, measure_table, pending_measurements
    from fbnas.search.space import space_networks

    path = run.out / "lut.json"
    networks, calibration = space_networks(run.space, DEMO_RESOLUTION, 1, 5,
                                           num_classes=run.num_classes)
    settings = BuildSettings(threads=run.threads)
    table, other_setup = LatencyTable(run.device), ""
    if path.exists():
        table = LatencyTable.load(path)
        other_setup = "; ".join(table.device.differences(run.device))
        if other_setup:
            table = LatencyTable(run.device)
    todo = pending_measurements(table, networks, settings, calibration)
    if not todo and table.calibration is not None:
        costs, target = _costs_and_target(run, table, target_share)
        _reused(1, "latency table", f"{path} ({len(table)} entries, all measured; target "
                                    f"{target:.3f} ms)")
        return table, costs, target

    start = _step(1, "latency table of every candidate block, measured on this machine")
    if other_setup:
        _note(f"{path} was measured on another setup ({other_setup}): measuring it over")
    elif len(table):
        _note(f"continuing {path}: {len(todo)} of its entries still to measure")
    bar, update = progress_bar("      blocks", width=32, leave=False)
    try:
        measure_table(table, networks, settings, path, update, calibration=calibration)
    finally:
        bar.close()
    costs, target = _costs_and_target(run, table, target_share)
    _done(start, f"{len(table)} entries, calibration x{table.scale:.3f} + "
                 f"{table.calibration.offset_ms:.3f} ms; networks of the space cost "
                 f"{costs.cheapest:.3f}-{costs.most_expensive:.3f} ms -> target "
                 f"{target:.3f} ms")
    return table, costs, target


def _costs_and_target(run: _Demo, table: LatencyTable, target_share: float
                      ) -> tuple[LayerCosts, float]:
    """The space's per-layer latencies and the target: ``target_share`` of its slowest
    network, at least 5 % above its fastest."""
    from fbnas.search.dnas.supernet import layer_costs

    costs = layer_costs(run.space, "latency", table, DEMO_RESOLUTION,
                        num_classes=run.num_classes)
    return costs, max(target_share * costs.most_expensive, costs.cheapest * 1.05)


# --------------------------------------------------------------------------- 2. search


def _search(run: _Demo, config: DNASConfig, table: LatencyTable) -> SearchResult:
    """The finished search of ``OUT/search`` when it searched with these settings, else a
    continued one (same settings) or a new one."""
    from fbnas.cli.search import SearchProgress
    from fbnas.search.dnas.search import run_search

    folder = run.out / "search"
    changed = _search_changes(folder, run.space, run.data_spec, config)
    if changed is None:
        finished = _finished_search(folder, run.space, config)
        if finished is not None:
            _reused(2, "search", f"{folder} (finished, {config.epochs} epochs)")
            return finished
    start = _step(2, f"DNAS search ({config.mode}, {config.epochs} epochs, target "
                     f"{config.target:.3f} ms)")
    if changed:
        _note(f"the search in {folder} had other settings ({changed}): starting it over")
        (folder / "last.pt").unlink(missing_ok=True)
    progress = SearchProgress()
    try:
        result = run_search(run.space, run.data_spec, config, folder, table, resume=True,
                            progress=progress)
    finally:
        progress.close()
    last = result.history[-1]
    _done(start, f"derived {', '.join(result.choice_names)}; predicted "
                 f"{result.cost:.3f} ms (target {config.target:.3f}); supernet val top-1 "
                 f"{last['val_top1']:.1%}")
    _note(_convergence_line(result.history, config.target))
    return result


def _convergence(history: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Whether θ decided by itself (issue 14): its mean entropy at the end as a share of
    the maximum, the expected cost of the last 3 epochs and the plain argmax's cost, each
    relative to ``target``."""
    last = history[-1]
    return {"entropy_share": last["entropy"] / math.log(len(last["probabilities"][0])),
            "expected_vs_target": [r["expected_cost"] / target - 1 for r in history[-3:]],
            "argmax_vs_target": last["argmax_cost"] / target - 1}


def _convergence_line(history: list[dict[str, Any]], target: float) -> str:
    c = _convergence(history, target)
    expected = ", ".join(f"{v:+.1%}" for v in c["expected_vs_target"])
    return (f"theta at the end: entropy {c['entropy_share']:.0%} of its maximum; expected "
            f"cost of the last {len(c['expected_vs_target'])} epochs {expected} and plain "
            f"argmax {c['argmax_vs_target']:+.1%} vs the target")


def _search_changes(folder: Path, space: SearchSpace, data_spec: str,
                    config: DNASConfig) -> str | None:
    """How the search saved in ``folder`` differs from this one (``key saved -> now``, ...),
    or None when it has the same settings or there is none."""
    from fbnas.search.dnas.search import SEARCH_CONFIG, read_search_config, searched_space

    path = folder / SEARCH_CONFIG
    if not path.is_file():
        return None
    try:
        saved_run, saved = read_search_config(path)
        saved_space = searched_space(saved_run, str(path))
    except (ValueError, KeyError):
        return f"{path} is unreadable"
    changes = _changes({**asdict(saved), "data": saved_run.get("data")},
                       {**asdict(config), "data": data_spec})
    if saved_space != space:
        name = saved_run.get("space")
        other = (f"space {name!r} -> {space.name!r}" if name != space.name
                 else f"another definition of space {name!r}")
        changes = ", ".join(filter(None, [other, changes]))
    return changes or None


def _finished_search(folder: Path, space: SearchSpace, config: DNASConfig
                     ) -> SearchResult | None:
    """The result of the search in ``folder`` if it ran all ``config.epochs`` epochs and
    derived its architecture after the last one, else None."""
    from fbnas.search.dnas.search import SearchResult
    from fbnas.train.checkpoint import read_checkpoint
    from fbnas.zoo.checkpoint import CheckpointError

    last, arch = folder / "last.pt", folder / "arch.json"
    if not (last.is_file() and arch.is_file()
            and arch.stat().st_mtime_ns >= last.stat().st_mtime_ns):
        return None
    try:
        state = read_checkpoint(last)
    except CheckpointError:
        return None  # run_search says what is wrong with it
    history = [dict(r) for r in state.get("history", [])]
    if int(state.get("epoch", -1)) + 1 != config.epochs or len(history) != config.epochs:
        return None
    record = json.loads(arch.read_text())
    names = record["choices"]
    choices = [[c.name for c in layer.candidates].index(name)
               for layer, name in zip(space.layers, names, strict=True)]
    return SearchResult(folder, choices, names, record["predicted_cost"], record["cost_unit"],
                        history=history)


# --------------------------------------------------------------------------- 3. training


def _training(run: _Demo, arch_def: dict, epochs: int, seed: int) -> list[dict[str, Any]]:
    """The per-epoch metrics of the training run in ``OUT/train``: reused when it finished
    with this recipe, network and data; continued when it stopped early with them; else
    trained anew."""
    import torch

    from fbnas.cli.train import ConsoleProgress
    from fbnas.data import open_datasets
    from fbnas.train import checkpoint as ckpt
    from fbnas.train.config import load_recipe
    from fbnas.train.trainer import Trainer
    from fbnas.zoo.model import build_model

    recipe = load_recipe("digits")
    recipe = recipe.replace(epochs=epochs, seed=seed,
                            warmup_epochs=min(recipe.warmup_epochs, epochs - 1))
    folder = run.out / "train"
    data = open_datasets(run.data_spec, recipe.resolution, recipe.augment)
    torch.manual_seed(seed)
    model = build_model(arch_def, num_classes=data.num_classes)
    saved, changed = _saved_training(folder, recipe, model.arch_spec, str(data.spec))
    if saved is not None and changed is None and int(saved["epoch"]) >= recipe.epochs:
        _reused(3, "training", f"{folder} (finished, {int(saved['epoch'])} epochs)")
        return [dict(r) for r in saved["history"]]

    start = _step(3, f"training the derived network ({epochs} epochs, recipe digits)")
    if changed:
        _note(f"the training run in {folder} does not match ({changed}): training it over")
        for name in (ckpt.LAST, ckpt.PREVIOUS, ckpt.BEST):
            (folder / name).unlink(missing_ok=True)
    trainer = Trainer(model, recipe, data, out_dir=folder, device="cpu",
                      listeners=[ConsoleProgress(bar=True)],
                      run_info={"arch": str(run.out / "search" / "arch.json")},
                      tensorboard=False)
    if saved is not None and not changed:
        trainer.resume()
        _note(f"continuing {folder} after epoch {trainer.epoch} of {recipe.epochs}")
    history = trainer.fit()
    best = max(history, key=lambda r: r["val_top1"])
    _done(start, f"best val top-1 {best['val_top1']:.2f} % (epoch {best['epoch']})")
    return history


def _saved_training(folder: Path, recipe: TrainConfig, spec: ArchSpec, data: str
                    ) -> tuple[dict[str, Any] | None, str | None]:
    """(the newest readable checkpoint of ``folder`` or None, how its run differs from this
    one or None when it does not)."""
    from fbnas.arch.unify import unify_arch_def
    from fbnas.train import checkpoint as ckpt
    from fbnas.train.config import TrainConfig
    from fbnas.zoo.checkpoint import CheckpointError

    if not any((folder / name).exists() for name in (ckpt.LAST, ckpt.PREVIOUS)):
        return None, None
    try:
        _, state, problems = ckpt.find_resumable(folder)
    except CheckpointError as exc:
        return None, str(exc)
    for problem in problems:
        _note(f"warning: skipping unreadable checkpoint: {problem}")
    saved = TrainConfig.from_dict(state["config"], f"{folder} config")
    changes = [f"{k} {a!r} -> {b!r}" for k, (a, b) in saved.diff(recipe).items()]
    if unify_arch_def(dict(state["arch_def"])) != spec:
        changes.append("another network (the search changed)")
    if state.get("data") != data:
        changes.append(f"data {state.get('data')!r} -> {data!r}")
    if int(state["epoch"]) >= recipe.epochs and not (folder / ckpt.BEST).is_file():
        changes.append(f"{ckpt.BEST} is missing")
    return state, ", ".join(changes) or None


# --------------------------------------------------------------------------- 4. export


def _export(run: _Demo) -> ExportReport:
    """``OUT/train/best.pt`` exported to ``OUT/model.onnx``: reused when the file is
    unchanged since it was exported from this very checkpoint with these settings, else
    exported (again)."""
    from fbnas.cost.lut import atomic_write_text
    from fbnas.export import to_onnx
    from fbnas.export.checkpoint import load_model_from_checkpoint

    checkpoint, onnx = run.out / "train" / "best.pt", run.out / "model.onnx"
    shape = (1, 3, DEMO_RESOLUTION, DEMO_RESOLUTION)
    settings = {"checkpoint_sha256": _sha256(checkpoint), "input_shape": list(shape),
                "threads": run.threads}
    record_path = run.out / EXPORT_RECORD
    report, stale = _exported(record_path, onnx, checkpoint, settings)
    if report is not None:
        _reused(4, "export", f"{onnx} (exported from {checkpoint}, unchanged since)")
        return report

    start = _step(4, "ONNX export, checked against PyTorch in ONNX Runtime")
    if onnx.exists():
        _note(f"{stale}: exporting it again")
    record_path.unlink(missing_ok=True)  # a half-written model.onnx is never taken as done
    trained = load_model_from_checkpoint(checkpoint)
    export = to_onnx(trained, onnx, shape, threads=run.threads, timing_runs=50)
    atomic_write_text(record_path, json.dumps({"checkpoint": str(checkpoint), **settings,
                                               "onnx_sha256": _sha256(onnx),
                                               "report": asdict(export)}, indent=1))
    _done(start, export.summary())
    return export


def _exported(record_path: Path, onnx: Path, checkpoint: Path, settings: dict[str, Any]
              ) -> tuple[ExportReport | None, str]:
    """(the report of an export that can be reused, else None; why it cannot)."""
    from fbnas.export import ExportReport

    try:
        record = json.loads(record_path.read_text())
        report = ExportReport(**{f.name: record["report"][f.name]
                                 for f in fields(ExportReport)})
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{onnx} has no readable {EXPORT_RECORD}"
    if not onnx.is_file():
        return None, f"{onnx} is missing"
    if record.get("checkpoint_sha256") != settings["checkpoint_sha256"]:
        return None, f"{checkpoint} changed since {onnx} was exported from it"
    if record.get("onnx_sha256") != _sha256(onnx):
        return None, f"{onnx} changed since it was exported"
    changed = _changes(record, {k: v for k, v in settings.items()
                                if k != "checkpoint_sha256"})
    if changed:
        return None, f"{onnx} was exported with other settings ({changed})"
    return replace(report, path=str(onnx), input_shape=tuple(report.input_shape)), ""


# --------------------------------------------------------------------------- 5. report


def _report(run: _Demo, table: LatencyTable, costs: LayerCosts, target: float,
            result: SearchResult, arch_def: dict, train_history: list[dict[str, Any]],
            export: ExportReport) -> None:
    """Times the trained network now, writes ``summary.json``, ``report.md`` and the plots."""
    from fbnas.cost.latency import measure
    from fbnas.cost.lut import BuildSettings, arch_items, measure_table
    from fbnas.export.checkpoint import load_model_from_checkpoint
    from fbnas.search.dnas.report import (
        architecture_rows,
        plot_search_curves,
        plot_theta,
        read_candidates,
        rows_markdown,
    )

    start = _step(5, "report: latency measured vs predicted, plots")
    out, threads, num_classes = run.out, run.threads, run.num_classes
    best = max(train_history, key=lambda r: r["val_top1"])
    trained = load_model_from_checkpoint(out / "train" / "best.pt")
    shape = (1, 3, DEMO_RESOLUTION, DEMO_RESOLUTION)
    items = arch_items(arch_def, DEMO_RESOLUTION, num_classes, name="derived")
    missing = table.missing(items.keys)
    if missing:
        measure_table(table, [items], BuildSettings(threads=threads), out / "lut.json")
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
        "space": run.space.name, "data": run.data_spec, "resolution": DEMO_RESOLUTION,
        "target_ms": target, "derived": result.choice_names,
        "predicted_ms": predicted, "measured_ms": measured,
        "prediction_error": predicted / measured - 1,
        "blocks_now_vs_table": drift,
        "params": record["params"], "macs": record["macs"],
        "val_top1": best["val_top1"], "onnx": str(out / "model.onnx"),
        "onnx_max_abs_diff": export.max_abs_diff, "onnx_ort_ms": export.ort_latency_ms,
        "device": run.device.to_dict(), "seconds": time.perf_counter() - run.began,
        "search_convergence": _convergence(history, target),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(_report_text(summary, rows_markdown(rows), costs))
    _done(start, f"predicted {predicted:.3f} ms, measured {measured:.3f} ms "
                 f"({predicted / measured - 1:+.1%})")
    if drift is not None and _drifted(drift):
        _note(f"note: {_drift_note(drift, predicted, measured)}")
    click.echo(f"\nderived network: {human(record['params'])} params, "
               f"{human(record['macs'])} MACs, val top-1 {best['val_top1']:.2f} %, latency "
               f"{measured:.3f} ms measured / {predicted:.3f} ms predicted (target "
               f"{target:.3f} ms)")
    click.echo(f"report: {out / 'report.md'} (theta.png, curves.png); model: "
               f"{out / 'model.onnx'}; total {time.perf_counter() - run.began:.0f} s")


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


def _convergence_rows(convergence: dict[str, Any] | None) -> str:
    """The report's rows on how far the search decided by itself (none for a summary
    written before they existed)."""
    if convergence is None:
        return ""
    expected = " / ".join(f"{v:+.1%}" for v in convergence["expected_vs_target"])
    return (f"| search: θ's entropy at the end | {convergence['entropy_share']:.0%} of its "
            f"maximum |\n"
            f"| search: expected latency of the last epochs vs target | {expected} |\n"
            f"| search: plain argmax of θ vs target | "
            f"{convergence['argmax_vs_target']:+.1%} |\n")


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
{_convergence_rows(summary.get('search_convergence'))}{note}
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
