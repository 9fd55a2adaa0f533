"""Image classification: a pooled 1x1-conv classifier, cross-entropy, top-k accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.data import ImageDatasets, open_datasets
from fbnas.errors import ConfigError
from fbnas.zoo.model import ClsConvHead


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
        if self.num_classes < 1:
            raise ConfigError(f"classification: num_classes must be >= 1, got "
                              f"{self.num_classes}")
        if not self.topk or any(k < 1 for k in self.topk) or len(set(self.topk)) != len(
                self.topk):
            raise ConfigError(f"classification: topk must be distinct ks >= 1, got "
                              f"{self.topk}")
        object.__setattr__(self, "topk", tuple(sorted(self.topk)))
        if self.score_name not in self.metric_names:
            raise ConfigError(f"classification: score {self.score_name!r} is not one of "
                              f"{', '.join(self.metric_names)}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("loss", *(f"top{k}" for k in self.topk))

    def build_head(self, in_channels: int) -> nn.Module:
        return ClsConvHead(in_channels, self.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def arch_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

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

    def open_datasets(self, spec: str, resolution: int) -> ImageDatasets:
        return open_datasets(spec, resolution)

    @classmethod
    def for_data(cls, data: ImageDatasets, topk: Sequence[int] = (1, 5)
                 ) -> ClassificationTask:
        """The task of an opened dataset (its class count)."""
        return cls(data.num_classes, tuple(topk))
