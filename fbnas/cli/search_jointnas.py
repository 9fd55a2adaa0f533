"""``fbnas search jointnas``: FBNetV3 joint architecture + training-recipe search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fbnas.cli.format import human
from fbnas.errors import ConfigError, parse_assignments
from fbnas.search.jointnas.search import load_settings, presets, run_jointnas, run_reuse


@click.command("jointnas")
@click.option("--space", "space", metavar="FILE|NAME",
              help="Joint space file or shipped space (fbnet_v3, jointnas_digits).")
@click.option("--data", "-d", "data", help="Dataset spec candidates train on (digits...).")
@click.option("--preset", type=click.Choice(presets()), help="Built-in settings "
              "(digits: a whole search on digits in <= 15 min on 2 cores).")
@click.option("--config", "-c", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (YAML/JSON; over the preset if both are given).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override a setting (coarse.rounds=2, fine.population=50); repeatable.")
@click.option("--max-macs", type=float, help="MACs budget.")
@click.option("--max-params", type=float, help="Parameter budget.")
@click.option("--max-ms", type=float, help="Latency budget (ms), priced with --lut and/or "
              "--latency-model.")
@click.option("--lut", type=click.Path(dir_okay=False), help="Latency table for --max-ms "
              "(fbnas lut build --space SPACE; its TABLE.model.json prices what it lacks).")
@click.option("--latency-model", "latency_model", type=click.Path(dir_okay=False),
              help="Block latency model (fbnas lut fit-model) for the blocks --lut lacks, "
                   "or for every block without --lut.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where candidates train (default local worker processes).")
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes "
              "(Ray: CPUs of a local instance).")
@click.option("--address", help="Ray cluster: auto or HOST:PORT (with --executor ray).")
@click.option("--arch", "arch", type=click.Path(dir_okay=False),
              help="Fixed architecture (arch-def file): search the recipe only.")
@click.option("--reuse", type=click.Path(file_okay=False, path_type=Path), metavar="RUN",
              help="Rerun stage 2 on RUN's fitted predictor for new constraints; no "
                   "training.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the whole search.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (rerun the same command to resume).")
def search_jointnas(space: str | None, data: str | None, preset: str | None,
                    config_file: Path | None, assignments: tuple[str, ...],
                    max_macs: float | None, max_params: float | None, max_ms: float | None,
                    lut: str | None, latency_model: str | None, executor: str | None,
                    workers: int | None,
                    address: str | None, arch: str | None, reuse: Path | None,
                    seed: int | None, out: Path) -> None:
    """FBNetV3 JointNAS: search architecture and training recipe together.

    Stage 1 calibrates early stopping and trains Sobol-pool candidates chosen by an
    accuracy predictor; stage 2 runs a genetic search on the predictor under the
    constraints (every one given must hold); the best are trained with the full recipe.
    OUT gets arch.json + recipe.yaml (for `fbnas train`) and report/.
    """
    changes: dict[str, Any] = parse_assignments(assignments, "--set", ConfigError)
    given = {"space": space, "data": data, "max_macs": max_macs, "max_params": max_params,
             "max_ms": max_ms, "lut": lut, "latency_model": latency_model,
             "executor": executor, "workers": workers,
             "address": address, "arch": arch, "seed": seed}
    changes.update({k: v for k, v in given.items() if v is not None})

    def say(message: str) -> None:
        click.echo(message, err=True)

    if reuse is not None:
        if preset or config_file:
            raise ConfigError("--reuse takes its settings from RUN; give only constraints "
                              "and --set fine.*")
        result = run_reuse(reuse, out, changes, say)
    else:
        config = load_settings(config_file, preset).with_changes(changes)
        say(f"jointnas: space {config.space}, data {config.data}, constraints "
            f"{config.constraints().describe()}, {config.executor} executor with "
            f"{config.workers} worker(s) -> {out}")
        result = run_jointnas(config, out, say)
    fine_top = next(t for t in result.fine["top"] if tuple(t["sample"]) == result.chosen)
    click.echo(f"chosen: predicted {result.predicted:.4f}"
               + (f", measured {result.measured:.4f}" if result.measured is not None else "")
               + f", {human(fine_top['macs'])} MACs, {human(fine_top['params'])} params")
    click.echo(f"  {out / 'arch.json'}  {out / 'recipe.yaml'}  {out / 'report' / 'report.md'}")
