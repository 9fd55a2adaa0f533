"""Soft-mode execution of the inverted-residual candidates of one layer, fused.

In soft mode every candidate of a searchable layer runs on the same input. The FBNetV1
candidates (inverted residuals with kernel 3 or 5, expansion 1, 3 or 6, the shuffled ``g2``
variants) differ only in widths and kernel, so their first two convolutions can each run as
one op over the concatenated channels of all candidates:

* one 1x1 expansion conv (+ BN + act) for every candidate that expands;
* one depthwise conv (+ BN + act) per kernel size, over the hidden channels of every
  candidate with that kernel: depthwise channels are independent of each other;
* each candidate's own 1x1 projection, with the BN affine multiplied by the candidate's
  mixture weight, so ``w_i * BN_i(pwl_i(h_i))`` costs no extra pass over the activations.

Batch norm is per channel (batch statistics too), so BN over concatenated channels is the
candidates' BNs side by side: the fused result equals ``sum_i w_i b_i(x)`` up to the order of
float additions, and each candidate's running statistics are updated as if it ran alone.

The parameters stay in the candidates' own blocks (:class:`FusedIRFCandidate` is an
``IRFBlock``): parameter names, initialisation and single-path behaviour are those of the
standalone blocks (an unsampled candidate gets no gradient at all, so SGD leaves it
untouched), and a derived subnet loads them by name. The fused weights are concatenated on
every forward: a few MB of copies next to hundreds of MB of activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.blocks.irf import IRFBlock, IRFPlan
from fbnas.blocks.layers import ConvBNRelu, ConvNormAct, NormSpec

NormKey = tuple[str, object] | None
"""(norm name, options) of a BN, or None for no norm: candidates fuse only with equal keys."""


@dataclass(frozen=True)
class IRFParts:
    """What fusion needs to know of one inverted-residual candidate.

    Attributes:
        mid: hidden width (channels of the depthwise conv).
        expands: whether it has a 1x1 expansion conv (else the depthwise conv reads the input,
            channel-shuffled when ``shuffle_groups`` > 1).
        shuffle_groups: channel-shuffle groups before the depthwise conv (1: none).
        residual: whether the block adds its input.
        pw_key: what must agree for expansion convs to fuse (norm, activation).
        dw_key: what must agree for depthwise convs to fuse (kernel, stride, padding,
            dilation, norm, activation).
    """

    mid: int
    expands: bool
    shuffle_groups: int
    residual: bool
    pw_key: tuple | None
    dw_key: tuple


def _norm_key(norm: NormSpec | None) -> NormKey | bool:
    """The fusion key of a norm, or False when it cannot be fused.

    Only BN with a fixed momentum: with ``momentum=None`` BN averages over its own batch count,
    which differs between candidates once single-path steps have run.
    """
    if norm is None:
        return None
    if norm.name != "bn" or norm.options.get("momentum", 0.1) is None:
        return False
    return (norm.name, norm.options)


def _is_pointwise(spec: ConvNormAct) -> bool:
    c = spec.conv
    return (c.kernel_size == (1, 1) and c.stride == (1, 1) and c.padding == (0, 0)
            and c.dilation == (1, 1) and not c.bias and spec.upsample == 1)


def irf_parts(plan: object) -> IRFParts | None:
    """The fusable description of a candidate's plan, or None when it must run on its own.

    Fusable: an inverted residual with a depthwise conv and a 1x1 projection, no SE, no
    upsampling, no drop-connect, no activation after the add, an expansion conv that is a plain
    1x1 (or none, with an optional channel shuffle), bias-free convs and BN norms. Anything
    else (SE variants, user ops, ``skip``) runs unfused; the result is the same either way.
    """
    if not isinstance(plan, IRFPlan):
        return None
    if (plan.se is not None or plan.upsample != 1 or plan.last_act is not None
            or plan.drop_connect_rate or plan.dw is None or plan.pwl is None):
        return None
    dw, pwl, pw = plan.dw, plan.pwl, plan.pw
    mid = dw.conv.in_channels
    if (dw.conv.groups != mid or dw.conv.out_channels != mid or dw.conv.bias
            or dw.upsample != 1 or not _is_pointwise(pwl)):
        return None
    norms = [_norm_key(dw.norm), _norm_key(pwl.norm)]
    pw_key = None
    if pw is not None:
        if not _is_pointwise(pw) or pw.conv.groups != 1 or plan.shuffle_groups > 1:
            return None
        norms.append(_norm_key(pw.norm))
        pw_key = (norms[-1], pw.act)
    if any(n is False for n in norms):
        return None
    c = dw.conv
    dw_key = (c.kernel_size, c.stride, c.padding, c.dilation, norms[0], dw.act)
    return IRFParts(mid, pw is not None, plan.shuffle_groups, plan.residual, pw_key, dw_key)


class FusedIRFCandidate(IRFBlock):
    """An inverted-residual block whose first two convs may run fused with its siblings'.

    It is an :class:`IRFBlock` with the same children, parameter names and initialisation:
    called with the input alone it is exactly that block (single-path mode, eval, derive), and
    its state dict loads into the block a derived subnet builds. Called with ``hidden`` (its
    depthwise output, from :func:`fused_hidden`) it runs only its 1x1 projection, scaled by
    ``scale`` (the mixture weight, folded into the BN affine).
    """

    def __init__(self, plan: IRFPlan, parts: IRFParts) -> None:
        super().__init__(plan)
        self.parts = parts

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None,
                scale: torch.Tensor | None = None, residual: bool = True) -> torch.Tensor:
        """``x``: (N, C, H, W) block input; ``hidden``: (N, mid, H', W'); ``scale``: () weight.

        With ``residual=False`` the caller adds ``scale * x`` itself (once for all candidates).
        """
        if hidden is None:
            y = super().forward(x)
            return y if scale is None else y * scale
        y = self.pwl.conv(hidden)
        bn = getattr(self.pwl, "bn", None)
        if bn is not None:
            y = batch_norm(y, [bn], scale)
        elif scale is not None:
            y = y * scale
        if residual and self.parts.residual:
            y = y + x if scale is None else torch.addcmul(y, x, scale)
        return y


@dataclass(frozen=True)
class FusionPlan:
    """How the fusable candidates of a layer group: indices into the layer's candidates.

    Attributes:
        pw_groups: candidates whose expansion convs run as one conv, each group in the order
            its outputs are concatenated.
        dw_groups: candidates whose depthwise convs run as one conv, in channel order.
    """

    pw_groups: tuple[tuple[int, ...], ...]
    dw_groups: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, parts: dict[int, IRFParts]) -> FusionPlan:
        """Groups candidates by equal keys, keeping first-seen order."""
        pw: dict[tuple, list[int]] = {}
        dw: dict[tuple, list[int]] = {}
        for i, p in parts.items():
            if p.expands:
                pw.setdefault(p.pw_key, []).append(i)
            dw.setdefault(p.dw_key, []).append(i)
        return cls(tuple(tuple(g) for g in pw.values()), tuple(tuple(g) for g in dw.values()))


def batch_norm(x: torch.Tensor, bns: Sequence[nn.BatchNorm2d],
               scale: torch.Tensor | None = None) -> torch.Tensor:
    """BN over channels that are the concatenation of several BN layers' channels.

    Behaves as each ``nn.BatchNorm2d`` run on its own channels (batch statistics while
    training, running statistics in eval, running averages and ``num_batches_tracked``
    updated per layer). ``scale`` multiplies the affine weight and bias: ``scale * BN(x)``.
    All layers share momentum and eps (:func:`irf_parts` checks).
    """
    first = bns[0]
    if len(bns) == 1:
        weight, bias = first.weight, first.bias
        mean, var = first.running_mean, first.running_var
    else:
        weight = torch.cat([bn.weight for bn in bns])
        bias = torch.cat([bn.bias for bn in bns])
        mean = torch.cat([bn.running_mean for bn in bns])
        var = torch.cat([bn.running_var for bn in bns])
    if scale is not None:
        weight, bias = weight * scale, bias * scale
    if first.training:
        for bn in bns:
            bn.num_batches_tracked.add_(1)
    y = F.batch_norm(x, mean, var, weight, bias, first.training, first.momentum, first.eps)
    if first.training and len(bns) > 1:
        with torch.no_grad():
            sizes = [bn.num_features for bn in bns]
            for bn, m, v in zip(bns, mean.split(sizes), var.split(sizes), strict=True):
                bn.running_mean.copy_(m)
                bn.running_var.copy_(v)
    return y


def _conv_bn_act(x: torch.Tensor, parts: Sequence[ConvBNRelu], depthwise: bool) -> torch.Tensor:
    """The ConvBNRelu ``parts`` (same shape settings) as one conv over concatenated outputs."""
    conv = parts[0].conv
    weight = torch.cat([p.conv.weight for p in parts]) if len(parts) > 1 else conv.weight
    groups = weight.shape[0] if depthwise else 1
    y = F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, groups)
    if hasattr(parts[0], "bn"):
        y = batch_norm(y, [p.bn for p in parts])
    act = getattr(parts[0], "relu", None)
    return act(y) if act is not None else y


def fused_hidden(x: torch.Tensor, candidates: Sequence[nn.Module],
                 plan: FusionPlan) -> dict[int, torch.Tensor]:
    """Every fusable candidate's depthwise output (after BN and act), by candidate index.

    ``x``: (N, C, H, W). Runs one expansion conv per pw group and one depthwise conv per dw
    group; the outputs are split per candidate (views; ``split`` keeps the backward to one
    concatenation instead of one zero-filled tensor per slice).
    """
    inputs: dict[int, torch.Tensor] = {}
    for group in plan.pw_groups:
        out = _conv_bn_act(x, [candidates[i].pw for i in group], depthwise=False)
        inputs.update(zip(group, out.split([candidates[i].parts.mid for i in group], dim=1),
                          strict=True))
    shuffled: dict[int, torch.Tensor] = {}
    hidden: dict[int, torch.Tensor] = {}
    for group in plan.dw_groups:
        parts = []
        for i in group:
            if i in inputs:
                parts.append(inputs[i])
                continue
            g = candidates[i].parts.shuffle_groups
            if g > 1 and g not in shuffled:
                # F.channel_shuffle == ChannelShuffle, and it keeps channels_last.
                shuffled[g] = F.channel_shuffle(x, g)
            parts.append(shuffled[g] if g > 1 else x)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        out = _conv_bn_act(h, [candidates[i].dw for i in group], depthwise=True)
        hidden.update(zip(group, out.split([candidates[i].parts.mid for i in group], dim=1),
                          strict=True))
    return hidden


def build_candidate(plan: object) -> nn.Module | None:
    """A :class:`FusedIRFCandidate` for a fusable plan, else None (build it as usual)."""
    parts = irf_parts(plan)
    return None if parts is None else FusedIRFCandidate(plan, parts)


__all__ = ["FusedIRFCandidate", "FusionPlan", "IRFParts", "batch_norm", "fused_hidden",
           "build_candidate", "irf_parts"]
