"""``fbnas space show`` for DMasking spaces (fbnet_v2, fbnet_v2_paper, dmasking_digits)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from fbnas.cli.format import table
from fbnas.errors import ConfigError
from fbnas.search.dmasking.space import builtin_spaces, load_dmasking_space


def is_dmasking_space(name: str) -> bool:
    """A built-in DMasking space name, or a space file with ``resolutions`` and ``stages``."""
    if name in builtin_spaces():
        return True
    path = Path(name)
    if not path.is_file() or path.suffix not in (".yaml", ".yml", ".json"):
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "stages" in data and "resolutions" in data


def show_dmasking_space(name: str, as_json: bool, as_yaml: bool) -> None:
    """Writes the space as JSON/YAML (every range spelt out), or a table of its stages."""
    try:
        space = load_dmasking_space(name)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    data = space.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    if as_yaml:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), nl=False)
        return
    click.echo(f"{space.name}: {space.description or 'DMasking space'}")
    click.echo(f"resolutions {', '.join(map(str, space.resolutions))} (first "
               f"{space.resolved_blocks} blocks), width divisor {space.width_divisor}")
    rows = [[i, s.kind, s.blocks, s.stride, s.channels, " ".join(map(str, s.widths)),
             " ".join(f"{e:g}" for e in s.expansions) if s.kind != "conv" else "-",
             " ".join(map(str, s.kernels)), "yes" if s.se else "no", s.act]
            for i, s in enumerate(space.stages)]
    click.echo(table(["stage", "kind", "blocks", "stride", "max", "widths", "expansions",
                      "kernels", "se", "act"], rows))
