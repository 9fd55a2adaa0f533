"""A supernet written by hand against the engine's protocol (no SearchSpace, no DNAS):
two mixed ops of plain torch candidates, and the engine that searches it on digits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.search.cost_loss import CostLoss
from fbnas.search.engine import EngineConfig, SearchEngine
from fbnas.search.protocols import Frozen
from fbnas.search.sampling import gumbel_softmax
from fbnas.tasks import ClassificationTask

RESOLUTION = 8
DATA = "digits?per_class=6"
# Two mixed ops of two candidates each; the arch-def op each candidate freezes into.
OPS = (("ir_k3", "skip"), ("ir_k3", "ir_k5"))
COSTS = ((120.0, 0.0), (120.0, 300.0))
FIXED = 50.0


class ToyMixedOp(nn.Module):
    """``Σ_i w_i b_i(x)`` over plain torch candidates (same width in and out)."""

    def __init__(self, kernels: tuple[int | None, ...], channels: int) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(
            nn.Identity() if k is None else nn.Sequential(
                nn.Conv2d(channels, channels, k, padding=k // 2, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU())
            for k in kernels)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * candidate(x) for w, candidate in zip(weights, self.candidates,
                                                            strict=True))


class ToySupernet(nn.Module):
    """A stem, two mixed ops and a classifier, written by hand against the protocol."""

    cost_unit = "toy_macs"

    def __init__(self, channels: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.channels = channels
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU())
        self.ops = nn.ModuleList([ToyMixedOp((3, None), channels), ToyMixedOp((3, 5), channels)])
        self.classifier = nn.Linear(channels, num_classes)
        self.theta = nn.Parameter(torch.zeros(2, 2))
        self.register_buffer("costs", torch.tensor(COSTS), persistent=False)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "theta"]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def sample(self, generator: torch.Generator, tau: float) -> torch.Tensor:
        return gumbel_softmax(self.theta, tau, generator)

    def fixed_sample(self, choice: list[int]) -> torch.Tensor:
        return F.one_hot(torch.tensor(choice), 2).to(self.theta)

    def forward(self, x: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        for op, weights in zip(self.ops, sample, strict=True):
            x = op(x, weights)
        cost = FIXED + (sample * self.costs).sum()
        return self.classifier(x.mean((2, 3))), cost

    def probabilities(self) -> torch.Tensor:
        return self.theta.softmax(-1)

    def entropy(self) -> torch.Tensor:
        p = self.probabilities()
        return -(p * p.log()).sum(-1).mean()

    def derive(self) -> list[int]:
        return self.theta.argmax(-1).tolist()

    def sample_architectures(self, count: int, generator: torch.Generator) -> list[list[int]]:
        p = self.probabilities().detach().cpu()
        return [torch.multinomial(p, 1, generator=generator).squeeze(-1).tolist()
                for _ in range(count)]

    def expected_cost(self) -> float:
        return FIXED + float((self.probabilities().detach() * self.costs).sum())

    def choice_cost(self, choice: list[int]) -> float:
        return FIXED + sum(COSTS[layer][c] for layer, c in enumerate(choice))

    def freeze(self, choice: list[int]) -> Frozen:
        ops = [OPS[layer][c] for layer, c in enumerate(choice)]
        return Frozen({"input_size": RESOLUTION,
                       "blocks": [[["conv_k3", self.channels, 2, 1]],
                                  *[[[op, self.channels, 1, 1]] for op in ops]]})

    def arch_state(self) -> dict:
        return {"theta": self.theta.detach().tolist()}


CONFIG = EngineConfig(epochs=3, warmup_epochs=1, batch_size=16, theta_lr=0.1, seed=1,
                      num_samples=2, tau_final=1.0)


def toy_engine(data, config: EngineConfig = CONFIG) -> SearchEngine:
    task = ClassificationTask(data.num_classes)
    return SearchEngine(ToySupernet, task, data, config, CostLoss(FIXED))


def crash_at(epoch: int):
    def progress(phase: str, done: int, total: int, info: dict) -> None:
        if info["epoch"] == epoch:
            raise RuntimeError("planned crash")
    return progress
