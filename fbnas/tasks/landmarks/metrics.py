"""Landmark accuracy: NME with a stated normalisation, failure rate, AUC and the CED curve.

NME (normalised mean error) of one image is the mean Euclidean distance between predicted
and true points, divided by a face-size distance ``d`` taken from the *true* points:

    NME = (1 / P) * sum_i ||p_hat_i - p_i||_2 / d

Which ``d`` matters: numbers normalised differently are not comparable. ``norm`` selects it:

- ``"nni"`` (default): ``d = ||p[a] - p[b]||`` for the layout's ``nme_pair`` ``(a, b)``,
  ``(35, 93)`` for 106 points. This is what NNI's PFLD example (``lib/utils.py``
  ``compute_nme``, ALGORITHMS.md §5.3) computes, so fbnas's numbers compare with seed 004's
  table (6.22 % / 5.58 %). NNI's comment calls the pair the distance between the eyes; what
  the two indices are depends on the data's layout (``layouts/106.json`` says).
- ``"inter_pupil"``: ``d = ||p[left_pupil] - p[right_pupil]||``.
- ``"box"``: ``d = sqrt(W * H)`` of the true points' bounding box: the normalisation of the
  106-point challenges (stated on the evaluation page of the 2nd one, FLLC at ICPR 2020,
  https://fllc-icpr2020.github.io/evaluation/, which reports AUC and failures at 0.08).

A true face whose ``d`` is 0 (all points on one spot) gets NME ``inf``, not a division error;
the summaries count an ``inf`` or NaN NME (a diverged network) as a failure with no AUC.

Failure rate at ``t``: the share of images with NME > ``t``. AUC at ``t``: the area under
the CED curve (share of images with NME <= x, for x in [0, t]) divided by ``t``, computed
exactly; NNI integrates the same curve with Simpson's rule on a 1e-4 grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from fbnas.tasks.landmarks.layout import LandmarkLayout

NmeNorm = Literal["nni", "inter_pupil", "box"]
NME_NORMS: tuple[str, ...] = ("nni", "inter_pupil", "box")


def _as_points(x: torch.Tensor | np.ndarray, num_points: int, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, torch.Tensor) else x
    if x.dim() == 2 and x.shape[1] == 2 * num_points:
        x = x.reshape(x.shape[0], num_points, 2)
    if x.dim() != 3 or x.shape[1:] != (num_points, 2):
        raise ValueError(f"{name} must be (N, {num_points}, 2) or (N, {2 * num_points}), got "
                         f"{tuple(x.shape)}")
    return x


def normalising_distance(true: torch.Tensor, layout: LandmarkLayout,
                         norm: NmeNorm = "nni") -> torch.Tensor:
    """The per-image distance ``d`` ``(N,)`` that ``norm`` divides by (module docstring)."""
    true = _as_points(true, layout.num_points, "true")
    if norm == "nni":
        a, b = layout.nme_pair
        return (true[:, a] - true[:, b]).norm(dim=-1)
    if norm == "inter_pupil":
        return (true[:, layout.left_pupil] - true[:, layout.right_pupil]).norm(dim=-1)
    if norm == "box":
        size = true.amax(dim=1) - true.amin(dim=1)  # (N, 2): W, H
        return (size[:, 0] * size[:, 1]).clamp_min(0).sqrt()
    raise ValueError(f"unknown NME normalisation {norm!r}; use one of {', '.join(NME_NORMS)}")


def nme(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray,
        layout: LandmarkLayout, norm: NmeNorm = "nni") -> torch.Tensor:
    """Per-image NME ``(N,)`` of ``pred`` against ``true`` (both ``(N, P, 2)`` or
    ``(N, 2P)``, in the same units), normalised as ``norm`` says (module docstring)."""
    pred = _as_points(pred, layout.num_points, "pred")
    true = _as_points(true, layout.num_points, "true")
    if pred.shape != true.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and true {tuple(true.shape)} differ")
    error = (pred.to(true.dtype) - true).norm(dim=-1).mean(dim=1)
    d = normalising_distance(true, layout, norm)
    return torch.where(d > 0, error / d.clamp_min(torch.finfo(d.dtype).tiny),
                       torch.full_like(error, float("inf")))


def _errors(nmes: torch.Tensor | np.ndarray) -> np.ndarray:
    errors = np.asarray(torch.as_tensor(nmes).detach().cpu().double().reshape(-1).numpy())
    if errors.size == 0:
        raise ValueError("no NME values (an empty evaluation set)")
    # A NaN NME (a diverged network) is a failure, not a pass: NaN > t is False.
    return np.where(np.isnan(errors), np.inf, errors)


def failure_rate(nmes: torch.Tensor | np.ndarray, threshold: float = 0.1) -> float:
    """The share of images whose NME exceeds ``threshold``."""
    return float((_errors(nmes) > threshold).mean())


def auc(nmes: torch.Tensor | np.ndarray, threshold: float = 0.1) -> float:
    """The area under the CED curve on ``[0, threshold]``, divided by ``threshold`` (1 when
    every NME is 0, 0 when every NME is >= ``threshold``); exact, not sampled."""
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    errors = _errors(nmes)
    # The CED is a step function: image i counts from x = e_i on, adding (t - e_i) / t.
    return float(np.clip(1.0 - errors / threshold, 0.0, None).mean())


def ced_curve(nmes: torch.Tensor | np.ndarray, threshold: float = 0.1, steps: int = 101
              ) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative error distribution: ``x`` (``steps`` values from 0 to ``threshold``)
    and the share of images with NME <= x."""
    errors = np.sort(_errors(nmes))
    x = np.linspace(0.0, threshold, steps)
    return x, np.searchsorted(errors, x, side="right") / errors.size


def summarise(nmes: torch.Tensor | np.ndarray, threshold: float = 0.1) -> dict[str, float]:
    """``{"nme", "failure_rate", "auc"}``: the mean NME and the two rates at ``threshold``."""
    errors = _errors(nmes)
    return {"nme": float(errors.mean()), "failure_rate": failure_rate(errors, threshold),
            "auc": auc(errors, threshold)}
