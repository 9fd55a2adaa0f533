"""``fbnas info``: params, MACs, output shape and per-block cost of architectures."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fbnas.cli.format import human, table
from fbnas.cost import ArchCost, arch_cost
from fbnas.zoo import list_archs
from fbnas.zoo.model import resolve_arch


def _recorded_classes(source: str) -> int | None:
    """The class count an fbnas-written arch file records (a search's arch.json), if any."""
    path = Path(source)
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("num_classes")
    except (ValueError, AttributeError):
        return None  # resolve_arch reports an unreadable file
    return value if isinstance(value, int) and value > 0 else None


def describe(source: str, resolution: int | None, num_classes: int | None, width_ratio: float,
             with_blocks: bool) -> dict:
    spec, name, native = resolve_arch(source)
    if num_classes is None:
        num_classes = _recorded_classes(source) or 1000
    cost: ArchCost = arch_cost(spec, resolution or native, num_classes, width_ratio)
    record = {
        "name": name,
        "resolution": cost.resolution,
        "params": cost.params,
        "macs": cost.macs,
        "output_shape": list(cost.output_shape),
        "num_blocks": len(cost.blocks),
        "width_ratio": width_ratio,
    }
    if with_blocks:
        record["blocks"] = [
            {"name": b.name, "op": b.op, "in_channels": b.in_channels,
             "out_channels": b.out_channels, "out_hw": list(b.out_hw), "params": b.params,
             "macs": b.macs}
            for b in cost.blocks
        ]
        if cost.head is not None:
            record["blocks"].append({"name": "head", "op": cost.head.op,
                                     "params": cost.head_params, "macs": cost.head_macs})
    return record


def print_record(record: dict) -> None:
    click.echo(f"{record['name']}: {human(record['params'])} params "
               f"({record['params']:,}), {human(record['macs'])} MACs "
               f"({record['macs']:,}) at {record['resolution']}x{record['resolution']}, "
               f"output {tuple(record['output_shape'])}, {record['num_blocks']} blocks")
    if "blocks" in record:
        rows = []
        for b in record["blocks"]:
            if b["name"] == "head":
                rows.append(["head", b["op"], "", "", human(b["params"]), human(b["macs"])])
                continue
            rows.append([b["name"], b["op"], f"{b['in_channels']}->{b['out_channels']}",
                         "x".join(map(str, b["out_hw"])), human(b["params"]),
                         human(b["macs"])])
        click.echo(table(["block", "op", "channels", "out", "params", "MACs"], rows,
                         align_right=[False, False, True, True, True, True]))
        click.echo("")


@click.command()
@click.argument("archs", nargs=-1)
@click.option("--all", "all_archs", is_flag=True, help="Every zoo architecture.")
@click.option("--resolution", "-r", type=click.IntRange(min=1),
              help="Input size (default: each arch's native resolution).")
@click.option("--num-classes", type=click.IntRange(min=1),
              help="Classifier outputs (default: the file's num_classes, which search runs "
                   "record, else 1000).")
@click.option("--width-ratio", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Scale every block's width (reference rounding).")
@click.option("--blocks", "with_blocks", is_flag=True, help="Per-block breakdown.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def info(archs: tuple[str, ...], all_archs: bool, resolution: int | None,
         num_classes: int | None,
         width_ratio: float, with_blocks: bool, as_json: bool) -> None:
    """Params, MACs and output shape of zoo names or arch-def files (JSON/YAML).

    Computed analytically from the definition; equal to building the model and counting
    (conv + linear multiply-accumulates, the whole classifier).
    """
    sources = list(archs) + (list_archs() if all_archs else [])
    if not sources:
        raise click.UsageError("name at least one architecture (or --all)")
    records = [describe(s, resolution, num_classes, width_ratio, with_blocks) for s in sources]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for record in records:
        print_record(record)
