"""``fbnas train`` and ``fbnas eval``: the training pipeline from the command line.

The library (``fbnas.train``) never prints; this module turns its listener events into a
progress bar and one summary line per epoch, on rank 0 only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import torch

from fbnas.cli.launch import relaunch_under_torchrun
from fbnas.data import open_datasets
from fbnas.export.checkpoint import is_checkpoint_path
from fbnas.search.dmasking.from_supernet import init_from_masked_supernet, is_masked_run
from fbnas.search.dnas import from_supernet
from fbnas.tasks import ClassificationTask, Task, recorded_task
from fbnas.train import checkpoint as ckpt
from fbnas.train.config import RecipeError, TrainConfig, load_recipe
from fbnas.train.distributed import init_distributed, shutdown_distributed
from fbnas.train.memory import keep_freed_memory
from fbnas.train.regularize import load_init_weights, read_init_weights
from fbnas.train.trainer import (
    EvalResult,
    StepInfo,
    Trainer,
    TrainListener,
    evaluate,
    resolve_device,
)
from fbnas.zoo.checkpoint import CheckpointError
from fbnas.zoo.model import FBNet, build_model


def metric_text(task: Task, name: str, value: float) -> str:
    """One metric for people: ``top-1 97.50 %`` for accuracies, ``loss 0.1234`` else."""
    if isinstance(task, ClassificationTask) and name.startswith("top"):
        return f"top-{name[3:]} {value:.2f} %"
    if task.name == "landmarks" and name != "loss":  # NME, failure rate, AUC in %
        return f"{name.replace('_', ' ')} {value:.2f} %"
    return f"{name} {value:.4f}"


def metrics_text(task: Task, result: EvalResult) -> str:
    """A result's metrics on one line, the loss last (``top-1 97.50 %  top-5 ...  loss``)."""
    names = [n for n in task.metric_names if n != "loss"] + (
        ["loss"] if "loss" in task.metric_names else [])
    return "  ".join(metric_text(task, n, result.metrics[n]) for n in names)


class ConsoleProgress(TrainListener):
    """A tqdm bar per epoch (loss, lr, images/s) and a summary line per epoch, on stderr."""

    def __init__(self, bar: bool) -> None:
        self.bar_enabled = bar
        self.bar: Any = None
        self.start = 0.0
        self.images = 0
        self.last_refresh = 0.0

    def on_epoch_start(self, trainer: Trainer, epoch: int, batches: int) -> None:
        self.start, self.images = time.perf_counter(), 0
        if self.bar_enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=batches, desc=f"epoch {epoch}/{trainer.config.epochs}",
                            unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        self.images += info.images
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_refresh > 0.5 or info.batch == info.batches:
            self.last_refresh = now
            rate = self.images / max(now - self.start, 1e-9)
            self.bar.set_postfix(loss=f"{float(info.loss):.3f}", lr=f"{info.lr:.2e}",
                                 img_s=f"{rate:.0f}", refresh=False)

    def on_epoch_end(self, trainer: Trainer, metrics: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        task = trainer.task
        score = f"val_ema_{task.score_name}"
        ema = f"  ema {task.score_name} {metrics[score]:.2f}" if score in metrics else ""
        val = "  ".join(f"val loss {metrics['val_loss']:.4f}" if name == "loss" else
                        f"{name} {metrics['val_' + name]:.2f}" for name in task.metric_names)
        rate = metrics["train_images_per_s"] or 0.0
        click.echo(f"epoch {metrics['epoch']}/{trainer.config.epochs}  train loss "
                   f"{metrics['train_loss']:.4f}  {val}{ema}  lr "
                   f"{metrics['lr']:.2e}  {rate:.0f} img/s", err=True)


def _resolve_recipe(config: str | None, overrides: tuple[str, ...],
                    flags: dict[str, Any]) -> TrainConfig:
    recipe = load_recipe(config).with_overrides(overrides)
    changes = {k: v for k, v in flags.items() if v is not None}
    epochs = changes.get("epochs")
    if epochs is not None and recipe.warmup_epochs >= epochs:
        # A short smoke-test run (--epochs 1) meets a recipe's warm-up: say which two values
        # clash and how to resolve it, rather than the recipe check's generic message.
        raise click.UsageError(
            f"--epochs {epochs} leaves no epoch after the recipe's warm-up (warmup_epochs "
            f"{recipe.warmup_epochs:g}); add --set warmup_epochs=N with N < {epochs} "
            f"(0 for none)")
    return recipe.replace(**changes) if changes else recipe


def _build(arch: Any, task: Task, width_ratio: float) -> FBNet:
    builder = getattr(task, "build_model", None)  # a task with its own networks (landmarks)
    if builder is not None:
        return builder(arch, width_ratio)
    return build_model(arch, width_ratio=width_ratio, head=task.head_spec)


@click.command()
@click.argument("arch", metavar="ARCH|FILE", required=False)
@click.option("--data", "-d", "data_spec", help="Dataset spec: digits, cifar10:PATH, "
              "cifar100:PATH, imagefolder:PATH, optionally ?classes=N&per_class=M.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config.yaml, metrics.jsonl, tensorboard/, last.pt, best.pt.")
@click.option("--config", "-c", "config", help="Recipe YAML file or built-in recipe name.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (repeatable), e.g. --set ema_decay=0.999.")
@click.option("--epochs", type=click.IntRange(min=1), help="Recipe 'epochs'.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Recipe 'batch_size' (global).")
@click.option("--lr", type=float, help="Recipe 'lr' (for the global batch).")
@click.option("--seed", type=click.IntRange(min=0), help="Recipe 'seed'.")
@click.option("--resolution", type=click.IntRange(min=8), help="Recipe 'resolution'.")
@click.option("--workers", type=click.IntRange(min=0), help="Recipe 'workers'.")
@click.option("--width-ratio", type=float, default=1.0, show_default=True,
              help="Scale every block's width.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1...")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads per process (torch.set_num_threads).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (or last.prev.pt).")
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=Path),
              help="Start from these weights (fbnas or mobile-vision checkpoint).")
@click.option("--init-from-supernet", "supernet_run", metavar="RUN",
              type=click.Path(file_okay=False, path_type=Path),
              help="Start ARCH (an arch file of a DNAS run: RUN/arch.json, "
                   "RUN/samples/arch_XX.json) from the weights its blocks had in RUN's "
                   "supernet (RUN/last.pt), to fine-tune instead of training from scratch.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="Run N data-parallel processes on this machine (via torchrun).")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True)
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@click.option("--task", "task_name", type=click.Choice(["classification", "landmarks"]),
              default="classification", show_default=True,
              help="landmarks: --data is a folder with train_data/ and test_data/, ARCH "
                   "pfld, mbv3_pfld or an architecture file; the recipe defaults to "
                   "'landmarks'.")
@click.pass_context
def train(ctx: click.Context, arch: str | None, data_spec: str | None, out: Path,
          config: str | None, overrides: tuple[str, ...], epochs: int | None,
          batch_size: int | None, lr: float | None, seed: int | None,
          resolution: int | None, workers: int | None, width_ratio: float, device: str,
          threads: int | None, resume: bool, init_from: Path | None,
          supernet_run: Path | None, nproc: int | None, tensorboard: bool,
          progress: bool | None, task_name: str = "classification") -> None:
    """Trains ARCH (a zoo name or arch-def file) on --data with a recipe.

    The recipe is --config (a YAML file or a built-in name), then --set KEY=VALUE
    overrides, then --epochs/--batch-size/--lr/--seed/--resolution/--workers. The
    resolved recipe is saved as OUT/config.yaml. With --resume, ARCH, --data and the
    recipe come from the checkpoint; any given must agree with it.

    Multi-process: --nproc N runs N processes here (gloo on CPU, nccl on GPU). Several
    machines: run on each `torchrun --nnodes M --node-rank K --nproc-per-node N
    --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m fbnas train ...`.
    """
    keep_freed_memory()  # steps reuse freed activation memory: fbnas.train.memory
    if init_from is not None and supernet_run is not None:
        raise click.UsageError("give at most one of --init-from and --init-from-supernet")
    if nproc is not None and nproc > 1:
        relaunch_under_torchrun(ctx, ["train"], nproc, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
             "resolution": resolution, "workers": workers}
    saved: dict[str, Any] | None = None
    if resume:
        path, saved, problems = ckpt.find_resumable(out)
        for problem in problems:
            click.echo(f"warning: skipping unreadable checkpoint: {problem}", err=True)
        recipe = TrainConfig.from_dict(saved["config"], f"{path} config")
        if config is not None or overrides or any(v is not None for v in flags.values()):
            asked = _resolve_recipe(config, overrides, flags) if config is not None else \
                recipe.with_overrides(overrides).replace(
                    **{k: v for k, v in flags.items() if v is not None})
            changed = recipe.diff(asked)
            if changed:
                listing = ", ".join(f"{k} {a!r} (saved) vs {b!r}" for k, (a, b) in
                                    changed.items())
                raise click.UsageError(f"--resume continues the saved recipe; these differ: "
                                       f"{listing}")
        run_info = dict(saved.get("run_info", {}))
        data_spec = data_spec or saved["data"]
        if data_spec != saved["data"]:
            raise click.UsageError(f"--resume: --data {data_spec!r} differs from the "
                                   f"checkpoint's {saved['data']!r}")
        if arch is not None and arch != run_info.get("arch", arch):
            raise click.UsageError(f"--resume: ARCH {arch!r} differs from the checkpoint's "
                                   f"{run_info.get('arch')!r}")
        arch_source: Any = dict(saved["arch_def"])
        width_ratio = float(saved.get("width_ratio", width_ratio))
    else:
        if arch is None or data_spec is None:
            raise click.UsageError("ARCH and --data are required (unless --resume)")
        if (out / ckpt.LAST).exists():
            raise click.UsageError(f"{out} already holds a run ({ckpt.LAST}); pass --resume "
                                   f"to continue it or choose another --out")
        if task_name == "landmarks" and config is None:
            config = "landmarks"
        recipe = _resolve_recipe(config, overrides, flags)
        arch_source = arch
        run_info = {"arch": arch}

    context = init_distributed(resolve_device(device, _single()).type)
    try:
        task = recorded_task(saved, "the checkpoint") if saved is not None else None
        if task is None and task_name == "landmarks":
            from fbnas.tasks.landmarks.task import LandmarkTask

            task = LandmarkTask()
        if task is None:  # a new run, or one written before tasks were recorded
            data = open_datasets(data_spec, recipe.resolution, recipe.augment)
            task = ClassificationTask.for_data(data)
        else:
            data = task.open_datasets(data_spec, recipe.resolution, recipe.augment)
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank
        model = _build(arch_source, task, width_ratio)
        if init_from is not None and not resume:
            note = load_init_weights(model, read_init_weights(init_from))
            run_info["init_from"] = str(init_from)
            if context.is_main:
                click.echo(f"{init_from}: {note}", err=True)
        if supernet_run is not None and not resume and is_masked_run(supernet_run):
            names, epochs = init_from_masked_supernet(model, supernet_run)
            run_info["init_from_supernet"] = str(supernet_run)
            if context.is_main:
                click.echo(f"{supernet_run}: started from the masked supernet's leading "
                           f"channels after {epochs} search epochs ({', '.join(names)})",
                           err=True)
        elif supernet_run is not None and not resume and task.name == "landmarks":
            from fbnas.cli.landmarks import init_from_pfld_supernet

            note = init_from_pfld_supernet(model, supernet_run)
            run_info["init_from_supernet"] = str(supernet_run)
            if context.is_main:
                click.echo(f"{supernet_run}: {note}", err=True)
        elif supernet_run is not None and not resume:
            run = from_supernet.load_supernet_run(supernet_run)
            choices = from_supernet.init_from_supernet(model, run)
            run_info["init_from_supernet"] = str(supernet_run)
            if context.is_main:
                click.echo(f"{supernet_run}: started from the supernet's weights after "
                           f"{run.epochs_done} search epochs, path "
                           f"{' '.join(run.space.choice_names(choices))}", err=True)
        show_bar = (sys.stderr.isatty() if progress is None else progress) and context.is_main
        listeners = [ConsoleProgress(show_bar)] if context.is_main else []
        trainer = Trainer(model, recipe, data, out_dir=out, device=device, context=context,
                          listeners=listeners, run_info=run_info, tensorboard=tensorboard,
                          task=task)
        if context.is_main:
            what = (f"{data.num_classes} classes" if data.num_classes is not None else
                    f"{getattr(task, 'num_points', '?')} landmarks")
            click.echo(f"{model.name}: {sum(p.numel() for p in model.parameters()):,} params, "
                       f"{what} at {data.resolution}x{data.resolution}, "
                       f"{len(data.train)} train / {len(data.val)} val images, "
                       f"{context.world_size} process(es) on {trainer.device}", err=True)
        if resume:
            used = trainer.resume()
            if context.is_main:
                click.echo(f"resumed from {used} after epoch {trainer.epoch} "
                           f"(step {trainer.step})", err=True)
        history = trainer.fit()
    finally:
        shutdown_distributed()
    if context.is_main and history:
        # The landmark score is -NME (higher is better); people read the NME.
        value = -trainer.best_score if task.name == "landmarks" else trainer.best_score
        best = metric_text(task, task.score_name, value)
        click.echo(f"done: best val {best} (epoch {trainer.best_epoch}); "
                   f"{out / ckpt.LAST}, {out / ckpt.BEST}")


def _single() -> Any:
    from fbnas.train.distributed import DistContext

    return DistContext()


@click.command(name="eval")
@click.argument("arch", metavar="[ARCH|FILE]", required=False)
@click.option("--ckpt", "checkpoint", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint: an fbnas run's last.pt/best.pt, or mobile-vision weights.")
@click.option("--data", "-d", "data_spec", required=True, help="Dataset spec (its val split).")
@click.option("--resolution", "-r", type=click.IntRange(min=8),
              help="Input size (default: the checkpoint's, else the dataset's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--wm", "wms", multiple=True, type=click.FloatRange(0, 1, min_open=True),
              help="Slim checkpoints: a uniform width multiplier to evaluate (repeatable; "
                   "default: 1 and the training's smallest).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--ced-plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Landmark checkpoints: where to write the CED curve (default: "
                   "CKPT_ced.png beside the checkpoint).")
def eval_command(arch: str | None, checkpoint: Path, data_spec: str, resolution: int | None,
                 batch_size: int, workers: int, device: str, wms: tuple[float, ...],
                 as_json: bool, ced_plot: Path | None = None) -> None:
    """Evaluates a checkpoint on the validation split of --data: its task's metrics
    (classification: loss, top-1, top-5).

    ARCH may be left out when the checkpoint holds its arch def (fbnas checkpoints do);
    the EMA weights are evaluated too when present. A slim (sandwich-trained) checkpoint is
    evaluated at the widths --wm, each after recalibrating its batch-norm statistics on
    training images as the training did.
    """
    state = ckpt.read_checkpoint(checkpoint)
    if "slim" in (state.get("run_info") or {}):
        if arch is not None:
            raise click.UsageError(f"{checkpoint} is a slim training run and holds its "
                                   f"network: leave out ARCH")
        _eval_slim(checkpoint, state, data_spec, resolution, batch_size, workers, device,
                   wms, as_json)
        return
    if wms:
        raise click.UsageError(f"--wm is for slim training runs; {checkpoint} is not one")
    if arch is None and "arch_def" not in state:
        raise click.UsageError(f"{checkpoint} holds no arch def: name the ARCH")
    resolution = resolution or state.get("resolution")
    task = recorded_task(state, str(checkpoint))
    if task is None:  # bare weights, or a run written before tasks were recorded
        data = open_datasets(data_spec, resolution, None)
        task = ClassificationTask(data.num_classes)
    else:
        data = task.open_datasets(data_spec, resolution, None)
    source: Any = arch if arch is not None else dict(state["arch_def"])
    width = float(state.get("width_ratio", 1.0))
    weights = {k: state[k] for k in ("model", "model_ema") if isinstance(state.get(k), dict)}
    if not weights:
        weights = {"model": state}
    torch_device = resolve_device(device, _single())
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "data": str(data.spec),
                               "resolution": data.resolution}
    loader = torch.utils.data.DataLoader(data.val, batch_size=batch_size, num_workers=workers)
    scored: dict[str, EvalResult] = {}
    for key, weight in weights.items():
        model = _build(source, task, width)
        try:
            from fbnas.zoo.checkpoint import load_mobile_cv_state_dict

            if task.name == "landmarks":
                from fbnas.cli.landmarks import load_weights

                load_weights(model, weight)
            else:
                load_mobile_cv_state_dict(model, weight)
        except CheckpointError as exc:
            what = (f"{task.num_classes}-class" if isinstance(task, ClassificationTask)
                    else f"the {task.name} task on")
            raise CheckpointError(f"{checkpoint} ({key!r}) on {what} {data.spec}: {exc}"
                                  ) from None
        scored[key] = evaluate(model.to(torch_device), loader, torch_device, task=task)
        results[key] = {**scored[key].metrics, "images": scored[key].count}
    if task.name == "landmarks":  # the per-image errors: the CED curve
        from fbnas.cli.landmarks import write_ced

        results["ced_plot"] = str(write_ced(source, task, weights, width, loader,
                                            torch_device, ced_plot or
                                            checkpoint.with_name(checkpoint.stem + "_ced.png")))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for key, result in scored.items():
        click.echo(f"{key}: {metrics_text(task, result)}  ({result.count} images, "
                   f"{data.spec} at {data.resolution}x{data.resolution})")
    if "ced_plot" in results:
        click.echo(f"CED curve ({task.norm} normalisation): {results['ced_plot']}")


def _eval_slim(checkpoint: Path, state: dict[str, Any], data_spec: str,
               resolution: int | None, batch_size: int, workers: int, device: str,
               wms: tuple[float, ...], as_json: bool) -> None:
    """``fbnas eval`` of a sandwich-trained checkpoint: every width of --wm, BN recalibrated."""
    from fbnas.slim.train import evaluate_slim_checkpoint

    recipe = TrainConfig.from_dict(state["config"], f"{checkpoint} config")
    # The training's augmentation: the recalibration sees the images the training saw.
    data = open_datasets(data_spec, resolution or state.get("resolution"), recipe.augment)
    torch_device = resolve_device(device, _single())
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "data": str(data.spec),
                               "resolution": data.resolution, "slim": True}
    keys = ["model"] + (["model_ema"] if isinstance(state.get("model_ema"), dict) else [])
    task = recorded_task(state, str(checkpoint)) or ClassificationTask(data.num_classes)
    scored: dict[str, list[tuple[float, EvalResult]]] = {}
    for key in keys:
        scored[key] = evaluate_slim_checkpoint(checkpoint, data, wms,
                                               use_ema=key == "model_ema",
                                               batch_size=batch_size, workers=workers,
                                               device=torch_device, state=state)
        results[key] = [{"wm": wm, **r.metrics, "images": r.count} for wm, r in scored[key]]
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for key in keys:
        for wm, r in scored[key]:
            click.echo(f"{key} at wm {wm:g}: {metrics_text(task, r)}  ({r.count} images, "
                       f"{data.spec} at {data.resolution}x{data.resolution})")


__all__ = ["RecipeError", "eval_command", "is_checkpoint_path", "train"]
