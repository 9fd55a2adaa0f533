"""Landmark losses: PFLD's angle-weighted loss, plain L2 and Wing loss (ALGORITHMS.md §5.3).

All take ``pred`` and ``true`` as ``(N, P, 2)`` or ``(N, 2P)`` coordinates (fractions of
the crop) and return the batch mean, a scalar.

* :func:`pfld_loss` — NNI's form ``mean_n [Σ_k (1 − cos(θ̂_nk − θ_nk)) · ‖ŷ_n − y_n‖²]``, with
  PFLD's optional per-attribute class weights ω (off by default, as in NNI). Angles are in
  degrees (the list files' unit) and converted to radians before the cosine.
* :func:`l2_loss` — ``mean_n ‖ŷ_n − y_n‖²`` (sum over the 2P coordinates), the unweighted
  loss NNI's θ step uses.
* :func:`wing_loss` — Feng et al. 2018: ``w ln(1 + |x|/ε)`` for ``|x| < w``, else
  ``|x| − C`` with ``C = w − w ln(1 + w/ε)``, summed over coordinates; ``scale`` turns the
  fractions into pixels first (w = 10, ε = 2 are pixel values of a crop of ``scale`` px).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fbnas.errors import ConfigError


def _flat(points: torch.Tensor) -> torch.Tensor:
    return points.reshape(points.shape[0], -1)


def squared_distances(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``(N,)`` ‖ŷ_n − y_n‖², summed over every coordinate of a sample."""
    pred, true = _flat(pred), _flat(true)
    if pred.shape != true.shape:
        raise ValueError(f"predicted landmarks {tuple(pred.shape)} and true ones "
                         f"{tuple(true.shape)} differ in shape")
    return ((pred - true) ** 2).sum(dim=1)


def l2_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``mean_n ‖ŷ_n − y_n‖²``: the plain (unweighted) L2 loss."""
    return squared_distances(pred, true).mean()


def angle_weights(pred_angles: torch.Tensor, true_angles: torch.Tensor) -> torch.Tensor:
    """``(N,)`` Σ_k (1 − cos(θ̂_k − θ_k)) over yaw, pitch, roll given in degrees."""
    diff = torch.deg2rad(pred_angles - true_angles)
    return (1.0 - torch.cos(diff)).sum(dim=1)


def attribute_weights(attributes: torch.Tensor,
                      class_weights: Sequence[float] | torch.Tensor | str) -> torch.Tensor:
    """``(N,)`` PFLD's ω_n = Σ_c ω_c · a_nc, and 1 for a sample with no attribute flagged.

    ``class_weights`` is ω (one weight per attribute) or ``"batch"``: ω_c = 1 / (share of the
    batch flagged c), PFLD's inverse frequency, computed per batch as its code does (a class
    absent from the batch gets weight 0, it flags nothing).
    """
    attributes = attributes.float()
    if isinstance(class_weights, str):
        if class_weights != "batch":
            raise ConfigError(f"class_weights must be a list of numbers or 'batch', got "
                              f"{class_weights!r}")
        share = attributes.mean(dim=0)
        weights = torch.where(share > 0, 1.0 / share.clamp_min(1e-12),
                              torch.zeros_like(share))
    else:
        weights = torch.as_tensor(class_weights, dtype=attributes.dtype,
                                  device=attributes.device)
        if weights.shape != attributes.shape[1:]:
            raise ConfigError(f"class_weights has {weights.numel()} weights, the data "
                              f"{attributes.shape[1]} attributes")
    flagged = attributes.sum(dim=1) > 0
    return torch.where(flagged, (attributes * weights).sum(dim=1),
                       torch.ones_like(flagged, dtype=attributes.dtype))


def pfld_loss(pred: torch.Tensor, true: torch.Tensor, pred_angles: torch.Tensor,
              true_angles: torch.Tensor, attributes: torch.Tensor | None = None,
              class_weights: Sequence[float] | torch.Tensor | str | None = None
              ) -> torch.Tensor:
    """PFLD's angle-weighted loss, the batch mean (see the module docstring).

    ``pred_angles``/``true_angles``: ``(N, 3)`` degrees. With ``class_weights`` (and
    ``attributes``, ``(N, C)`` 0/1 flags) each sample is also weighted by
    :func:`attribute_weights`.
    """
    weight = angle_weights(pred_angles, true_angles)
    if class_weights is not None:
        if attributes is None:
            raise ConfigError("class_weights need the data's attribute flags")
        weight = weight * attribute_weights(attributes, class_weights)
    return (weight * squared_distances(pred, true)).mean()


def wing_loss(pred: torch.Tensor, true: torch.Tensor, width: float = 10.0,
              epsilon: float = 2.0, scale: float = 112.0) -> torch.Tensor:
    """Wing loss (Feng et al. 2018), summed over coordinates, the batch mean."""
    if width <= 0 or epsilon <= 0 or scale <= 0:
        raise ConfigError(f"wing loss needs width, epsilon and scale > 0, got {width}, "
                          f"{epsilon}, {scale}")
    x = (_flat(pred) - _flat(true)).abs() * scale
    c = width - width * math.log(1.0 + width / epsilon)
    loss = torch.where(x < width, width * torch.log1p(x / epsilon), x - c)
    return loss.sum(dim=1).mean()
