"""``fbnas zoo list|show`` and ``fbnas ops``."""

from __future__ import annotations

import json

import click
import yaml

from fbnas.blocks import BLOCKS
from fbnas.cli.format import human, table
from fbnas.cost import arch_cost
from fbnas.zoo import families, get_arch_def, get_entry, list_archs


@click.group()
def zoo() -> None:
    """The reference model zoo (FBNet, FBNetV2/V3, EfficientNet, MobileNet, RegNet...)."""


def zoo_rows(family: str | None) -> list[dict]:
    rows = []
    for name in list_archs(family):
        entry = get_entry(name)
        cost = arch_cost(name)
        published = entry.published or {}
        rows.append({
            "name": name,
            "family": entry.family,
            "resolution": entry.resolution,
            "params": cost.params,
            "macs": cost.macs,
            "top1": published.get("top_1_accuracy"),
            "legacy": entry.legacy,
        })
    return rows


@zoo.command("list")
@click.option("--family", type=click.Choice(families(), case_sensitive=False),
              help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def zoo_list(family: str | None, as_json: bool) -> None:
    """Lists every zoo architecture: family, resolution, params, MACs, published top-1.

    Params and MACs are the whole 1000-class classifier at the native resolution.
    """
    if family:
        family = next(f for f in families() if f.lower() == family.lower())
    rows = zoo_rows(family)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(table(
        ["name", "family", "res", "params", "MACs", "top-1"],
        [[r["name"] + (" (legacy)" if r["legacy"] else ""), r["family"], r["resolution"],
          human(r["params"]), human(r["macs"]),
          f"{r['top1']:.1f}" if r["top1"] is not None else "-"] for r in rows],
        align_right=[False, False, True, True, True, True]))
    click.echo(f"\n{len(rows)} architectures. Details: fbnas info NAME --blocks; "
               f"definition: fbnas zoo show NAME")


@zoo.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json",
              show_default=True)
def zoo_show(name: str, fmt: str) -> None:
    """Prints a zoo architecture's definition, ready to edit into your own arch file."""
    arch = get_arch_def(name)
    if fmt == "yaml":
        click.echo(yaml.safe_dump(arch, sort_keys=False, default_flow_style=None), nl=False)
    else:
        click.echo(json.dumps(arch, indent=1))


@click.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def ops(names: tuple[str, ...], as_json: bool) -> None:
    """Lists the registered block ops (built-in and your own); with NAMES, each op's options
    (type and default) for the block entries of arch defs and search spaces."""
    if names:
        _op_options([BLOCKS.get(name) for name in names], as_json)
        return
    rows = []
    for name in BLOCKS.names():
        op = BLOCKS.get(name)
        rows.append({"name": name, "description": op.description,
                     "fixed": dict(op.fixed), "defaults": op.defaults.to_dict(),
                     "options": sorted(op.option_names)})
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=list))
        return

    # The op-level defaults tell variants apart (ir_k3_hs: h-swish, ir_k3_se: SE).
    click.echo(table(["op", "description", "fixed", "defaults"],
                     [[r["name"], r["description"], _pairs(r["fixed"]), _pairs(r["defaults"])]
                      for r in rows], align_right=[False, False, False, False]))
    click.echo("\nfbnas ops NAME lists an op's options with their types and defaults.")


def _pairs(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _op_options(op_defs: list, as_json: bool) -> None:
    """Options of each op: name, type, default (the op's own default, else the schema's)."""
    from fbnas.blocks.options import type_name

    records = []
    for op in op_defs:
        options = []
        required = set(op.schema.required())
        for key, (annotation, default) in sorted(op.schema.fields.items()):
            if key in op.fixed:
                continue
            value = "(required)" if key in required and key not in op.defaults else \
                op.defaults.get(key, default)
            options.append({"option": key, "type": type_name(annotation), "default": value})
        records.append({"name": op.name, "description": op.description,
                        "fixed": dict(op.fixed), "options": options,
                        "ignored": sorted(op.ignored)})
    if as_json:
        click.echo(json.dumps(records, indent=2, default=repr))
        return
    for record in records:
        fixed = _pairs(record["fixed"])
        click.echo(f"{record['name']}: {record['description']}"
                   + (f" (fixed: {fixed})" if fixed else ""))
        click.echo(table(["option", "type", "default"],
                         [[o["option"], o["type"], repr(o["default"])
                           if o["default"] != "(required)" else "(required)"]
                          for o in record["options"]], align_right=[False, False, False]))
        if record["ignored"]:
            click.echo(f"accepted and ignored: {', '.join(record['ignored'])}")
        click.echo("")

