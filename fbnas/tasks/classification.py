"""Image classification: a pooled 1x1-conv classifier, cross-entropy, top-k accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.arch.spec import HeadSpec
from fbnas.blocks.heads import classifier_head
from fbnas.data import AugmentConfig, ImageDatasets, open_datasets
from fbnas.errors import ConfigError, reject_unknown_keys
from fbnas.tasks.base import Objective, RecipeTerms


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy ``-sum(p_teacher * log_softmax(logits))``, batch mean.

    Equal to the KL divergence up to the teacher's entropy (a constant here, since the
    teacher is detached), so the gradients are those of KD with temperature 1 ([US]).
    """
    return torch.sum(-teacher_probs * F.log_softmax(logits, dim=-1), dim=-1).mean()


@dataclass(frozen=True)
class ClassificationTask:
    """Classification into ``num_classes`` integer labels.

    Attributes:
        num_classes: classifier outputs.
        topk: the top-k accuracies reported (``top1``, ``top5``); k is capped at the class
            count, so top-5 of a 3-class problem is top-3.
        score_name: the metric that picks the best checkpoint.
        percent: accuracies in % (the trainer's metrics lines) or, False, as fractions in
            [0, 1] (the DNAS search's ``metrics.jsonl``, whose format predates tasks); each
            is computed from the hit counts directly, not converted from the other.
    """

    num_classes: int
    topk: tuple[int, ...] = (1, 5)
    score_name: str = "top1"
    name: str = "classification"
    percent: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise ConfigError(f"classification: num_classes must be an int >= 1, got "
                              f"{self.num_classes!r}")
        topk = tuple(self.topk)
        if not topk or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                           for k in topk) or len(set(topk)) != len(topk):
            raise ConfigError(f"classification: topk must be distinct ints >= 1, got "
                              f"{self.topk!r}")
        object.__setattr__(self, "topk", tuple(sorted(topk)))
        if self.name != "classification":
            raise ConfigError(f"classification: name is 'classification', got {self.name!r}")
        if self.score_name not in self.metric_names:
            raise ConfigError(f"classification: score {self.score_name!r} is not one of "
                              f"{', '.join(self.metric_names)}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("loss", *(f"top{k}" for k in self.topk))

    @property
    def head_spec(self) -> HeadSpec:
        return classifier_head(self.num_classes)

    def objective(self, recipe: RecipeTerms) -> Objective:
        """Cross-entropy with the recipe's label smoothing; with mixup/CutMix, timm's
        ``Mixup`` makes soft targets (smoothing folded in) and the loss is soft-target CE."""
        if recipe.mixup > 0 or recipe.cutmix > 0:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                          label_smoothing=recipe.label_smoothing,
                          num_classes=self.num_classes)
            return Objective(SoftTargetCrossEntropy(), mixup)
        return Objective(nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def arch_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Soft-target cross-entropy against the teacher's softmax (:func:`distill_loss`)."""
        return distill_loss(outputs, teacher.softmax(dim=-1))

    def metric_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy and top-k hits of a batch: ``(1 + len(topk),)`` float64."""
        outputs = outputs.float()
        ks = [min(k, outputs.shape[1]) for k in self.topk]
        top = outputs.topk(max(ks), dim=1).indices  # (N, k)
        hits = top.eq(targets[:, None])
        sums = [F.cross_entropy(outputs, targets, reduction="sum")]
        sums += [hits[:, :k].any(dim=1).sum() for k in ks]
        return torch.stack([s.to(torch.float64) for s in sums])

    def metrics(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        """Mean loss and top-k accuracies (in % unless ``percent`` is off) over ``count``
        images."""
        values = sums.tolist()
        count = max(int(count), 1)
        scale = 100.0 if self.percent else 1.0
        out = {"loss": values[0] / count}
        out.update({f"top{k}": scale * v / count for k, v in zip(self.topk, values[1:],
                                                                 strict=True)})
        return out

    def score(self, metrics: dict[str, float]) -> float:
        return float(metrics[self.score_name])

    def open_datasets(self, spec: str, resolution: int | None = None,
                      augment: AugmentConfig | None = None) -> ImageDatasets:
        data = open_datasets(spec, resolution, augment)
        self.check_datasets(data)
        return data

    def check_datasets(self, data: Any) -> None:
        classes = getattr(data, "num_classes", None)
        if classes != self.num_classes:
            raise ConfigError(f"the task classifies {self.num_classes} classes, "
                              f"{getattr(data, 'spec', 'the data')} has {classes}")

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "num_classes": self.num_classes, "topk": list(self.topk),
               "score_name": self.score_name}
        if not self.percent:
            out["percent"] = False
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "task") -> ClassificationTask:
        """Inverse of :meth:`to_dict`; unknown keys are refused, naming ``source``."""
        reject_unknown_keys(data, cls, source)
        values = dict(data)
        if "topk" in values:
            values["topk"] = tuple(values["topk"])
        return cls(**values)

    @classmethod
    def for_data(cls, data: ImageDatasets, topk: Sequence[int] = (1, 5)
                 ) -> ClassificationTask:
        """The task of an opened dataset (its class count)."""
        return cls(data.num_classes, tuple(topk))
