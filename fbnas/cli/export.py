"""``fbnas export``: a zoo name, arch-def file or checkpoint to ONNX, checked by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import click

from fbnas.export import (
    calibrate_batchnorm,
    is_checkpoint_path,
    load_model_from_checkpoint,
    to_onnx,
)
from fbnas.zoo.model import FBNet, build_model

CALIBRATION_BATCH = 4
"""Random images per BN calibration step of an untrained model (train-mode BN needs >= 2)."""


def load_source(source: str, num_classes: int | None) -> tuple[FBNet, bool]:
    """Returns (model, trained): a checkpoint's trained model, or an untrained build.

    Raises:
        click.UsageError: ``--num-classes`` disagrees with a checkpoint's head.
    """
    if is_checkpoint_path(source):
        model = load_model_from_checkpoint(source)
        if num_classes is not None and num_classes != model.num_classes:
            raise click.UsageError(f"--num-classes {num_classes} does not match the "
                                   f"checkpoint's {head_text(model)}")
        return model, True
    return build_model(source, num_classes=num_classes or 1000), False


def head_text(model: FBNet) -> str:
    """``10 classes`` for a classifier, else the head's op and options."""
    if getattr(model, "num_points", None) is not None:  # a landmark network (PFLD's own head)
        return f"{model.num_points} landmarks"
    if model.num_classes is not None:
        return f"{model.num_classes} classes"
    if model.head_spec is None:
        return "features (no head)"
    return f"head {model.head_spec.op} {model.head_spec.options.to_dict()}"


@click.command()
@click.argument("source", metavar="NAME|ARCH_FILE|CHECKPOINT")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx file to write (plus OUT.data for models over 2 GB).")
@click.option("--resolution", "-r", type=click.IntRange(min=1),
              help="Input size (default: the model's native resolution).")
@click.option("--opset", type=click.IntRange(min=7), default=17, show_default=True,
              help="ONNX opset.")
@click.option("--num-classes", type=click.IntRange(min=1),
              help="Classifier outputs (default 1000; a checkpoint has its own).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size of the example input and of the timing (the exported batch "
                   "axis stays dynamic).")
def export(source: str, out: Path, resolution: int | None, opset: int,
           num_classes: int | None, batch: int) -> None:
    """Exports a model to ONNX and checks it against PyTorch with ONNX Runtime.

    NAME|ARCH_FILE|CHECKPOINT: a zoo name, an arch-def file (JSON/YAML) or a checkpoint
    (.pt/.pth: a dict with "arch_def" and "model", loaded weights-only; "model_ema" is used
    if present).
    BatchNorm is folded and MobileOne branches re-parameterised. A zoo name or arch file
    has untrained weights: their BN statistics are first calibrated on random inputs, so
    that the check compares input-dependent outputs rather than the head's bias.
    """
    model, trained = load_source(source, num_classes)
    resolution = resolution or model.resolution
    shape = (batch, 3, resolution, resolution)
    if not trained:
        calibrate_batchnorm(model, (max(batch, CALIBRATION_BATCH), 3, resolution, resolution))
    report = to_onnx(model, out, shape, opset=opset)
    weights = "trained weights" if trained else "untrained weights, BN calibrated on random inputs"
    click.echo(f"{model.name}: {head_text(model)} at {resolution}x{resolution} "
               f"({weights})")
    click.echo(f"{report.path}: opset {report.opset}, {report.size_text()}"
               f"{' (external data)' if report.external_data else ''}, input "
               f"{'x'.join(map(str, report.input_shape))} (batch dynamic)")
    click.echo(f"max |diff| ONNX Runtime vs PyTorch: {report.max_abs_diff:.2e} (relative "
               f"{report.max_rel_diff:.2e}; outputs vary by {report.output_spread:.2e} "
               f"across inputs)")
    click.echo(f"ONNX Runtime latency: {report.ort_latency_ms:.2f} ms at batch {batch} "
               f"(median, CPU)")
