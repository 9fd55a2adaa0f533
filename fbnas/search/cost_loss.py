"""The cost-aware loss of the differentiable searches (ALGORITHMS.md §1.4; FBNetV2 §2.3
combines its effective-shape cost the same way).

The search engine adds it to every weight and architecture step: the task's loss (its
``loss`` or ``arch_loss``) times or plus a function of the expected cost of the sampled
architecture.

The cost is first normalised, ``r = e * cost / c_min`` with ``c_min`` the cheapest network
of the space, so ``r >= e`` and ``log r >= 1`` whatever the unit (ms, MACs, params) or the
scale (a 32x32 network costs well under 1 ms): the paper's ``(log cost)^beta`` is then always
defined and the loss does not depend on the unit the table happens to use.

Forms (``form``):
* ``mul``  — the paper: ``CE * alpha * (log r)^beta`` (alpha 0.2, beta 0.6).
* ``log``  — the public CIFAR code: ``alpha * CE * log(r^beta)`` = ``alpha*beta*CE*log r``.
* ``add``  — NNI's: ``CE + alpha * (r / e)^beta``.

With a target ``T`` (same unit as the cost) the term ``target_weight * log(cost / T)^2`` is
added: it pulls the expected cost towards T from both sides, in relative terms (being 20 %
over costs the same at any scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from fbnas.errors import ConfigError

LossForm = Literal["mul", "log", "add"]


@dataclass(frozen=True)
class CostLoss:
    """Combines the task loss with the expected architecture cost."""

    cheapest: float
    form: LossForm = "mul"
    alpha: float = 0.2
    beta: float = 0.6
    target: float | None = None
    target_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.cheapest <= 0:
            raise ConfigError(f"the cheapest network's cost must be > 0, got {self.cheapest}")
        if self.form not in ("mul", "log", "add"):
            raise ConfigError(f"unknown loss form {self.form!r}; use mul, log or add")
        if self.target is not None and self.target <= 0:
            raise ConfigError(f"the cost target must be > 0, got {self.target}")

    def normalised(self, cost: torch.Tensor) -> torch.Tensor:
        return math.e * cost / self.cheapest

    def __call__(self, task_loss: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        r = self.normalised(cost)
        if self.form == "mul":
            loss = task_loss * self.alpha * torch.log(r) ** self.beta
        elif self.form == "log":
            loss = self.alpha * task_loss * torch.log(r ** self.beta)
        else:
            loss = task_loss + self.alpha * (r / math.e) ** self.beta
        if self.target is not None:
            loss = loss + self.target_weight * torch.log(cost / self.target) ** 2
        return loss
