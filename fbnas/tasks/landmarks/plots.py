"""Pictures of landmark results: CED curves and predicted vs true points on images."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from fbnas.tasks.landmarks.metrics import ced_curve

MAX_IMAGES = 16


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    from fbnas.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=100, bbox_inches="tight"))
    return path


def plot_ced(curves: dict[str, np.ndarray], path: str | os.PathLike,
             threshold: float = 0.1, norm: str = "nni") -> Path:
    """Writes the CED curves of several models to ``path`` (PNG or PDF) and returns it.

    ``curves`` maps a model's name to its per-image NMEs ``(N,)``; the legend shows each
    model's mean NME, and ``norm`` names the normalisation on the x axis.
    """
    if not curves:
        raise ValueError("plot_ced needs at least one curve")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, nmes in curves.items():
        errors = np.asarray(torch.as_tensor(nmes).double().reshape(-1).numpy())
        x, y = ced_curve(errors, threshold, steps=201)
        ax.plot(x, y, label=f"{name} (NME {100 * errors.mean():.2f}%)")
    ax.set_xlabel(f"NME ({norm} normalisation)")
    ax.set_ylabel("share of images")
    ax.set_xlim(0, threshold)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("cumulative error distribution")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_landmark_predictions(images: torch.Tensor, pred: torch.Tensor, true: torch.Tensor,
                              path: str | os.PathLike, titles: list[str] | None = None
                              ) -> Path:
    """Writes a grid of images with the true (green) and predicted (red) points, each pair
    joined by a line, to ``path``; returns it.

    ``images`` is ``(N, 3, H, W)`` in [0, 1]; ``pred`` and ``true`` are ``(N, P, 2)`` or
    ``(N, 2P)`` fractions of the crop. At most 16 images are drawn.
    """
    images = torch.as_tensor(images).detach().cpu().float()
    n = min(images.shape[0], MAX_IMAGES)
    if n == 0:
        raise ValueError("plot_landmark_predictions needs at least one image")
    pred = torch.as_tensor(pred).detach().cpu().float().reshape(images.shape[0], -1, 2)
    true = torch.as_tensor(true).detach().cpu().float().reshape(images.shape[0], -1, 2)
    plt = _pyplot()
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    height, width = images.shape[-2:]
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k].permute(1, 2, 0).clamp(0, 1).numpy(), extent=(0, width, height, 0))
        t, p = true[k].numpy() * (width, height), pred[k].numpy() * (width, height)
        for (tx, ty), (px, py) in zip(t, p, strict=True):
            ax.plot([tx, px], [ty, py], color="yellow", linewidth=0.5)
        ax.scatter(t[:, 0], t[:, 1], s=3, c="lime", label="true")
        ax.scatter(p[:, 0], p[:, 1], s=3, c="red", label="predicted")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        if titles is not None and k < len(titles):
            ax.set_title(titles[k], fontsize=8)
    axes.flat[0].legend(loc="upper left", fontsize=6, markerscale=2)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
