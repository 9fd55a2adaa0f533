"""``fbnas search width``: evolutionary width search of a sandwich-trained slim network.

Given a slim network trained with the sandwich rule (``--checkpoint``, or trained here
first into ``OUT/train``), searches the width vector with the best validation accuracy
(shared weights, BN recalibrated per candidate) whose MACs (analytic) or predicted latency
(per-block width grids measured on this machine) meet the target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import torch

from fbnas.arch.unify import unify_arch_def
from fbnas.cli.format import human
from fbnas.cli.train import ConsoleProgress, _resolve_recipe
from fbnas.cost.lut import BuildSettings
from fbnas.data import open_datasets
from fbnas.slim import build_slim_model
from fbnas.slim.latency import DEFAULT_LEVELS, WidthLatencyModel, build_width_latency
from fbnas.slim.models import SlimFBNet
from fbnas.slim.search import (
    Constraint,
    EvaluatedWidths,
    LatencyConstraint,
    MacsConstraint,
    WidthEvaluator,
    WidthSearchConfig,
    evolve_widths,
    write_results,
)
from fbnas.slim.train import SandwichConfig, SandwichTrainer, load_slim_checkpoint
from fbnas.train import checkpoint as ckpt
from fbnas.train.memory import keep_freed_memory
from fbnas.zoo.checkpoint import CheckpointError

TRAIN_DIR = "train"


def _train_first(model_name: str, data_spec: str, out: Path, recipe_name: str | None,
                 overrides: tuple[str, ...], flags: dict[str, Any],
                 sandwich: SandwichConfig, resume: bool, device: str) -> Path:
    """Sandwich-trains ``model_name`` into ``out/train``; returns its best checkpoint."""
    run = out / TRAIN_DIR
    if (run / ckpt.LAST).exists() and not resume:
        raise click.UsageError(f"{run} already holds a training run; pass --resume to "
                               f"continue it, --checkpoint {run / ckpt.BEST} to search it "
                               f"as it is, or choose another --out")
    recipe = _resolve_recipe(recipe_name, overrides, flags)
    data = open_datasets(data_spec, recipe.resolution, recipe.augment)
    torch.manual_seed(recipe.seed)
    model = build_slim_model(model_name, num_classes=data.num_classes)
    trainer = SandwichTrainer(model, recipe, data, sandwich, out_dir=run, device=device,
                              listeners=[ConsoleProgress(sys.stderr.isatty())],
                              run_info={"arch": model_name}, tensorboard=False)
    if resume and (run / ckpt.LAST).exists():
        used = trainer.resume()
        click.echo(f"resumed {used} after epoch {trainer.epoch}", err=True)
    click.echo(f"sandwich training {model_name} ({model.search_dim} width dims, "
               f"{sandwich.num_widths} widths per step, min wm {sandwich.min_wm:g}) on "
               f"{data.spec} at {data.resolution}x{data.resolution} -> {run}", err=True)
    trainer.fit()
    click.echo(f"trained: largest width top-1 {trainer.history[-1]['val_top1']:.2f} %, "
               f"smallest {trainer.history[-1]['val_min_top1']:.2f} %", err=True)
    return run / ckpt.BEST


def _load(model_name: str, checkpoint: Path) -> tuple[SlimFBNet, dict[str, Any]]:
    model, run_info = load_slim_checkpoint(checkpoint)
    expected = build_slim_model(model_name, num_classes=model.num_classes)
    if unify_arch_def(expected.arch_spec.to_arch_def()) != model.arch_spec:
        raise CheckpointError(f"{checkpoint} holds a {run_info['slim'].get('model')!r} "
                              f"network, not --model {model_name!r}")
    model.name = expected.name
    return model, run_info


def _constraint(model: SlimFBNet, resolution: int, target_macs: float | None,
                target_ms: float | None, latency_model: Path | None, out: Path,
                levels: tuple[float, ...], threads: int) -> Constraint:
    if target_macs is not None:
        return MacsConstraint(model, resolution, float(target_macs))
    assert target_ms is not None
    if latency_model is not None:
        predictor = WidthLatencyModel.load(latency_model)
        if predictor.resolution != resolution:
            raise click.UsageError(f"{latency_model} was measured at {predictor.resolution}, "
                                   f"the search runs at {resolution}")
    else:
        path = out / "width_latency.json"
        click.echo(f"measuring per-block width grids (levels {', '.join(map(str, levels))}) "
                   f"on this machine -> {out / 'latency_table.json'}", err=True)
        predictor = build_width_latency(model, resolution, out / "latency_table.json", levels,
                                        BuildSettings(threads=threads))
        predictor.save(path)
    return LatencyConstraint(model, predictor, float(target_ms))


@click.command("width")
@click.option("--model", "model_name", required=True,
              help="Slim model (slim_mbv2, slim_mbv3, slim_resnet18...) or an arch def.")
@click.option("--data", "data_spec", required=True, help="Dataset spec, e.g. digits.")
@click.option("--target-macs", type=click.FloatRange(min=0, min_open=True),
              help="Keep candidates at or under this many MACs (analytic).")
@click.option("--target-ms", type=click.FloatRange(min=0, min_open=True),
              help="Keep candidates at or under this predicted latency (ms, batch 1, this "
                   "machine's CPU, --threads threads).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="A sandwich-trained slim network (RUN/best.pt). Without it the model is "
                   "trained here first into OUT/train with the recipe options below.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--resolution", "-r", type=click.IntRange(min=8),
              help="Input side (default: the checkpoint's or the recipe's, else the data's).")
@click.option("--latency-model", type=click.Path(dir_okay=False, path_type=Path),
              help="Width-latency grids (a width_latency.json of an earlier search); default: "
                   "measured now into OUT/.")
@click.option("--levels", default=",".join(f"{w:g}" for w in DEFAULT_LEVELS),
              show_default=True, help="Width multipliers of the latency grids.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads for latency measurement.")
@click.option("--population", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--generations", type=click.IntRange(min=0), default=8, show_default=True)
@click.option("--parents", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--mutation-prob", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--crossover", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--min-wm", type=click.FloatRange(0, 1, min_open=True),
              help="Smallest multiplier tried (default: the training's min_wm).")
@click.option("--bn-batches", type=click.IntRange(min=1), default=5, show_default=True,
              help="Training batches to recalibrate BN per candidate.")
@click.option("--val-batches", type=click.IntRange(min=1),
              help="Score candidates on this many validation batches (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", "-c", "recipe_name", default="digits", show_default=True,
              help="Training recipe (without --checkpoint).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (without --checkpoint).")
@click.option("--epochs", type=click.IntRange(min=1), help="Recipe 'epochs'.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Recipe 'batch_size'.")
@click.option("--lr", type=float, help="Recipe 'lr'.")
@click.option("--num-widths", type=click.IntRange(min=2), default=4, show_default=True,
              help="Sandwich widths per training step.")
@click.option("--train-min-wm", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.35, show_default=True, help="Sandwich smallest multiplier.")
@click.option("--resume", is_flag=True, help="Continue OUT/train/last.pt.")
@click.option("--device", default="auto", show_default=True)
def search_width(model_name: str, data_spec: str, target_macs: float | None,
                 target_ms: float | None, checkpoint: Path | None, out: Path,
                 resolution: int | None, latency_model: Path | None, levels: str,
                 threads: int, population: int, generations: int, parents: int,
                 mutation_prob: float, crossover: float, min_wm: float | None,
                 bn_batches: int, val_batches: int | None, seed: int,
                 recipe_name: str | None, overrides: tuple[str, ...], epochs: int | None,
                 batch_size: int | None, lr: float | None, num_widths: int,
                 train_min_wm: float, resume: bool, device: str) -> None:
    """Searches the widths of a slim network under a MACs or latency target.

    Writes OUT/arch.json (the best width vector's extracted arch def, with its widths,
    accuracy and cost: `fbnas train OUT/arch.json ...` accepts it), OUT/subnet.pt (its
    weights: `fbnas eval --ckpt OUT/subnet.pt`, or `--init-from` to fine-tune),
    OUT/candidates.jsonl and OUT/pareto.png (accuracy vs cost of every candidate).
    """
    keep_freed_memory()  # steps reuse freed activation memory: fbnas.train.memory
    if (target_macs is None) == (target_ms is None):
        raise click.UsageError("give exactly one of --target-macs and --target-ms")
    try:
        level_values = tuple(float(x) for x in levels.split(","))
    except ValueError:
        raise click.UsageError(f"--levels must be comma-separated numbers, got {levels!r}"
                               ) from None
    sandwich = SandwichConfig(num_widths=num_widths, min_wm=train_min_wm)
    if checkpoint is None:
        flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "resolution": resolution}
        checkpoint = _train_first(model_name, data_spec, out, recipe_name, overrides, flags,
                                  sandwich, resume, device)
    model, run_info = _load(model_name, checkpoint)
    trained_min = float(run_info["slim"]["sandwich"]["min_wm"])
    resolution = resolution or run_info.get("resolution")
    data = open_datasets(data_spec, resolution, None)
    if data.num_classes != model.num_classes:
        raise click.UsageError(f"{checkpoint} classifies {model.num_classes} classes, "
                               f"{data.spec} has {data.num_classes}")
    config = WidthSearchConfig(population=population, generations=generations,
                               parents=min(parents, population),
                               mutation_prob=mutation_prob, crossover=crossover,
                               min_wm=min_wm if min_wm is not None else trained_min,
                               seed=seed)
    if config.min_wm < trained_min:
        click.echo(f"warning: --min-wm {config.min_wm:g} is below the training's "
                   f"{trained_min:g}: narrower widths were never trained", err=True)
    out.mkdir(parents=True, exist_ok=True)  # only now: a rejected command leaves no folder
    constraint = _constraint(model, data.resolution, target_macs, target_ms, latency_model,
                             out, level_values, threads)
    torch_device = "cuda" if device == "auto" and torch.cuda.is_available() else (
        "cpu" if device == "auto" else device)
    evaluator = WidthEvaluator(model, data, bn_batches=bn_batches, val_batches=val_batches,
                               device=torch_device, seed=seed)
    seen: list[EvaluatedWidths] = []

    def report_generation() -> None:
        """One line per finished generation: its size and the best candidate so far."""
        generation = seen[-1].generation
        best = max(seen, key=lambda c: c.top1)
        size = sum(c.generation == generation for c in seen)
        click.echo(f"generation {generation}: {size} candidates ({len(seen)} in all), best "
                   f"so far top-1 {best.top1:.2f} % at {human(best.cost)} {constraint.unit}",
                   err=True)

    def progress(generation: int, candidate: EvaluatedWidths) -> None:
        if seen and generation != seen[-1].generation:
            report_generation()
        seen.append(candidate)

    result = evolve_widths(model, constraint, evaluator, config, progress)
    if seen:
        report_generation()
    paths = write_results(model, result, out, data.resolution, evaluator.prepare,
                          {"checkpoint": str(checkpoint), "data": str(data.spec),
                           "search": config.to_dict()})
    record = json.loads(paths["arch"].read_text())
    best = result.best
    click.echo(f"best of {len(result.evaluated)} candidates: top-1 {best.top1:.2f} % at "
               f"{human(best.cost)} {constraint.unit} (target {human(constraint.target)}); "
               f"{human(record['params'])} params, {human(record['macs'])} MACs")
    click.echo(f"wm = [{', '.join(f'{w:.3f}' for w in best.wm)}]")
    click.echo(f"ch = {json.dumps(record['ch'])}")
    click.echo(f"{paths['arch']}, {paths['subnet']}, {paths['candidates']}, "
               f"{paths['pareto']}")
