"""Pictures and tables of a DNAS run: what θ did, what it cost, what came out.

Reads only the run folder (``metrics.jsonl``, ``theta.json``), so it works on a finished,
a resumed or a still running search, and on runs copied from another machine:

* :func:`plot_theta` — per searchable layer, the probability of every candidate over the
  epochs (a heatmap per layer): where the search hesitated and when it decided.
* :func:`plot_search_curves` — expected and argmax cost against the target, accuracy of the
  argmax path, τ and θ entropy per epoch.
* :func:`architecture_rows` — the derived network block by block: width, stride, params,
  MACs, the table's latency and the latency measured now.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbnas.arch.unify import unify_arch_def
from fbnas.errors import FbnasError


class RunFolderError(FbnasError, ValueError):
    """A run folder lacks what a report needs (names the file)."""


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``run_dir/metrics.jsonl`` (the last record per epoch wins,
    so a resumed run that rewrote an epoch is read once)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{path} does not exist: not a search run folder")
    by_epoch: dict[int, dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RunFolderError(f"{path}, line {number}: not a metrics record") from None
    if not by_epoch:
        raise RunFolderError(f"{path} holds no epoch yet")
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_candidates(run_dir: str | Path) -> list[list[str]]:
    """Candidate names per searchable layer, from ``run_dir/theta.json``."""
    path = Path(run_dir) / "theta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["candidates"]
    except FileNotFoundError:
        raise RunFolderError(f"{path} does not exist: not a search run folder") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RunFolderError(f"{path} is not a theta file") from None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_theta(history: Sequence[Mapping[str, Any]], candidates: Sequence[Sequence[str]],
               path: str | Path, derived: Sequence[int] | None = None) -> Path:
    """Heatmaps of P(candidate) over epochs, one panel per searchable layer.

    The derived candidate of each layer is marked (``derived``: the run's choices, which
    with a target can differ from the final argmax; default: the argmax), the argmax too
    where it differs, and warm-up epochs (θ frozen) are shaded, so a reader sees at once
    which layers decided and when.
    """
    import numpy as np

    plt = _pyplot()
    probs = np.array([r["probabilities"] for r in history])  # (epochs, layers, K)
    epochs = [r["epoch"] for r in history]
    warmup = sum(r.get("phase") == "warm-up" for r in history)
    n_layers = probs.shape[1]
    cols = min(4, n_layers)
    rows = math.ceil(n_layers / cols)
    # Candidate names label the first column only when every layer has the same ones;
    # otherwise each panel keeps its own labels and the panels move apart to fit them.
    shared = all(list(c) == list(candidates[0]) for c in candidates)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows + 0.6),
                             squeeze=False, sharex=True,
                             gridspec_kw={"wspace": 0.12 if shared else 0.7})
    image = None
    for layer in range(n_layers):
        ax = axes[layer // cols][layer % cols]
        names = list(candidates[layer])
        grid = probs[:, layer, : len(names)].T  # (K, epochs)
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                          origin="upper", interpolation="nearest",
                          extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(names) - 0.5, -0.5))
        argmax = int(np.argmax(grid[:, -1]))
        chosen = int(derived[layer]) if derived is not None else argmax
        ax.set_yticks(range(len(names)))
        if shared and layer % cols:
            ax.set_yticklabels([])
        else:
            ax.set_yticklabels(names, fontsize=6.5)
        right = epochs[-1] + 0.5
        ax.plot([right], [chosen], marker="<", color="red", markersize=7, clip_on=False)
        if argmax != chosen:
            ax.plot([right], [argmax], marker="<", markerfacecolor="none", color="white",
                    markersize=7, markeredgewidth=1.5, clip_on=False)
        if warmup:
            ax.axvspan(epochs[0] - 0.5, epochs[0] - 0.5 + warmup, color="white", alpha=0.25,
                       hatch="//", lw=0)
        title = f"layer {layer}: {names[chosen]} (p={grid[chosen, -1]:.2f})"
        if argmax != chosen:
            title += f"\nargmax {names[argmax]} (p={grid[argmax, -1]:.2f})"
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for extra in range(n_layers, rows * cols):
        axes[extra // cols][extra % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
        _integer_epochs(ax)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="P(candidate)")
    fig.suptitle("θ per layer over epochs (softmax; hatched = warm-up; red ◀ = derived, "
                 "open ◀ = argmax where it differs)", fontsize=10)
    out = Path(path)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_search_curves(history: Sequence[Mapping[str, Any]], path: str | Path,
                       target: float | None = None,
                       train_history: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Cost (expected and argmax, with the target), accuracy, τ and entropy per epoch; with
    ``train_history`` (the derived network's training metrics) a panel for that too."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    unit = history[-1].get("cost_unit", "")
    panels = 3 if train_history else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4))
    ax = axes[0]
    ax.plot(epochs, [r["expected_cost"] for r in history], "o-", label="expected (softmax θ)")
    ax.plot(epochs, [r["argmax_cost"] for r in history], "s--", label="argmax architecture")
    if target is not None:
        ax.axhline(target, color="k", lw=1, label=f"target {target:.4g} {unit}")
        ax.axhspan(0.85 * target, 1.15 * target, color="grey", alpha=0.15, label="±15 %")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"cost ({unit})")
    ax.set_title("predicted cost of the searched network")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.plot(epochs, [100 * r["train_top1"] for r in history], "o-", label="train (weight split)")
    ax.plot(epochs, [100 * r["val_top1"] for r in history], "s-", label="val, argmax path")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(epochs, [r["tau"] for r in history], ":", color="tab:red", label="τ")
    twin.plot(epochs, [r["entropy"] for r in history], "-.", color="tab:purple",
              label="θ entropy (nats)")
    twin.set_ylabel("τ, entropy")
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
    ax.set_title("supernet accuracy and annealing")

    if train_history:
        ax = axes[2]
        t_epochs = [r["epoch"] for r in train_history]
        # the trainer's metrics are percentages already
        for key, label in (("val_top1", "val top-1"), ("val_ema_top1", "val top-1, EMA")):
            values = [r.get(key) for r in train_history]
            if any(v is not None for v in values):
                ax.plot(t_epochs, [v if v is not None else math.nan for v in values],
                        "o-", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ax.set_title("derived network, trained")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes:
        _integer_epochs(ax)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _integer_epochs(ax) -> None:
    """Epoch axes tick whole epochs only (a 2-epoch run otherwise reads 0.5, 1.2 ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


@dataclass(frozen=True)
class BlockRow:
    """One block of a derived network, with its cost from every source."""

    name: str
    op: str
    options: str
    out_channels: int
    stride: int
    params: int
    macs: int
    table_ms: float | None
    measured_ms: float | None


def architecture_rows(arch_def: Mapping[str, Any], resolution: int, num_classes: int,
                      table=None, measure_blocks: bool = True,
                      threads: int = 1) -> list[BlockRow]:
    """The blocks (and head) of ``arch_def`` with params, MACs, the latency table's entry
    (``table``; None without one) and, with ``measure_blocks``, each block timed alone now
    (the way the table's entries are measured, so the two columns compare like for like).
    """
    from fbnas.blocks.heads import classifier_head
    from fbnas.builder import FBNetBuilder
    from fbnas.cost.latency import measure
    from fbnas.cost.lut import arch_items

    spec = unify_arch_def(dict(arch_def))
    builder = FBNetBuilder()
    builder.add_basic_args(spec.basic_args)
    traces = builder.trace(spec, resolution=resolution)
    items = arch_items(spec, resolution, num_classes)
    rows = []
    for index, item in enumerate(items.items):
        if index < len(traces):
            trace = traces[index]
            name, op, out, stride = (trace.name, trace.spec.op, trace.out_channels,
                                      trace.spec.stride)
            params, macs = trace.cost.params, trace.cost.macs
            options = ", ".join(f"{k}={v}" for k, v in trace.spec.kwargs.to_dict().items())
        else:  # the classifier head
            last = traces[-1]
            head = builder.trace_head(classifier_head(num_classes), last.out_channels,
                                      last.out_hw)
            name, op, out, stride = "head", "pool + conv_k1", num_classes, 1
            params, macs = head.cost.params, head.cost.macs
            options = ""
        table_ms = table.lookup(item.key) if table is not None and item.key in table else None
        measured = (measure(item.build().eval(), item.input_shape, threads=threads,
                            budget_s=0.2).median_ms if measure_blocks else None)
        rows.append(BlockRow(name, op, options, out, stride, int(params), int(macs), table_ms,
                             measured))
    return rows


def rows_markdown(rows: Sequence[BlockRow]) -> str:
    """A Markdown table of :func:`architecture_rows`, with a totals line."""

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = ["| block | op | options | out | stride | params | MACs | table ms | measured ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.op} | {r.options} | {r.out_channels} | {r.stride} | "
                     f"{r.params:,} | {r.macs:,} | {ms(r.table_ms)} | {ms(r.measured_ms)} |")
    table_total = (sum(r.table_ms for r in rows)
                   if all(r.table_ms is not None for r in rows) else None)
    measured_total = (sum(r.measured_ms for r in rows)
                      if all(r.measured_ms is not None for r in rows) else None)
    lines.append(f"| **sum** | | | | | {sum(r.params for r in rows):,} | "
                 f"{sum(r.macs for r in rows):,} | {ms(table_total)} | {ms(measured_total)} |")
    return "\n".join(lines)
