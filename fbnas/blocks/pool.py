"""Pass-through and pooling ops: ``skip``, ``maxpool``, ``avgpool``, ``adaptive_avg_pool``,
and the pooled head blocks ``ir_pool`` / ``ir_pool_hs`` (FBNetV2/V3's efficient last stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.rounding import round_channels
from fbnas.blocks.layers import (
    HW,
    ActSpec,
    ConvNormAct,
    ConvSpec,
    Cost,
    NormSpec,
    SESpec,
    TorchAdd,
    pool_out_hw,
    se_spec,
)
from fbnas.blocks.options import NamedArgs, named_args
from fbnas.blocks.registry import register_family

# --------------------------------------------------------------------------- skip


@dataclass(frozen=True)
class SkipOptions:
    """``skip`` takes no options; the ones the reference zoo writes on it are ignored."""


class SkipProjection(nn.Module):
    """A ``skip`` that changes width or stride: 1x1 conv -> BN -> ReLU in a child ``conv``."""

    def __init__(self, spec: ConvNormAct) -> None:
        super().__init__()
        self.conv = spec.build()
        self.out_channels = spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@dataclass(frozen=True)
class SkipPlan:
    in_channels: int
    out_channels: int
    projection: ConvNormAct | None

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        if self.projection is None:
            return Cost(), in_hw
        return self.projection.cost(in_hw)

    def build(self) -> nn.Module:
        if self.projection is None:
            return nn.Identity()
        return SkipProjection(self.projection)


def resolve_skip(in_channels: int, out_channels: int, stride: int,
                 options: dict[str, Any]) -> SkipPlan:
    """Identity, or a 1x1 projection (ReLU even in h-swish networks) when shapes change."""
    if stride < 0:
        raise ArchDefError(f"skip cannot upsample (stride {stride})", key="stride")
    if in_channels == out_channels and stride == 1:
        return SkipPlan(in_channels, out_channels, None)
    projection = ConvNormAct(ConvSpec(in_channels, out_channels, 1, stride, bias=False),
                             NormSpec("bn", out_channels), ActSpec("relu"))
    return SkipPlan(in_channels, out_channels, projection)


register_family("skip", SkipOptions, resolve_skip,
                ignored=("bias", "expansion", "less_se_channels", "zero_last_bn_gamma"),
                description="identity, or 1x1 conv -> BN -> ReLU when width/stride change")

# --------------------------------------------------------------------------- plain pools


@dataclass(frozen=True)
class MaxPoolOptions:
    kernel_size: int = 3
    padding: int = 0


@dataclass(frozen=True)
class AvgPoolOptions:
    kernel_size: int = 2
    padding: int = 0


@dataclass(frozen=True)
class AdaptivePoolOptions:
    output_size: int = 1


@dataclass(frozen=True)
class PoolPlan:
    """A bare pooling module; channels pass through unchanged."""

    kind: str  # "max" | "avg" | "adaptive"
    out_channels: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        if self.kind == "adaptive":
            return Cost(), (self.kernel_size, self.kernel_size)
        return Cost(), pool_out_hw(in_hw, self.kernel_size, self.stride, self.padding)

    def build(self) -> nn.Module:
        if self.kind == "max":
            return nn.MaxPool2d(self.kernel_size, self.stride, self.padding)
        if self.kind == "avg":
            return nn.AvgPool2d(self.kernel_size, self.stride, self.padding)
        return nn.AdaptiveAvgPool2d(self.kernel_size)


def _pool_channels(in_channels: int, out_channels: int, stride: int) -> None:
    if out_channels != in_channels:
        raise ArchDefError(f"a pool passes its {in_channels} input channels through; "
                           f"out_channels must equal them, got {out_channels}",
                           key="out_channels")
    if stride < 1:
        raise ArchDefError(f"a pool needs a positive stride, got {stride}", key="stride")


def _resolve_window_pool(kind: str):
    def resolve(in_channels: int, out_channels: int, stride: int,
                options: dict[str, Any]) -> PoolPlan:
        _pool_channels(in_channels, out_channels, stride)
        k, p = options["kernel_size"], options["padding"]
        if k < 1 or p < 0 or p > k // 2:
            raise ArchDefError(f"pool kernel_size must be >= 1 and padding in [0, k // 2], "
                               f"got kernel_size={k}, padding={p}", key="padding")
        return PoolPlan(kind, in_channels, k, stride, p)

    return resolve


def resolve_adaptive_pool(in_channels: int, out_channels: int, stride: int,
                          options: dict[str, Any]) -> PoolPlan:
    _pool_channels(in_channels, out_channels, stride)
    if options["output_size"] < 1:
        raise ArchDefError(f"output_size must be >= 1, got {options['output_size']}",
                           key="output_size")
    return PoolPlan("adaptive", in_channels, options["output_size"])


register_family("maxpool", MaxPoolOptions, _resolve_window_pool("max"),
                description="max pool (stride = block stride); channels pass through")
register_family("avgpool", AvgPoolOptions, _resolve_window_pool("avg"),
                description="average pool (stride = block stride); channels pass through")
register_family("adaptive_avg_pool", AdaptivePoolOptions, resolve_adaptive_pool,
                description="adaptive average pool to output_size; channels pass through")

# --------------------------------------------------------------------------- ir_pool


@dataclass(frozen=True)
class IRPoolOptions:
    """Options of the pooled head block. Its convs never have a bias.

    ``mid_channels`` (an fbnas option) replaces ``round_channels(in * expansion)`` as the
    hidden width, for subnets extracted from slimmable networks (:mod:`fbnas.slim`).
    """

    expansion: float = 6
    kernel_size: int = -1
    width_divisor: int = 8
    relu_args: NamedArgs = "relu"
    bn_args: NamedArgs = "bn"
    se_args: NamedArgs = None
    pw_se_args: NamedArgs = None
    mid_channels: int | None = None


@dataclass(frozen=True)
class IRPoolPlan:
    in_channels: int
    out_channels: int
    pw: ConvNormAct
    pw_se: SESpec | None
    pool_kernel: int
    se: SESpec | None
    pwl: ConvNormAct
    residual: bool

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        total, hw = self.pw.cost(in_hw)
        if self.pw_se is not None:
            total += self.pw_se.cost
        if self.pool_kernel == -1:
            hw = (1, 1)
        else:
            hw = pool_out_hw(hw, self.pool_kernel, self.pool_kernel, 0)
        if self.se is not None:
            total += self.se.cost
        cost, hw = self.pwl.cost(hw)
        return total + cost, hw

    def build(self) -> IRPoolBlock:
        return IRPoolBlock(self)


class IRPoolBlock(nn.Module):
    """pw 1x1 (BN, act) -> [pw_se] -> pool ``dw`` -> [se] -> pwl 1x1 (no BN, act, no bias)."""

    def __init__(self, plan: IRPoolPlan) -> None:
        super().__init__()
        self.out_channels = plan.out_channels
        self.pw = plan.pw.build()
        if plan.pw_se is not None:
            self.pw_se = plan.pw_se.build()
        self.dw = (nn.AdaptiveAvgPool2d(1) if plan.pool_kernel == -1
                   else nn.AvgPool2d(plan.pool_kernel))
        if plan.se is not None:
            self.se = plan.se.build()
        self.pwl = plan.pwl.build()
        self.res_conn = TorchAdd() if plan.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in ("pw", "pw_se", "dw", "se", "pwl"):
            part = getattr(self, name, None)
            if part is not None:
                y = part(y)
        if self.res_conn is not None and y.shape == x.shape:
            y = self.res_conn(y, x)
        return y


def resolve_ir_pool(in_channels: int, out_channels: int, stride: int,
                    options: dict[str, Any]) -> IRPoolPlan:
    """mid = round_channels(in * expansion) or ``mid_channels``; SE widths
    round_channels(int(mid * 0.25))."""
    divisor = options["width_divisor"]
    if options["expansion"] <= 0:
        raise ArchDefError(f"expansion must be > 0, got {options['expansion']}",
                           key="expansion")
    if divisor < 1:
        raise ArchDefError(f"width_divisor must be >= 1, got {divisor}", key="width_divisor")
    k = options["kernel_size"]
    if k != -1 and k < 1:
        raise ArchDefError(f"kernel_size must be -1 (global pool) or >= 1, got {k}",
                           key="kernel_size")
    act = ActSpec.from_args(named_args(options["relu_args"], "relu_args"), "relu_args")
    mid = round_channels(in_channels * options["expansion"], divisor)
    if options["mid_channels"] is not None:
        if options["mid_channels"] < 1:
            raise ArchDefError(f"mid_channels must be >= 1, got {options['mid_channels']}",
                               key="mid_channels")
        mid = options["mid_channels"]
    pw = ConvNormAct(ConvSpec(in_channels, mid, 1, bias=False),
                     NormSpec.from_args(named_args(options["bn_args"], "bn_args"), mid,
                                        "bn_args"), act)
    hidden = round_channels(int(mid * 0.25), divisor)
    pw_se = se_spec(named_args(options["pw_se_args"], "pw_se_args"), mid, hidden, act,
                    "pw_se_args")
    se = se_spec(named_args(options["se_args"], "se_args"), mid, hidden, act)
    pwl = ConvNormAct(ConvSpec(mid, out_channels, 1, bias=False), None, act)
    return IRPoolPlan(in_channels, out_channels, pw, pw_se, k, se, pwl,
                      residual=in_channels == out_channels and stride == 1)


_IR_POOL_IGNORED = ("less_se_channels", "zero_last_bn_gamma")
register_family("ir_pool", IRPoolOptions, resolve_ir_pool, ignored=_IR_POOL_IGNORED,
                description="pooled head: pw 1x1 -> global pool -> pwl 1x1 (ReLU)")
register_family("ir_pool_hs", IRPoolOptions, resolve_ir_pool, ignored=_IR_POOL_IGNORED,
                defaults={"relu_args": "hswish"},
                description="pooled head: pw 1x1 -> global pool -> pwl 1x1 (h-swish)")
