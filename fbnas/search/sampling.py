"""The architecture sampling stream that every rank and every device draws alike.

A differentiable search samples an architecture at every step (the Gumbel noise of a soft
mixture, the one path of a single-path step). :class:`ArchSampler` holds that stream: a CPU
``torch.Generator`` seeded from the search seed. Ranks that start from the same state and
draw the same samples stay in step, so they use the same mixture or the same path and never
need to exchange it; and because the stream is on the CPU, a search on a GPU draws the same
numbers as one on the CPU (the noise is drawn there and moved to the model's device). Its
state is checkpointed, so a resumed search draws what the uninterrupted one would have.

Sharing the path is what makes explicit gradient reduction simple: the candidates off the
path have no gradient on any rank, so every rank reduces the same list of tensors and unused
parameters never stall a collective, and the θ gradient of a step estimates one sampled
architecture, as in a single process. Drawing a path per rank would explore N paths per
step, but then the ranks' weight gradients cover different candidates and their average no
longer matches any single-process run.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch


class Samples(Protocol):
    """What :class:`ArchSampler` draws from: a model that samples from a given stream."""

    def sample(self, generator: torch.Generator, tau: float) -> Any: ...


class ArchSampler:
    """Draws each step's architecture sample from a stream that every rank holds a copy of."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def state(self) -> torch.Tensor:
        """The stream's state (a CPU byte tensor), for checkpoints."""
        return self.generator.get_state()

    @state.setter
    def state(self, value: torch.Tensor) -> None:
        self.generator.set_state(value)

    def sample(self, model: Samples, tau: float) -> Any:
        """``model``'s sample at temperature ``tau``, drawn from this stream."""
        return model.sample(self.generator, tau)


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gumbel(0, 1) noise ``-log(E)``, ``E ~ Exp(1)``, drawn on the CPU from ``generator``
    and moved to ``device`` (without waiting for it: the copy is queued)."""
    noise = -torch.empty(shape, dtype=dtype).exponential_(generator=generator).log()
    return noise.to(device, non_blocking=True)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator,
                   hard: bool = False, dim: int = -1) -> torch.Tensor:
    """``torch.nn.functional.gumbel_softmax`` with its noise from ``generator`` (a CPU
    stream), whatever device ``logits`` are on.

    For the same stream state on the CPU it returns bitwise what
    ``F.gumbel_softmax`` returns when that state is torch's global RNG: the same draws and
    the same operations. ``hard=True`` gives the one-hot of the sample's argmax in the
    forward pass and the soft sample's gradient in the backward pass (straight-through).
    """
    noise = gumbel_noise(logits.shape, generator, logits.device, logits.dtype)
    soft = ((logits + noise) / tau).softmax(dim)
    if not hard:
        return soft
    index = soft.max(dim, keepdim=True)[1]
    one_hot = torch.zeros_like(logits, memory_format=torch.legacy_contiguous_format
                               ).scatter_(dim, index, 1.0)
    return one_hot - soft.detach() + soft


def masked_logits(theta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """θ with the padded options of each row (``mask`` True) at −inf: rows of a supernet's
    ``(decisions, most options)`` θ have fewer real options than the widest row."""
    return theta.masked_fill(mask, -math.inf)


def mean_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the rows of ``(decisions, options)`` probabilities: high
    while a search is undecided; zero for a supernet with no decisions."""
    if probabilities.shape[0] == 0:
        return probabilities.new_zeros(())
    return -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(-1).mean()
