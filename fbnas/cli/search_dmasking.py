"""``fbnas search dmasking``: FBNetV2's channel/expansion/kernel/resolution search by masking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from fbnas.cli.format import human, table
from fbnas.cli.launch import relaunch_under_torchrun
from fbnas.errors import ConfigError
from fbnas.search.dmasking.search import builtin_configs, load_config, run_search
from fbnas.train.distributed import (
    DistContext,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from fbnas.train.memory import keep_freed_memory


def _resolve(source: str | None, assignments: tuple[str, ...], given: dict[str, Any],
             target_ms: float | None, target_macs: float | None):
    if target_ms is not None and target_macs is not None:
        raise click.UsageError("give at most one of --target-ms and --target-macs")
    try:
        base = load_config(source).with_overrides(assignments)
        merged = {**base.to_dict(), **{k: v for k, v in given.items() if v is not None}}
        if target_ms is not None:
            merged.update(target=target_ms, cost="latency")
        if target_macs is not None:
            merged.update(target=target_macs, cost="macs")
        if merged["warmup_epochs"] >= merged["epochs"]:
            raise click.UsageError(f"--warmup-epochs {merged['warmup_epochs']} leaves no "
                                   f"search epoch in --epochs {merged['epochs']}")
        return type(base).from_dict(merged, "search settings")
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.command("dmasking")
@click.option("--space", "space_name", required=True,
              help="DMasking space: fbnet_v2, fbnet_v2_paper, dmasking_digits or a "
                   ".yaml/.json file (fbnas space show fbnet_v2 --yaml writes one).")
@click.option("--data", "-d", "data_spec", required=True, help="Dataset spec, e.g. digits.")
@click.option("--config", "-c", "config_source", metavar="FILE|NAME",
              help=f"Settings: a YAML/JSON file of DMaskingConfig keys or a built-in "
                   f"({', '.join(builtin_configs())}).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override one setting (repeatable).")
@click.option("--target-macs", type=float, help="Pull the effective MACs to this target.")
@click.option("--target-ms", type=float,
              help="Pull the expected latency (ms) to this target (needs --lut and/or "
                   "--latency-model).")
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Latency table (fbnas lut) for --target-ms.")
@click.option("--latency-model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Block latency model for the pairs the table lacks.")
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--warmup-epochs", type=click.IntRange(min=0))
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--seed", type=int)
@click.option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1...")
@click.option("--amp/--no-amp", default=None, help="bfloat16 autocast (CUDA only).")
@click.option("--tensorboard/--no-tensorboard", default=None)
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt.")
@click.option("--nproc", type=click.IntRange(min=1),
              help="N data-parallel processes here (via torchrun).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.pass_context
def search_dmasking(ctx: click.Context, space_name: str, data_spec: str,
                    config_source: str | None, assignments: tuple[str, ...],
                    target_macs: float | None, target_ms: float | None,
                    lut_path: Path | None, model_path: Path | None, resume: bool,
                    nproc: int | None, out: Path, **settings: Any) -> None:
    """Searches widths (shared by residual-tied blocks), expansions, kernels and the input
    resolution by masking one supernet (FBNetV2 DMaskingNAS), with the effective-shape cost.

    Writes the engine's run folder (RUN/metrics.jsonl, theta.json, last.pt, best.pt,
    tensorboard/), the derived RUN/arch.json (a plain arch def: fbnas train RUN/arch.json,
    or --init-from-supernet RUN), sampled architectures in RUN/samples/, and the plots
    RUN/widths.png (the width distribution per layer over epochs) and RUN/curves.png (the
    effective cost against the target).
    """
    keep_freed_memory()
    if nproc is not None and nproc > 1:
        relaunch_under_torchrun(ctx, ["search", "dmasking"], nproc, None)
    if (out / "last.pt").exists() and not resume:
        raise click.UsageError(f"{out} already holds a search (last.pt); pass --resume or "
                               f"choose another --out")
    config = _resolve(config_source, assignments, settings, target_ms, target_macs)
    latency = None
    if config.cost == "latency":
        from fbnas.search.dmasking.latency import load_masked_latency

        try:
            latency = load_masked_latency(lut_path, model_path)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    context = init_distributed(resolve_device(config.device, DistContext()).type)
    try:
        try:
            result = run_search(space_name, data_spec, config, out, resume, None, context,
                                latency)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    finally:
        shutdown_distributed()
    if not context.is_main:
        return
    from fbnas.search.dmasking.report import plot_search_curves, plot_width_heatmap

    groups = json.loads((out / "theta.json").read_text())["groups"]
    plot_width_heatmap(result.history, groups, out / "widths.png")
    plot_search_curves(result.history, out / "curves.png", config.target)
    last = result.history[-1]
    record = json.loads((out / "arch.json").read_text())
    click.echo(f"searched {config.epochs} epochs: val top-1 in the supernet "
               f"{last['val_top1']:.1%}, theta entropy {last['entropy']:.2f}, expected cost "
               f"{human(last['expected_cost'])} {result.cost_unit}")
    click.echo(table(["decision", "derived"], [[n.split(": ")[0], n.split(": ")[1]]
                                                for n in result.choice_names]))
    click.echo(f"\n{out / 'arch.json'} ({record['derived']}): {human(record['params'])} "
               f"params, {human(record['macs'])} MACs at {record['resolution']}px; plots "
               f"{out / 'widths.png'}, {out / 'curves.png'}")
