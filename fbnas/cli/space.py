"""``fbnas space list|show|sample``: search spaces as data, sampled into arch-def files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import click
import yaml

from fbnas.cli.format import human, table
from fbnas.cli.space_dmasking import is_dmasking_space, show_dmasking_space
from fbnas.cost import arch_cost
from fbnas.search import SPACES, get_space
from fbnas.search.space import space_summary


@click.group()
def space() -> None:
    """Search spaces (FBNetV1 ImageNet, CIFAR and the reduced demo space, or your own as a
    .json/.yaml file)."""


@space.command("list")
@click.option("--json", "as_json", is_flag=True)
def space_list(as_json: bool) -> None:
    """Lists the registered search spaces."""
    rows = [space_summary(s) for s in SPACES.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(table(["space", "input", "layers", "architectures", "description"],
                     [[r["name"], r["input_size"], r["layers"], f"{r['size']:.2e}",
                       r["description"]] for r in rows],
                     align_right=[False, True, True, True, False]))


@space.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Write the definition as JSON.")
@click.option("--yaml", "as_yaml", is_flag=True, help="Write the definition as YAML.")
def space_show(name: str, as_json: bool, as_yaml: bool) -> None:
    """Shows a space (a name or a space file): its layers and candidates, or with --json /
    --yaml its definition, which `--space FILE` of every command reads back: copy one to
    define your own (any registered op can be a candidate, see `fbnas ops`)."""
    if as_json and as_yaml:
        raise click.UsageError("give one of --json and --yaml")
    if is_dmasking_space(name):
        show_dmasking_space(name, as_json, as_yaml)
        return
    search_space = get_space(name)
    if as_json or as_yaml:
        data = search_space.to_dict()
        click.echo(json.dumps(data, indent=1) if as_json
                   else yaml.safe_dump(data, sort_keys=False, default_flow_style=None),
                   nl=as_json)
        return
    summary = space_summary(search_space)
    click.echo(f"{search_space.name}: {summary['description'] or 'search space'}")
    click.echo(f"input {search_space.input_size}x{search_space.input_size}, "
               f"{search_space.num_layers} searchable layers, {search_space.size:.3g} "
               f"architectures")
    rows = [[i, layer.stage_idx, layer.out_channels, layer.stride,
             " ".join(c.name for c in layer.candidates)]
            for i, layer in enumerate(search_space.layers)]
    click.echo(table(["layer", "stage", "channels", "stride", "candidates"], rows,
                     align_right=[True, True, True, True, False]))


@space.command("sample")
@click.argument("name")
@click.option("-n", "count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the arch-def files.")
def space_sample(name: str, count: int, seed: int, out_dir: Path) -> None:
    """Writes N uniformly sampled architectures of a space as arch-def JSON files."""
    search_space = get_space(name)
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        choices = search_space.sample(rng)
        arch = search_space.arch_def(choices)
        path = out_dir / f"{search_space.name}_s{seed}_{i:03d}.json"
        path.write_text(json.dumps({
            "arch_def": arch, "space": search_space.name, "seed": seed,
            "choices": search_space.choice_names(choices)}, indent=1))
        cost = arch_cost(arch)
        rows.append([path.name, human(cost.params), human(cost.macs)])
    click.echo(table(["file", "params", "MACs"], rows, align_right=[False, True, True]))
    click.echo(f"\n{count} architectures of {search_space.name} in {out_dir}/")
