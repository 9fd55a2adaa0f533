"""The cost-aware loss of the differentiable searches (ALGORITHMS.md §1.4; FBNetV2 §2.3
combines its effective-shape cost the same way).

The search engine adds it to every weight and architecture step: the task's loss (its
``loss`` or ``arch_loss``) times or plus a function of the cost of the sampled
architecture.

The cost is first normalised, ``r = e * cost / c_min`` with ``c_min`` the cheapest network
of the space, so ``r >= e`` and ``log r >= 1`` whatever the unit (ms, MACs, params) or the
scale (a 32x32 network costs well under 1 ms): the paper's ``(log cost)^beta`` is then always
defined and the loss does not depend on the unit the table happens to use.

Forms (``form``):
* ``mul``  — the paper: ``CE * alpha * (log r)^beta`` (alpha 0.2, beta 0.6).
* ``log``  — the public CIFAR code: ``alpha * CE * log(r^beta)`` = ``alpha*beta*CE*log r``.
* ``add``  — NNI's: ``CE + alpha * (r / e)^beta``.

With a target ``T`` (same unit as the cost) a pull towards it is added (fbnas's own; the
paper has none). It works on relative error, ``d = log(c / T)`` (being 20 % over costs the
same at any scale):

* ``target_form``: ``square`` — ``target_weight * d^2``, a force that fades near T; ``abs``
  — ``target_weight * |d|``, a constant force, so the cost settles at T instead of where the
  fading force balances the task's preference for larger networks.
* ``pull_on``: the cost ``c`` the pull sees. ``sample`` — the step's sampled (Gumbel-softmax
  weighted) cost, like the paper's cost factor; ``expected`` — the cost expected under the
  architecture distribution, Σ softmax(θ)·cost, exact and without noise. A soft sample at
  temperature τ > 1 is close to uniform whatever θ is, so the sampled cost regresses to the
  cost of the uniform mixture: pulling it to T leaves the distribution's own expected cost
  free to drift (the demo's ended 12-18 % over its target, docs/dnas.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from fbnas.errors import ConfigError

LossForm = Literal["mul", "log", "add"]
TargetForm = Literal["square", "abs"]
PullOn = Literal["sample", "expected"]


@dataclass(frozen=True)
class CostTerms:
    """The parts of one step's search loss (scalar tensors; ``total`` is differentiated).

    Attributes:
        total: the search loss.
        task: the task's loss.
        cost: the cost term: the factor the task loss is multiplied by (``mul``, ``log``),
            or the term added to it (``add``).
        target: the target pull (zero without a target).
    """

    total: torch.Tensor
    task: torch.Tensor
    cost: torch.Tensor
    target: torch.Tensor


@dataclass(frozen=True)
class CostLoss:
    """Combines the task loss with the architecture cost (and pulls it to a target)."""

    cheapest: float
    form: LossForm = "mul"
    alpha: float = 0.2
    beta: float = 0.6
    target: float | None = None
    target_weight: float = 1.0
    target_form: TargetForm = "square"
    pull_on: PullOn = "sample"

    def __post_init__(self) -> None:
        if self.cheapest <= 0:
            raise ConfigError(f"the cheapest network's cost must be > 0, got {self.cheapest}")
        if self.form not in ("mul", "log", "add"):
            raise ConfigError(f"unknown loss form {self.form!r}; use mul, log or add")
        if self.target is not None and self.target <= 0:
            raise ConfigError(f"the cost target must be > 0, got {self.target}")
        if self.target_form not in ("square", "abs"):
            raise ConfigError(f"unknown target_form {self.target_form!r}; use square or abs")
        if self.pull_on not in ("sample", "expected"):
            raise ConfigError(f"unknown pull_on {self.pull_on!r}; use sample or expected")
        if self.target_weight < 0:
            raise ConfigError(f"target_weight must be >= 0, got {self.target_weight}")

    @property
    def needs_expected_cost(self) -> bool:
        """Whether a step must pass the distribution's expected cost (``pull_on`` expected,
        with a target)."""
        return self.target is not None and self.pull_on == "expected"

    def normalised(self, cost: torch.Tensor) -> torch.Tensor:
        return math.e * cost / self.cheapest

    def terms(self, task_loss: torch.Tensor, cost: torch.Tensor,
              expected_cost: torch.Tensor | None = None) -> CostTerms:
        """The search loss and its parts.

        Args:
            task_loss: the task's loss of the step (scalar).
            cost: the sampled architecture's cost (scalar, differentiable in θ).
            expected_cost: the cost expected under the architecture distribution (scalar,
                differentiable in θ); needed when the pull is ``pull_on="expected"``.
        """
        r = self.normalised(cost)
        if self.form == "mul":
            factor = self.alpha * torch.log(r) ** self.beta
            loss = task_loss * factor
        elif self.form == "log":
            factor = self.alpha * torch.log(r ** self.beta)
            loss = task_loss * factor
        else:
            factor = self.alpha * (r / math.e) ** self.beta
            loss = task_loss + factor
        pull = torch.zeros((), dtype=loss.dtype, device=loss.device)
        if self.target is not None:
            pulled = cost
            if self.pull_on == "expected":
                if expected_cost is None:
                    raise ValueError("pull_on='expected' needs the expected cost of the step")
                pulled = expected_cost
            d = torch.log(pulled / self.target)
            pull = self.target_weight * (d ** 2 if self.target_form == "square" else d.abs())
            loss = loss + pull
        return CostTerms(loss, task_loss, factor, pull)

    def __call__(self, task_loss: torch.Tensor, cost: torch.Tensor,
                 expected_cost: torch.Tensor | None = None) -> torch.Tensor:
        """The search loss (:meth:`terms`' ``total``)."""
        return self.terms(task_loss, cost, expected_cost).total
