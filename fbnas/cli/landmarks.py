"""The landmark parts of ``fbnas train``/``eval``/``search dnas`` (issue 18), kept apart so
the classification commands stay as they were: weights, the CED curve, the PFLD search,
fine-tuning from its supernet."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from fbnas.cli.format import human, table
from fbnas.tasks.landmarks.task import LandmarkTask
from fbnas.train.distributed import DistContext, barrier
from fbnas.zoo.checkpoint import CheckpointError


def load_weights(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Loads a landmark network's weights by name; a mismatch names the first keys."""
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not fit the architecture: "
                              f"{str(exc).splitlines()[0]} ...") from None


@torch.no_grad()
def image_nmes(model: nn.Module, loader: Any, task: LandmarkTask,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """``(N,)`` the NME of every image of ``loader`` (fractions), the model in eval mode."""
    model.eval().to(device)
    out = []
    for images, targets in loader:
        points = model(images.to(device))
        out.append(task.image_nmes(points.cpu(), {k: v for k, v in targets.items()}))
    return torch.cat(out)


def write_ced(source: Any, task: LandmarkTask, weights: Mapping[str, Mapping[str, Any]],
              width: float, loader: Any, device: torch.device, path: Path) -> Path:
    """The CED curves of a checkpoint's weights (``model`` and ``model_ema``) to ``path``."""
    from fbnas.tasks.landmarks.plots import plot_ced

    curves = {}
    for key, state in weights.items():
        model = task.build_model(source, width)
        load_weights(model, state)
        curves[key] = image_nmes(model, loader, task, device).numpy()
    return plot_ced(curves, path, task.threshold, task.norm)


def init_from_pfld_supernet(model: nn.Module, run: Path) -> str:
    """Loads into a PFLD network the weights its blocks (and PFLD's fixed parts and
    auxiliary net) had in the supernet of the search ``run`` (``RUN/last.pt``)."""
    from fbnas.search.dnas.pfld import PFLDSupernet, pfld_layer_costs, pfld_subnet_state_dict
    from fbnas.tasks.landmarks.models import PFLDNet
    from fbnas.train.checkpoint import read_checkpoint

    if not isinstance(model, PFLDNet):
        raise click.UsageError("--init-from-supernet of a landmark search needs a PFLD "
                               "architecture (RUN/arch.json)")
    path = Path(run) / "last.pt"
    state = read_checkpoint(path)
    if "supernet" not in state:
        raise CheckpointError(f"{path} is not a search checkpoint (no 'supernet')")
    supernet = PFLDSupernet(pfld_layer_costs("params"), model.num_points)
    try:
        supernet.load_state_dict(state["supernet"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} is no PFLD supernet: {str(exc).splitlines()[0]}"
                              ) from None
    load_weights(model, pfld_subnet_state_dict(supernet, model.choice))
    return (f"started from the supernet's weights after {int(state['epoch']) + 1} search "
            f"epochs, path {' '.join(model.layer_names)}")


def ensure_pfld_table(lut_path: Path | None, out: Path, threads: int,
                      context: DistContext) -> Any:
    """The given latency table, or one measured now (rank 0) into ``out/pfld_lut.json``."""
    from fbnas.cost.lut import LatencyTable
    from fbnas.search.dnas.pfld import build_pfld_table

    if lut_path is not None:
        return LatencyTable.load(lut_path)
    path = out / "pfld_lut.json"
    if context.is_main and not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        click.echo(f"timing PFLD's candidates and fixed parts into {path} ...", err=True)
        build_pfld_table(path, threads=threads)
    barrier(context)
    return LatencyTable.load(path)


def search_landmarks(data_spec: str, config: Any, out: Path, lut_path: Path | None,
                     threads: int, resume: bool, context: DistContext,
                     progress: Any = None) -> None:
    """``fbnas search dnas --task landmarks``: the PFLD supernet on a landmark set
    (``progress``: the search command's bar, closed here)."""
    from fbnas.search.dnas.pfld import run_pfld_search

    table_ = (ensure_pfld_table(lut_path, out, threads, context)
              if config.cost == "latency" or lut_path is not None else None)
    try:
        result = run_pfld_search(data_spec, config, out, LandmarkTask(), table_, resume,
                                 progress, context)
    finally:
        if progress is not None:
            progress.close()
    if not context.is_main:
        return
    last = result.history[-1]
    click.echo(f"searched {config.epochs} epochs: val NME of the argmax path "
               f"{last['val_nme']:.2f} %, theta entropy {last['entropy']:.2f}, expected cost "
               f"{human(last['expected_cost'])} {result.cost_unit}")
    rows = [[i, name] for i, name in enumerate(result.choice_names)]
    click.echo(table(["layer", "derived block"], rows, align_right=[True, False]))
    record = json.loads((out / "arch.json").read_text())
    extra = f", predicted {record['predicted_ms']:.2f} ms" if "predicted_ms" in record else ""
    click.echo(f"\n{out / 'arch.json'}: {human(record['params'])} params, "
               f"{human(record['macs'])} MACs{extra}; fine-tune it with fbnas train "
               f"{out / 'arch.json'} --task landmarks --init-from-supernet {out} ...")
