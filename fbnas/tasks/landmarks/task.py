"""The landmark task: PFLD-style regression of P (x, y) points (issue 18; ALGORITHMS.md §5).

What the trainer, the search engine, eval and export ask of it (:class:`fbnas.tasks.Task`):

* head: :func:`fbnas.tasks.landmarks.models.landmark_head` (2P outputs) for builder-made
  networks; PFLD builds its own (:meth:`LandmarkTask.build_model` builds either).
* loss (weight steps, training): the angle-weighted PFLD loss (``loss="pfld"``; optional
  per-attribute ``class_weights``), or plain ``l2`` / ``wing``. A network without the
  auxiliary angle net trains on the plain L2 loss.
* arch_loss (θ steps): the unweighted L2 loss, as NNI's search does (so the θ step never
  runs the auxiliary net).
* metrics: ``loss`` (mean L2), ``nme`` (normalised mean error, ``norm``: NNI's 106-point
  pair 35-93 by default, §5.3), ``failure_rate`` (share of images with NME > ``threshold``)
  and ``auc`` (area under the CED curve up to ``threshold``, normalised to 1), all as sums
  over a batch; NME, failure rate and AUC in % when ``percent``. AUC is exact from the
  sums: ∫₀ᵀ CED(x) dx / T = mean_n max(0, 1 − NME_n / T).
* score: −NME (lower error is better).
* datasets: ``open_landmark_datasets`` of a folder holding ``train_data/`` and ``test_data/``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fbnas.arch.spec import HeadSpec
from fbnas.errors import ConfigError, reject_unknown_keys
from fbnas.tasks.base import Objective, RecipeTerms
from fbnas.tasks.landmarks.losses import l2_loss, pfld_loss, squared_distances, wing_loss
from fbnas.tasks.landmarks.models import (
    LandmarkOutputs,
    build_landmark_model,
    landmark_head,
    landmark_points,
)

logger = logging.getLogger(__name__)

LossKind = Literal["pfld", "l2", "wing"]
Norm = Literal["nni", "inter_pupil", "box"]
TASK_NAME = "landmarks"


@dataclass(frozen=True)
class LandmarkData:
    """The opened train/val landmark datasets (what the trainer and the engine read)."""

    train: Any
    val: Any
    spec: str
    resolution: int
    num_points: int
    num_classes: None = None


@dataclass(frozen=True)
class LandmarkTask:
    """Regression of ``num_points`` landmarks (see the module docstring)."""

    num_points: int = 106
    loss_kind: LossKind = "pfld"
    class_weights: tuple[float, ...] | str | None = None
    norm: Norm = "nni"
    threshold: float = 0.1
    percent: bool = True
    skip_bad_lines: bool = False
    name: str = TASK_NAME
    metric_names: tuple[str, ...] = ("loss", "nme", "failure_rate", "auc")
    score_name: str = "nme"

    def __post_init__(self) -> None:
        if isinstance(self.num_points, bool) or not isinstance(self.num_points, int) \
                or self.num_points < 1:
            raise ConfigError(f"landmarks: num_points must be an int >= 1, got "
                              f"{self.num_points!r}")
        if self.loss_kind not in ("pfld", "l2", "wing"):
            raise ConfigError(f"landmarks: loss_kind must be pfld, l2 or wing, got "
                              f"{self.loss_kind!r}")
        if self.norm not in ("nni", "inter_pupil", "box"):
            raise ConfigError(f"landmarks: norm must be nni, inter_pupil or box, got "
                              f"{self.norm!r}")
        if isinstance(self.class_weights, list):
            object.__setattr__(self, "class_weights", tuple(self.class_weights))
        if isinstance(self.class_weights, str) and self.class_weights != "batch":
            raise ConfigError(f"landmarks: class_weights must be numbers or 'batch', got "
                              f"{self.class_weights!r}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"landmarks: threshold must be in (0, 1], got {self.threshold}")
        if self.name != TASK_NAME:
            raise ConfigError(f"landmarks: name is {TASK_NAME!r}, got {self.name!r}")
        if tuple(self.metric_names) != ("loss", "nme", "failure_rate", "auc") or \
                self.score_name != "nme":
            raise ConfigError("landmarks: metric_names and score_name are fixed")

    # ------------------------------------------------------------------ model

    @property
    def head_spec(self) -> HeadSpec:
        return landmark_head(self.num_points)

    def build_model(self, source: Any, width_ratio: float = 1.0) -> nn.Module:
        """A landmark network (``pfld``, ``mbv3_pfld``, an architecture file or dict)."""
        return build_landmark_model(source, self.num_points, width_ratio)

    # ------------------------------------------------------------------ losses

    def objective(self, recipe: RecipeTerms) -> Objective:
        """The task loss; mixing and label smoothing are classification's and refused."""
        for term in ("label_smoothing", "mixup", "cutmix"):
            if getattr(recipe, term) > 0:
                raise ConfigError(f"the landmark task has no {term}: set {term}=0 (the "
                                  f"'landmarks' recipe does)")
        return Objective(self.loss)

    def _targets(self, outputs: Any, targets: Mapping[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        points = landmark_points(outputs)
        true = targets["points"].reshape(points.shape[0], -1).to(points.dtype)
        if true.shape[1] != points.shape[1]:
            raise ConfigError(f"the network predicts {points.shape[1] // 2} landmarks, the "
                              f"data has {true.shape[1] // 2}")
        return points, true

    def loss(self, outputs: Any, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        points, true = self._targets(outputs, targets)
        if self.loss_kind == "wing":
            return wing_loss(points, true)
        if self.loss_kind == "l2" or not isinstance(outputs, LandmarkOutputs):
            return l2_loss(points, true)
        attributes = targets.get("attributes") if self.class_weights is not None else None
        return pfld_loss(points, true, outputs.angles(), targets["angles"].to(points.dtype),
                         attributes, self.class_weights)

    def arch_loss(self, outputs: Any, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The unweighted L2 loss (NNI's θ step): the auxiliary net does not run."""
        points, true = self._targets(outputs, targets)
        return l2_loss(points, true)

    def distill_loss(self, outputs: Any, teacher: torch.Tensor) -> torch.Tensor:
        return l2_loss(landmark_points(outputs), landmark_points(teacher).detach())

    # ------------------------------------------------------------------ metrics

    def layout(self) -> Any:
        from fbnas.tasks.landmarks.layout import load_layout

        return load_layout(self.num_points)

    def image_nmes(self, outputs: Any, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(N,)`` the NME of every image (fractions, ``norm``'s normalisation)."""
        from fbnas.tasks.landmarks.metrics import nme

        points, true = self._targets(outputs, targets)
        n = points.shape[0]
        return nme(points.float().reshape(n, -1, 2), true.float().reshape(n, -1, 2),
                   self.layout(), norm=self.norm)

    def metric_sums(self, outputs: Any, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Summed L2 loss, NME, failures and per-image AUC terms: ``(4,)`` float64."""
        points, true = self._targets(outputs, targets)
        nmes = self.image_nmes(outputs, targets).to(torch.float64)
        # A NaN NME (a diverged network) is a failure with no AUC, as lmdata's metrics say.
        failed = ~(nmes <= self.threshold)
        area = torch.where(failed, torch.zeros_like(nmes), 1.0 - nmes / self.threshold)
        sums = [squared_distances(points.float(), true.float()).sum().to(torch.float64),
                nmes.sum(), failed.sum().to(torch.float64), area.sum()]
        return torch.stack(sums)

    def metrics(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        values = sums.tolist()
        count = max(int(count), 1)
        scale = 100.0 if self.percent else 1.0
        return {"loss": values[0] / count, "nme": scale * values[1] / count,
                "failure_rate": scale * values[2] / count, "auc": scale * values[3] / count}

    def score(self, metrics: dict[str, float]) -> float:
        return -float(metrics["nme"])

    # ------------------------------------------------------------------ data

    def open_datasets(self, spec: str, resolution: int | None = None,
                      augment: Any = None) -> LandmarkData:
        """The ``train_data``/``test_data`` sets of the folder ``spec`` (``landmarks:DIR``
        or ``DIR``). ``augment``: a ``LandmarkAugment`` (a classification
        ``AugmentConfig`` is refused where it asks for something: its crops and flips do
        not move the landmarks)."""
        from fbnas.tasks.landmarks.data import open_landmark_datasets

        root = spec[len("landmarks:"):] if spec.startswith("landmarks:") else spec
        if augment is not None and type(augment).__name__ == "AugmentConfig":
            if augment.random_crop or augment.hflip or augment.randaugment:
                raise ConfigError("the recipe's augmentation (random_crop, hflip, randaugment) "
                                  "does not move landmarks: turn it off (the 'landmarks' "
                                  "recipe does)")
            augment = None
        resolution = resolution or 112
        if not Path(root).is_dir():
            raise ConfigError(f"landmark data {root!r}: no such folder (it holds "
                              f"train_data/ and test_data/; make one with fbnas data "
                              f"make-landmarks)")
        train, val = open_landmark_datasets(root, num_points=self.num_points,
                                            resolution=resolution, augment=augment,
                                            skip_bad_lines=self.skip_bad_lines)
        data = LandmarkData(train, val, spec, resolution, self.num_points)
        self.check_datasets(data)
        return data

    def check_datasets(self, data: Any) -> None:
        points = getattr(data, "num_points", None)
        if points != self.num_points:
            raise ConfigError(f"the task regresses {self.num_points} landmarks, "
                              f"{getattr(data, 'spec', 'the data')} has {points}")

    # ------------------------------------------------------------------ records

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "num_points": self.num_points,
                               "loss_kind": self.loss_kind, "norm": self.norm,
                               "threshold": self.threshold}
        if self.class_weights is not None:
            out["class_weights"] = (self.class_weights if isinstance(self.class_weights, str)
                                    else list(self.class_weights))
        if not self.percent:
            out["percent"] = False
        if self.skip_bad_lines:
            out["skip_bad_lines"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "task") -> LandmarkTask:
        """Inverse of :meth:`to_dict`; unknown keys are refused, naming ``source``."""
        reject_unknown_keys(data, cls, source)
        return cls(**dict(data))
