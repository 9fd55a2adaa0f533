"""Soft widths: the slimmable layers' mask mode, for FBNetV2's channel search by masking.

A slimmable layer normally runs on a leading slice of its max-width weights
(:mod:`fbnas.slim.ops`). In *soft* mode it runs at the full width and its output is
multiplied by ``M = Σ_i g_i · m_i``, where ``m_i`` keeps the first ``c_i`` channels and the
``g_i`` are (Gumbel-softmax) weights over the width options ``c_i`` (ALGORITHMS.md §2.1).
With one-hot weights the first ``c_i`` channels are exactly those of the network sliced to
``c_i`` (BatchNorm is per channel and the masked channels feed zeros onward), so a width
option's output *is* the plain network of that width holding the same leading weights.
Memory and compute are those of the widest option whatever the number of options.

A :class:`SoftWidth` also gives the layer's *effective* width ``Σ_i g_i c_i`` (0.8 on 16 and
0.2 on 12 give 15.2), from which :func:`fbnas.slim.cost.soft_cost` computes params and MACs
differentiably (§2.3): ``k² · h̄ · w̄ · C̄_in · C̄_out / γ`` per conv. At one-hot weights that
is exactly what ``fbnas.cost.count_macs``/``count_params`` count on the extracted network.

Set the widths of a whole network with :meth:`fbnas.slim.DynModel.set_soft_widths` (one
:class:`SoftWidth` per search dimension: widths tied by a residual share one); kernels of
depthwise convs can be soft too (:meth:`SoftWidth.kernel_mask`: the centred ``k×k`` part of
the largest kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fbnas.slim.errors import SlimConfigError


@dataclass(frozen=True, eq=False)
class SoftWidth:
    """Width options and their weights: a soft choice of a layer's width (or kernel).

    Attributes:
        options: the widths ``c_i`` (or kernel sizes), one per weight.
        weights: ``(k,)`` weights ``g_i`` (a Gumbel-softmax sample, or one-hot).

    Example:
        >>> soft = SoftWidth((12, 16), torch.tensor([0.2, 0.8]))
        >>> round(float(soft.effective), 4)
        15.2
        >>> soft.mask(16)[10:14].tolist()
        [1.0, 1.0, 0.800000011920929, 0.800000011920929]
    """

    options: tuple[int, ...]
    weights: torch.Tensor

    def __post_init__(self) -> None:
        if not self.options:
            raise SlimConfigError("a soft width needs at least one option")
        if self.weights.shape != (len(self.options),):
            raise SlimConfigError(f"a soft width over {len(self.options)} options needs "
                                  f"({len(self.options)},) weights, got "
                                  f"{tuple(self.weights.shape)}")

    def _options(self) -> torch.Tensor:
        return torch.tensor(self.options, dtype=self.weights.dtype, device=self.weights.device)

    @property
    def effective(self) -> torch.Tensor:
        """``Σ_i g_i c_i``: the effective width (a scalar tensor, differentiable in g)."""
        return (self.weights * self._options()).sum()

    @property
    def effective_area(self) -> torch.Tensor:
        """``Σ_i g_i k_i²``: the effective kernel area of a soft kernel size."""
        return (self.weights * self._options() ** 2).sum()

    def map(self, rule) -> SoftWidth:
        """The same weights over ``rule(c_i)`` (the SE width that follows a hidden width)."""
        return SoftWidth(tuple(int(rule(c)) for c in self.options), self.weights)

    def mask(self, channels: int) -> torch.Tensor:
        """``(channels,)``: ``M = Σ_i g_i m_i`` with ``m_i`` the first-``c_i`` indicator."""
        if max(self.options) > channels:
            raise SlimConfigError(f"width option {max(self.options)} exceeds the layer's "
                                  f"{channels} channels")
        index = torch.arange(channels, device=self.weights.device)
        steps = (index[None, :] < self._options()[:, None]).to(self.weights.dtype)
        return self.weights @ steps

    def kernel_mask(self, kernel: int) -> torch.Tensor:
        """``(kernel, kernel)``: ``Σ_i g_i`` · (ones on the centred ``k_i × k_i`` window)."""
        if any(k > kernel or (kernel - k) % 2 for k in self.options):
            raise SlimConfigError(f"kernel options {list(self.options)} must be odd sizes "
                                  f"centred in the {kernel}x{kernel} kernel")
        index = torch.arange(kernel, device=self.weights.device)
        half = (kernel - self._options()) / 2  # (k,)
        inside = (index[None, :] >= half[:, None]) & (index[None, :] < kernel - half[:, None])
        windows = (inside[:, :, None] & inside[:, None, :]).to(self.weights.dtype)
        return torch.einsum("k,kij->ij", self.weights, windows)


__all__ = ["SoftWidth"]
