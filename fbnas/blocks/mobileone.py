"""MobileOne blocks: over-parameterised branches for training, one conv each for deployment.

Train mode (``deploy: false``) sums k depthwise 3x3 conv+BN branches, a depthwise 1x1
conv+BN and (stride 1) a BN skip, then the activation; then k pointwise conv+BN branches
plus (in == out) a BN skip, then the activation. :func:`reparameterize_model` folds every
branch into a single dw 3x3 and pw 1x1 conv — the ``deploy: true`` structure — computing
the same outputs in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.blocks.layers import HW, ActSpec, ConvBNRelu, ConvNormAct, ConvSpec, Cost, NormSpec
from fbnas.blocks.options import NamedArgs, named_args
from fbnas.blocks.registry import register_family


@dataclass(frozen=True)
class MobileOneOptions:
    over_param_branches: int = 1
    deploy: bool = False
    bias: bool = False
    bn_args: NamedArgs = "bn"
    relu_args: NamedArgs = "relu"


@dataclass(frozen=True)
class MobileOnePlan:
    in_channels: int
    out_channels: int
    stride: int
    branches: int
    deploy: bool
    bias: bool
    norm_args: Any
    act: ActSpec | None

    def _norm(self, channels: int) -> NormSpec | None:
        return NormSpec.from_args(self.norm_args, channels, "bn_args")

    def dw(self, kernel: int, bias: bool | None = None, act: bool = False) -> ConvNormAct:
        c = self.in_channels
        conv = ConvSpec(c, c, kernel, self.stride, kernel // 2, groups=c,
                        bias=self.bias if bias is None else bias)
        return ConvNormAct(conv, self._norm(c), self.act if act else None)

    def pw(self, bias: bool | None = None, act: bool = False) -> ConvNormAct:
        conv = ConvSpec(self.in_channels, self.out_channels, 1,
                        bias=self.bias if bias is None else bias)
        return ConvNormAct(conv, self._norm(self.out_channels), self.act if act else None)

    @property
    def has_dw_skip(self) -> bool:
        return self.stride == 1

    @property
    def has_pw_skip(self) -> bool:
        return self.in_channels == self.out_channels

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        if self.deploy:
            dw_cost, hw = self.dw(3, act=True).cost(in_hw)
            pw_cost, hw = self.pw(act=True).cost(hw)
            return dw_cost + pw_cost, hw
        dw3, hw = self.dw(3).cost(in_hw)
        dw1, _ = self.dw(1).cost(in_hw)
        pw1, _ = self.pw().cost(hw)
        total = Cost(dw3.params * self.branches, dw3.macs * self.branches) + dw1
        total += Cost(pw1.params * self.branches, pw1.macs * self.branches)
        total += Cost(2 * self.in_channels * self.has_dw_skip
                      + 2 * self.out_channels * self.has_pw_skip)
        if self.act is not None:
            total += Cost(self.act.params(self.out_channels))
        return total, hw

    def build(self) -> nn.Module:
        return MobileOneDeployBlock(self) if self.deploy else MobileOneBlock(self)


class MobileOneBlock(nn.Module):
    """Train-time MobileOne block (over-parameterised); see :meth:`reparameterize`."""

    def __init__(self, plan: MobileOnePlan) -> None:
        super().__init__()
        self.plan = plan
        self.out_channels = plan.out_channels
        self.dw_3x3_blocks = nn.ModuleList(plan.dw(3).build() for _ in range(plan.branches))
        self.dw_1x1 = plan.dw(1).build()
        self.dw_skip = plan._norm(plan.in_channels).build() if plan.has_dw_skip else None
        self.pw_1x1_blocks = nn.ModuleList(plan.pw().build() for _ in range(plan.branches))
        self.pw_skip = plan._norm(plan.out_channels).build() if plan.has_pw_skip else None
        self.relu = plan.act.build() if plan.act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw_1x1(x)
        for branch in self.dw_3x3_blocks:
            y = y + branch(x)
        if self.dw_skip is not None:
            y = y + self.dw_skip(x)
        y = self.relu(y)
        z = sum(branch(y) for branch in self.pw_1x1_blocks)
        if self.pw_skip is not None:
            z = z + self.pw_skip(y)
        return self.relu(z)

    @torch.no_grad()
    def reparameterize(self) -> MobileOneDeployBlock:
        """Returns the deploy block with every branch folded in (equal outputs in eval mode)."""
        plan = self.plan
        c = plan.in_channels
        w_dw = torch.zeros(c, 1, 3, 3)
        b_dw = torch.zeros(c)
        for branch in self.dw_3x3_blocks:
            w, b = _fold(branch.conv.weight, branch.conv.bias, branch.bn)
            w_dw += w
            b_dw += b
        w, b = _fold(self.dw_1x1.conv.weight, self.dw_1x1.conv.bias, self.dw_1x1.bn)
        w_dw += F.pad(w, (1, 1, 1, 1))
        b_dw += b
        if self.dw_skip is not None:
            identity = torch.zeros(c, 1, 3, 3)
            identity[:, 0, 1, 1] = 1.0
            w, b = _fold(identity, None, self.dw_skip)
            w_dw += w
            b_dw += b
        w_pw = torch.zeros(plan.out_channels, c, 1, 1)
        b_pw = torch.zeros(plan.out_channels)
        for branch in self.pw_1x1_blocks:
            w, b = _fold(branch.conv.weight, branch.conv.bias, branch.bn)
            w_pw += w
            b_pw += b
        if self.pw_skip is not None:
            w, b = _fold(torch.eye(c).view(c, c, 1, 1), None, self.pw_skip)
            w_pw += w
            b_pw += b
        deploy = MobileOneDeployBlock(replace(plan, deploy=True, bias=True))
        for part, (w, b) in ((deploy.dw_3x3, (w_dw, b_dw)), (deploy.pw_1x1, (w_pw, b_pw))):
            part.conv.weight.copy_(w)
            part.conv.bias.copy_(b)
            _make_identity(part.bn)
        return deploy.train(self.training)


class MobileOneDeployBlock(nn.Module):
    """Deploy-time MobileOne block: dw 3x3 ConvBNRelu then pw 1x1 ConvBNRelu."""

    def __init__(self, plan: MobileOnePlan) -> None:
        super().__init__()
        self.out_channels = plan.out_channels
        self.dw_3x3 = plan.dw(3, act=True).build()
        self.pw_1x1 = plan.pw(act=True).build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw_1x1(self.dw_3x3(x))


def _fold(weight: torch.Tensor, bias: torch.Tensor | None,
          bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv -> BN (eval) as one conv: w * gamma / std, (b - mean) * gamma / std + beta."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.view(-1, 1, 1, 1), (b - bn.running_mean) * scale + bn.bias


def _make_identity(bn: nn.BatchNorm2d) -> None:
    """Sets a BN to the identity in eval mode (var = 1 - eps so that sqrt(var + eps) = 1)."""
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Replaces every train-mode MobileOne block of ``model`` by its folded deploy block.

    The result has the module layout of the ``MobileOne-S*-Deploy`` zoo definitions, so its
    state dict loads into them. Works in place and returns ``model``.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, MobileOneBlock):
            setattr(model, name, child.reparameterize())
        else:
            reparameterize_model(child)
    return model


def resolve_mobileone(in_channels: int, out_channels: int, stride: int,
                      options: dict[str, Any]) -> MobileOnePlan:
    if stride < 1:
        raise ArchDefError(f"mobileone needs a positive stride, got {stride}", key="stride")
    if options["over_param_branches"] < 1:
        raise ArchDefError(f"over_param_branches must be >= 1, got "
                           f"{options['over_param_branches']}", key="over_param_branches")
    norm_args = named_args(options["bn_args"], "bn_args")
    if norm_args is None or norm_args["name"] != "bn":
        raise ArchDefError("mobileone branches need batch norm (bn_args 'bn') to fold",
                           key="bn_args")
    NormSpec.from_args(norm_args, in_channels, "bn_args")
    act = ActSpec.from_args(named_args(options["relu_args"], "relu_args"), "relu_args")
    return MobileOnePlan(in_channels, out_channels, stride, options["over_param_branches"],
                         options["deploy"], options["bias"], norm_args, act)


register_family("mobileone", MobileOneOptions, resolve_mobileone,
                description="MobileOne block: over-parameterised dw 3x3 + pw 1x1 branches")

__all__ = ["MobileOneBlock", "MobileOneDeployBlock", "ConvBNRelu", "reparameterize_model"]
