"""Pictures of a DMasking run: the width distribution per layer over epochs, and the cost.

* :func:`plot_width_heatmap` — per architecture group (a width dimension, a kernel, the
  resolution), the probability of each option over the epochs: a heatmap per group, the
  options on the y axis. Where the search hesitated and when it decided.
* the effective cost against the target: :func:`fbnas.search.dnas.report.plot_search_curves`
  (the same ``metrics.jsonl`` fields).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fbnas.search.dnas.report import plot_search_curves


def plot_width_heatmap(history: Sequence[Mapping[str, Any]],
                       groups: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Writes the heatmaps of ``history``'s probabilities (``metrics.jsonl`` records) for
    ``groups`` (``theta.json``'s ``groups``: kind, label, options); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(groups))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for g, group in enumerate(groups):
        ax = axes[g // cols][g % cols]
        k = len(group["options"])
        grid = [[r["probabilities"][g][i] for r in history] for i in range(k)]
        image = ax.imshow(grid, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
                          extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5, k - 0.5))
        ax.set_yticks(range(k))
        ax.set_yticklabels([str(o) for o in group["options"]], fontsize=6)
        ax.set_title(group["label"], fontsize=7)
        ax.set_xlabel("epoch", fontsize=7)
    for g in range(len(groups), rows * cols):
        axes[g // cols][g % cols].axis("off")
    fig.colorbar(image if groups else None, ax=axes, shrink=0.6, label="probability")
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


__all__ = ["plot_search_curves", "plot_width_heatmap"]
