"""``fbnas lut build|show|export-blocks|import`` and ``fbnas latency``: latency tables.

``build`` measures on this machine; ``export-blocks`` and ``import`` measure on another
device with the standalone runner (see :mod:`fbnas.cost.device_tables`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import HeadSpec
from fbnas.cli.format import progress_bar, table
from fbnas.cost.block_model import model_path
from fbnas.cost.block_sampling import (
    BlockRange,
    HeadRange,
    block_ranges,
    head_ranges,
    range_from_dict,
    sample_blocks,
)
from fbnas.cost.device_tables import (
    DEFAULT_OPSET,
    export_blocks,
    import_results,
    measured_by_runner,
    results_model_sample,
)
from fbnas.cost.latency import BACKENDS, DeviceInfo
from fbnas.cost.lut import (
    ArchItems,
    BuildSettings,
    LatencyTable,
    LatencyTableError,
    NetworkTiming,
    Prediction,
    TableItem,
    arch_items,
    measure_networks,
    measure_table,
)
from fbnas.export.checkpoint import checkpoint_head, is_checkpoint_path
from fbnas.io import read_json_or_yaml
from fbnas.search import get_space
from fbnas.search.space import SPACES, space_networks
from fbnas.train.checkpoint import read_checkpoint
from fbnas.zoo.checkpoint import CheckpointError

HEAD_HELP = ("The head, as JSON or a JSON file: {\"op\": \"cls_head\", \"options\": "
             "{\"num_classes\": 10}} (a task's head_spec; default: the classifier of "
             "--num-classes).")


def parse_head(text: str | None, num_classes: int) -> HeadSpec | None:
    """A ``--head`` value: a head spec as JSON text or the path of a JSON file (the
    classifier of ``--num-classes`` replaced, so that one must stay at its default)."""
    if text is None:
        return None
    if num_classes != 1000:
        raise click.UsageError("give --num-classes or --head, not both")
    path = Path(text)
    source = f"--head file {text!r}" if path.is_file() else "--head"
    try:
        data = json.loads(path.read_text(encoding="utf-8") if path.is_file() else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"not JSON (nor a JSON file): {exc}",
                                 param_hint="--head") from None
    return HeadSpec.from_dict(data, source)


def _network_source(source: str, head: HeadSpec | None
                    ) -> tuple[Any, HeadSpec | None, str | None]:
    """(arch, head, name) of ``fbnas latency``'s argument: a checkpoint brings its own arch
    def and its task's head (and is named by its file); a zoo name or arch file takes
    ``head`` (and its own name)."""
    if not is_checkpoint_path(source):
        return source, head, None
    state = read_checkpoint(source)
    weights = state.get("model_ema") or state.get("model") or {}
    if not isinstance(state.get("arch_def"), dict):
        raise CheckpointError(f"checkpoint {source!r} holds no arch def")
    return dict(state["arch_def"]), checkpoint_head(state, weights, source), Path(source).stem


def _open_table(out: Path, device: DeviceInfo, rounds: int) -> LatencyTable:
    if not out.exists():
        return LatencyTable(device, rounds=rounds)
    existing = LatencyTable.load(out, expect=device)
    differences = existing.device.differences(device)
    if differences:
        raise LatencyTableError(f"{out} was measured on another setup ({'; '.join(differences)})"
                                f"; write the new table to another --out")
    click.echo(f"continuing {out}: {len(existing)} entries already measured", err=True)
    return existing


JOINT_SPACE_NETWORKS = 32
"""Sampled candidates of a JointNAS space whose blocks a ``--space`` table measures (a
joint space has far too many to measure all; ``--model-sample`` prices the rest)."""


def _joint_space(name: str) -> Any:
    """The JointNAS space ``name`` (shipped name or file), or None for a DNAS space."""
    from fbnas.search.jointnas.space import JointSpaceError, load_joint_space

    if name in SPACES:
        return None
    try:
        return load_joint_space(name)
    except JointSpaceError:
        return None  # get_space names what is wrong with it


def _space_networks(space_name: str, resolution: int | None, batch: int, calibrate_on: int,
                    num_classes: int) -> tuple[list[ArchItems], list[ArchItems]]:
    """The networks (and the calibration ones) of a DNAS space, or of a JointNAS space
    (:data:`JOINT_SPACE_NETWORKS` sampled candidates at their own resolutions and the
    space's classes)."""
    joint = _joint_space(space_name)
    if joint is None:
        return space_networks(get_space(space_name), resolution, batch, calibrate_on,
                              num_classes)
    if resolution is not None:
        raise click.UsageError(f"--resolution: the candidates of the joint space "
                               f"{joint.name!r} have their own resolutions; leave it out")
    from fbnas.search.jointnas.cost import joint_networks

    networks = joint_networks(joint, JOINT_SPACE_NETWORKS, batch=batch)
    return networks, networks[:calibrate_on]


MODEL_SAMPLE_SPACE_NETWORKS = 64
"""Random networks of a space whose blocks (with the candidates') set the sample's ranges."""
ARCH_RANGE_WIDEN = 1.5
"""Without a space, the block ranges of the given networks are widened by this factor."""


def _model_sample(networks: list[ArchItems], n: int, ranges_file: Path | None, batch: int,
                  space_name: str | None, resolution: int | None) -> list[TableItem]:
    """The training blocks of a block latency model: ``n`` blocks spread over the ranges of
    ``ranges_file`` or else of the networks' blocks (for a space, also of random ones),
    with a share of heads over the ranges of the networks' heads (for a space, the head
    on the random networks' last widths too)."""
    if n == 0:
        return []
    if ranges_file is not None:
        try:
            data = read_json_or_yaml(ranges_file)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--model-ranges {ranges_file}: {exc}") from None
        if not isinstance(data, list) or not data:
            raise click.UsageError(f"--model-ranges {ranges_file}: a non-empty list of block "
                                   f"ranges expected")
        ranges: list[BlockRange | HeadRange] = [
            range_from_dict(r, f"{ranges_file}[{i}]") if isinstance(r, dict)
            else _bad_range(ranges_file, i) for i, r in enumerate(data)]
    else:
        sources = list(networks)
        joint = _joint_space(space_name) if space_name else None
        if joint is not None:
            from fbnas.search.jointnas.cost import joint_networks

            sources += joint_networks(joint, MODEL_SAMPLE_SPACE_NETWORKS, batch=batch,
                                      start=JOINT_SPACE_NETWORKS)
        elif space_name:
            space = get_space(space_name)
            rng = random.Random(0)
            head = next((a.head for a in networks if a.head is not None), None)
            sources += [arch_items(space.arch_def(space.sample(rng)), resolution, None, batch,
                                   name=f"{space.name}_range{i}", head=head)
                        for i in range(MODEL_SAMPLE_SPACE_NETWORKS)]
        # a space spans its own ranges; a few networks little, so widen theirs (a space's
        # heads all share one resolution and class count: widen those always)
        ranges = [*block_ranges(sources, widen=1.0 if space_name else ARCH_RANGE_WIDEN),
                  *head_ranges(sources, widen=ARCH_RANGE_WIDEN)]
    return sample_blocks(ranges, n, seed=0, batch=batch,
                         exclude={k for a in networks for k in a.keys})


def _bad_range(path: Path, index: int) -> BlockRange | HeadRange:
    raise click.UsageError(f"--model-ranges {path}[{index}]: a block range must be a mapping")


def _fit_and_save_model(table_: LatencyTable, table_path: Path) -> str:
    model = table_.fit_model()
    path = model_path(table_path)
    model.save(path)
    return (f"block latency model -> {path}: {model.candidate.name}, cross-validated error "
            f"{model.cv_errors[model.candidate.name]:.1%} on {len(model.blocks)} blocks")


def _model_options(command: Callable) -> Callable:
    command = click.option(
        "--model-ranges", type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Block ranges to sample the model's blocks from (JSON/YAML list of "
             "{op, in_hw, stride, in_channels, out_channels, numeric, options}, and for a "
             "head op {op, in_channels, in_h, in_w, numeric, options}); default: the "
             "ranges the networks' blocks and heads span.")(command)
    return click.option(
        "--model-sample", type=click.IntRange(min=0), default=0, show_default=True,
        help="Also time N blocks spread over the networks' block ranges (a Latin "
             "hypercube; a few percent of them heads) and fit a block latency model beside "
             "the table (TABLE.model.json) for the blocks and heads it lacks.")(command)


@click.group()
def lut() -> None:
    """Latency lookup tables: measured here (build) or on your device (export-blocks, import)."""


@lut.command("build")
@click.argument("more_archs", metavar="[ARCH]...", nargs=-1)
@click.option("--space", "space_name",
              help="Every candidate block of a search space (a name or a space file).")
@click.option("--arch", "archs", multiple=True,
              help="Zoo name or arch file (repeatable; --arch a.json b.json works too).")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True)
@click.option("--resolution", "-r", type=click.IntRange(min=1),
              help="Input size (default: the space's / each arch's native one).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved measurement rounds; each entry keeps its lowest median.")
@click.option("--method", type=click.Choice(["context", "isolated"]), default=None,
              help="Time blocks alone (default) or inside whole networks (torch only).")
@click.option("--calibrate-on", type=click.IntRange(min=0), default=5, show_default=True,
              help="Networks timed end to end among the blocks to fit the table's scale "
                   "and offset (0: none).")
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Classifier outputs (the head is part of every network's latency; use "
                   "your dataset's, e.g. 10 for digits).")
@click.option("--head", "head_text", metavar="JSON", help=HEAD_HELP + " With --arch only.")
@click.option("--normalise/--no-normalise", default=True, show_default=True,
              help="Store entries relative to a reference workload timed next to each "
                   "(speed-normalised), or as the lowest per-round median.")
@_model_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def lut_build(more_archs: tuple[str, ...], space_name: str | None, archs: tuple[str, ...],
              backend: str,
              resolution: int | None, threads: int, rounds: int, method: str | None,
              calibrate_on: int, num_classes: int, head_text: str | None, normalise: bool,
              model_sample: int, model_ranges: Path | None, out: Path) -> None:
    """Measures every distinct block once (resumes an existing --out), then calibrates.

    Blocks are keyed by op, options, width and input shape, the head by its op, options and
    input shape. The table is saved after every measurement, so an interrupted build
    continues where it stopped when re-run. Networks are zoo names or arch files, given with
    --arch or as arguments (a shell glob works).
    """
    archs = archs + more_archs
    if bool(space_name) == bool(archs):
        raise click.UsageError("give either --space or --arch (one or more)")
    head = parse_head(head_text, num_classes)
    if head is not None and space_name:
        raise click.UsageError("--head works with --arch; a --space table takes the "
                               "classifier of --num-classes")
    method = method or "isolated"
    settings = BuildSettings(backend=backend, threads=threads, rounds=rounds, method=method)
    device = DeviceInfo.current(backend, threads)
    table_ = _open_table(out, device, rounds)
    table_.normalise = normalise
    if space_name:
        networks, calibration = _space_networks(space_name, resolution, 1, calibrate_on,
                                                num_classes)
    else:
        networks = [_arch_items(a, resolution, num_classes, head) for a in archs]
        calibration = networks[:calibrate_on]
    sample = _model_sample(networks, model_sample, model_ranges, 1, space_name, resolution)
    click.echo(f"measuring {len({k for n in networks for k in n.keys})} distinct blocks"
               + (f" and {len(sample)} sampled for the block latency model" if sample else "")
               + f" on {device.cpu} ({backend}, {threads} thread(s), {method}, {rounds} "
                 f"rounds)", err=True)
    bar, update = progress_bar("blocks + calibration networks" if calibration else "blocks")
    try:
        measure_table(table_, networks, settings, out, update, calibration=calibration,
                      extra_items=sample)
    finally:
        bar.close()
    click.echo(f"wrote {out}: {len(table_)} entries, scale {table_.scale:.3f}")
    if model_sample:
        click.echo(_fit_and_save_model(table_, out))


def _arch_items(arch: Any, resolution: int | None, num_classes: int,
                head: HeadSpec | None, batch: int = 1, name: str | None = None) -> ArchItems:
    try:
        return arch_items(arch, resolution, num_classes if head is None else None, batch,
                          name, head=head)
    except ArchDefError as exc:
        if head is not None and exc.reason.startswith("head "):
            raise click.BadParameter(str(exc), param_hint="--head") from None
        raise


@lut.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--entries", is_flag=True, help="List every entry.")
def lut_show(path: Path, entries: bool) -> None:
    """Summarises a table: device, backend, entries, calibration."""
    table_ = LatencyTable.load(path)
    d = table_.device
    click.echo(f"{path}: {len(table_)} entries (ms), batch {table_.batch}, {d.backend} "
               f"backend, {d.threads} thread(s) on {d.cpu} ({d.cores} cores); torch "
               f"{d.torch}, onnxruntime {d.onnxruntime}")
    if table_.calibration:
        nets = table_.calibration.networks
        cal = table_.calibration
        loo = f", leave-one-out error {cal.loo_error:.1%}" if cal.loo_error is not None else ""
        click.echo(f"calibration: scale {table_.scale:.3f}, offset {cal.offset_ms:.2f} ms "
                   f"({cal.kind}{loo}) fitted on {len(nets)} network(s)")
        for n in nets:
            click.echo(f"  {n['name']}: sum {n['sum_ms']:.2f} ms, measured "
                       f"{n['measured_ms']:.2f} ms")
    if table_.model is not None:
        m = table_.model
        click.echo(f"block latency model {model_path(path)}: {m.candidate.name} on "
                   f"{len(m.blocks)} blocks, cross-validated error "
                   f"{m.cv_errors.get(m.candidate.name, float('nan')):.1%} ("
                   + ", ".join(f"{k} {v:.1%}" for k, v in m.cv_errors.items()) + ")")
    if entries:
        click.echo(table(["key", "ms", "spread", "runs"],
                         [[k, f"{table_.entry_ms(e):.4f}", f"{e.spread:.2f}", e.runs]
                          for k, e in sorted(table_.entries.items())],
                         align_right=[False, True, True, True]))


@lut.command("fit-model")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Model file (default: beside the table, TABLE.model.json).")
def lut_fit_model(path: Path, out: Path | None) -> None:
    """Fits a block latency model on a table's measured blocks: features of a block ->
    latency, the regressor chosen by cross-validated accuracy; it then answers the blocks
    the table lacks (fbnas latency, the searches)."""
    table_ = LatencyTable.load(path)
    model = table_.fit_model()
    out = out or model_path(path)
    model.save(out)
    click.echo(f"wrote {out}: {model.candidate.name} on {len(model.blocks)} blocks, "
               f"cross-validated error {model.cv_errors[model.candidate.name]:.1%} ("
               + ", ".join(f"{k} {v:.1%}" for k, v in model.cv_errors.items()) + ")")


@lut.command("export-blocks")
@click.argument("more_archs", metavar="[ARCH]...", nargs=-1)
@click.option("--space", "space_name",
              help="Every candidate block of a search space (a name or a space file).")
@click.option("--arch", "archs", multiple=True,
              help="Zoo name or arch file (repeatable; --arch a.json b.json works too).")
@click.option("--resolution", "-r", type=click.IntRange(min=1),
              help="Input size (default: the space's / each arch's native one).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--calibrate-on", type=click.IntRange(min=0), default=5, show_default=True,
              help="Whole networks also exported, to fit the table's scale (0: none).")
@click.option("--opset", type=click.IntRange(min=7), default=DEFAULT_OPSET, show_default=True)
@_model_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (new, empty, or an earlier export to replace).")
def lut_export_blocks(more_archs: tuple[str, ...], space_name: str | None,
                      archs: tuple[str, ...], resolution: int | None,
                      batch: int, calibrate_on: int, opset: int, model_sample: int,
                      model_ranges: Path | None, out: Path) -> None:
    """Writes every distinct block as ONNX, with a manifest and the runner, to time on
    another device.

    Copy --out to the device and run ``python runner.py . --out results.json`` there (it
    needs only onnxruntime and numpy); then ``fbnas lut import results.json --out lut.json``.
    """
    archs = archs + more_archs
    if bool(space_name) == bool(archs):
        raise click.UsageError("give either --space or --arch (one or more)")
    if space_name:
        networks, calibration = _space_networks(space_name, resolution, batch, calibrate_on,
                                                1000)
    else:
        networks = [arch_items(a, resolution, batch=batch) for a in archs]
        calibration = networks[:calibrate_on]
    sample = _model_sample(networks, model_sample, model_ranges, batch, space_name, resolution)
    bar, update = progress_bar("export")
    try:
        manifest = export_blocks(networks, out, space=space_name, calibration=calibration,
                                 opset=opset, progress=update, extra_items=sample)
    finally:
        bar.close()
    click.echo(f"wrote {out}: {len(manifest['blocks'])} blocks"
               + (f" ({len(sample)} sampled for a block latency model)" if sample else "")
               + ", "
               f"{len(manifest['networks'])} calibration network(s), manifest.json, "
               f"runner.py\nnext, on the device: python runner.py . --out results.json; "
               f"then: fbnas lut import results.json --out lut.json")


@lut.command("import")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Table to write; an existing table of the same device is extended.")
def lut_import(results: Path, out: Path) -> None:
    """Turns the runner's results.json (measured on your device) into a latency table."""
    imported = import_results(results)
    if out.exists():
        existing = LatencyTable.load(out, expect=imported.device)
        if existing.batch != imported.batch:
            raise LatencyTableError(f"{out} holds batch {existing.batch} entries, {results} "
                                    f"batch {imported.batch}; write to another --out")
        imported = existing.merge(imported)
        click.echo(f"extending {out} ({len(existing)} entries)", err=True)
    imported.save(out)
    d = imported.device
    click.echo(f"wrote {out}: {len(imported)} entries measured on {d.cpu} ({d.system}, "
               f"onnxruntime {d.onnxruntime}, {d.threads} thread(s)), scale "
               f"{imported.scale:.3f}")
    if results_model_sample(results):
        click.echo(_fit_and_save_model(imported, out))


@click.command()
@click.argument("archs", nargs=-1, required=True)
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True)
@click.option("--resolution", "-r", type=click.IntRange(min=1))
@click.option("--measure", "do_measure", is_flag=True,
              help="Also measure each network end to end on this machine (interleaved "
                   "rounds, as tables are built).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds of --measure.")
@click.option("--fill-missing", is_flag=True,
              help="Measure blocks the table lacks (in the network) and add them to it.")
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Classifier outputs of zoo names and arch files.")
@click.option("--head", "head_text", metavar="JSON", help=HEAD_HELP)
@click.option("--latency-model", "model_file",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Block latency model for the blocks the table lacks (default: "
                   "TABLE.model.json beside the table, when there is one).")
@click.option("--json", "as_json", is_flag=True)
def latency(archs: tuple[str, ...], lut_path: Path, resolution: int | None, do_measure: bool,
            rounds: int, fill_missing: bool, num_classes: int, head_text: str | None,
            model_file: Path | None, as_json: bool) -> None:
    """Predicted latency of zoo names, arch files or checkpoints from a table (and, with
    --measure, the measured one).

    A checkpoint (.pt/.pth of fbnas train) brings its arch def and its task's head; zoo
    names and arch files get the classifier of --num-classes, or --head. --measure times
    all networks in interleaved rounds in a new shuffled order each, with a reference
    workload next to every measurement, and reports each at the table's reference speed
    (comparable with its predictions) with the spread over rounds.
    """
    head = parse_head(head_text, num_classes)
    table_ = LatencyTable.load(lut_path, model=model_file)
    d = table_.device
    if (do_measure or fill_missing) and measured_by_runner(d):
        raise LatencyTableError(f"{lut_path} was measured on another device (imported from "
                                f"the runner): --measure and --fill-missing would time on "
                                f"this machine; export the missing blocks with 'fbnas lut "
                                f"export-blocks' and run the runner on that device")
    settings = BuildSettings(backend=d.backend, threads=d.threads,  # type: ignore[arg-type]
                             rounds=table_.rounds,
                             method="isolated")
    networks: list[ArchItems] = []
    for source in archs:
        arch, source_head, name = _network_source(source, head)
        items: ArchItems = _arch_items(arch, resolution, num_classes, source_head,
                                       table_.batch, name)
        if fill_missing and table_.unmeasured(items.keys):
            measure_table(table_, [items], settings, lut_path)
        networks.append(items)
    predictions = [table_.predict(items) for items in networks]
    timings: list[NetworkTiming | None] = [None] * len(networks)
    if do_measure:
        bar, update = progress_bar("measuring networks", leave=False)
        try:
            timings = list(measure_networks(
                networks, replace(settings, rounds=rounds, budget_s=1.0),
                table_.value_reference_ms(), update))
        finally:
            bar.close()
    records = [_latency_record(p, t) for p, t in zip(predictions, timings, strict=True)]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    click.echo(_latency_text(records, do_measure))
    reference = table_.value_reference_ms()
    click.echo(f"(table {lut_path}: {d.backend}, {d.threads} thread(s), scale "
               f"{table_.scale:.3f}"
               + (f"; measured at the table's reference speed ({reference:.3f} ms)"
                  if do_measure and reference else "") + ")")
    outside = [r["name"] for r in records if r["outside_calibration"]]
    if outside and table_.calibration:
        low, high = table_.calibration.range_ms or (0.0, 0.0)
        click.echo(f"note: {', '.join(outside)}: block sum outside the calibration networks' "
                   f"range ({low:.2f}-{high:.2f} ms); the calibration extrapolates")
    for r in records:
        if r["extrapolated"]:
            shown = "; ".join(r["extrapolated"][:3])
            more = f"; ... ({len(r['extrapolated'])} in all)" if len(r["extrapolated"]) > 3 \
                else ""
            click.echo(f"note: {r['name']}: the block latency model extrapolates for "
                       f"{len(r['extrapolated'])} of its {len(r['model_blocks'])} blocks "
                       f"(features outside its training ranges): {shown}{more}")


def _latency_record(prediction: Prediction, timing: NetworkTiming | None) -> dict:
    record = {"name": prediction.name, "resolution": prediction.resolution,
              "predicted_ms": round(prediction.predicted_ms, 4),
              "measured_ms": round(timing.ms, 4) if timing else None,
              "sum_ms": round(prediction.sum_ms, 4), "scale": prediction.scale,
              "offset_ms": prediction.offset_ms,
              "outside_calibration": prediction.outside_calibration,
              "blocks": len(prediction.block_ms),
              "model_blocks": list(prediction.model_blocks),
              "extrapolated": list(prediction.extrapolated)}
    if timing:
        record.update(measured_lowest_ms=round(timing.lowest_ms, 4),
                      measured_spread=round(timing.spread, 4),
                      measured_rounds_ms=[round(v, 4) for v in timing.rounds_ms],
                      measured_busy=timing.busy)
    return record


def _latency_text(records: list[dict], measured: bool) -> str:
    rows = []
    for r in records:
        row = [r["name"], r["resolution"], f"{r['predicted_ms']:.2f}",
               f"{len(r['model_blocks'])}/{r['blocks']}"]
        if measured:
            err = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] * 100
            row += [f"{r['measured_ms']:.2f}", f"±{r['measured_spread'] * 50:.1f}%",
                    f"{err:+.1f}%" + (" (busy)" if r["measured_busy"] else "")]
        rows.append(row)
    headers = ["arch", "res", "predicted ms", "from model"] + (["measured ms", "spread", "error"]
                                                 if measured else [])
    return table(headers, rows, align_right=[False] + [True] * (len(headers) - 1))
