"""Two small families of PFLD's search space (ALGORITHMS.md §5.2): ``sep_kK`` and ``gh_kK``.

* ``sep_kK``: a separable conv — depthwise KxK (block stride) -> BN -> act, then 1x1 -> BN
  -> act. Unlike an inverted residual it has no expansion, no residual and ends in an
  activation.
* ``gh_kK``: a Ghost module (GhostNet's "cheap operations") — a 1x1 conv with the block
  stride to half the output width (the "primary" features), a depthwise KxK conv on them
  (the "ghost" features), both with BN and act, concatenated to the output width.

Both are specs that build and cost from the same :class:`fbnas.blocks.layers.ConvNormAct`,
so the analytic cost cannot drift from the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.blocks.layers import HW, ActSpec, ConvNormAct, ConvSpec, Cost, NormSpec
from fbnas.blocks.options import NamedArgs, named_args
from fbnas.blocks.registry import register_family


@dataclass(frozen=True)
class LightOptions:
    """Options of ``sep_kK`` and ``gh_kK`` (the kernel is fixed by the name)."""

    kernel_size: int = 3
    bias: bool = False
    relu_args: NamedArgs = "relu"
    bn_args: NamedArgs = "bn"


def _parts(options: dict[str, Any]) -> tuple[ActSpec | None, Any]:
    act = ActSpec.from_args(named_args(options["relu_args"], "relu_args"), "relu_args")
    bn_args = named_args(options["bn_args"], "bn_args")
    NormSpec.check_args(bn_args, "bn_args")
    return act, bn_args


def _stride(stride: int) -> int:
    if stride < 1:
        raise ArchDefError(f"this op has no upsampling: stride must be >= 1, got {stride}",
                           key="stride")
    return stride


class Sequence2(nn.Module):
    """Two convs in a row, children ``dw``/``pw`` (``sep``)."""

    def __init__(self, plan: SepPlan) -> None:
        super().__init__()
        self.out_channels = plan.out_channels
        self.dw = plan.dw.build()
        self.pw = plan.pw.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


@dataclass(frozen=True)
class SepPlan:
    """A resolved separable conv."""

    dw: ConvNormAct
    pw: ConvNormAct

    @property
    def out_channels(self) -> int:
        return self.pw.out_channels

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        first, hw = self.dw.cost(in_hw)
        second, hw = self.pw.cost(hw)
        return first + second, hw

    def build(self) -> nn.Module:
        return Sequence2(self)


def resolve_sep(in_channels: int, out_channels: int, stride: int,
                options: dict[str, Any]) -> SepPlan:
    """dw KxK (stride) -> BN -> act -> 1x1 -> BN -> act."""
    act, bn_args = _parts(options)
    k = options["kernel_size"]
    dw = ConvNormAct(ConvSpec(in_channels, in_channels, k, _stride(stride), k // 2, 1,
                              in_channels, options["bias"]),
                     NormSpec.from_args(bn_args, in_channels, "bn_args"), act)
    pw = ConvNormAct(ConvSpec(in_channels, out_channels, bias=options["bias"]),
                     NormSpec.from_args(bn_args, out_channels, "bn_args"), act)
    return SepPlan(dw, pw)


class GhostModule(nn.Module):
    """``cat(primary(x), cheap(primary(x)))``: children ``primary`` and ``cheap``."""

    def __init__(self, plan: GhostPlan) -> None:
        super().__init__()
        self.out_channels = plan.out_channels
        self.primary = plan.primary.build()
        self.cheap = plan.cheap.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)  # (N, out / 2, H / s, W / s)
        return torch.cat([y, self.cheap(y)], dim=1)


@dataclass(frozen=True)
class GhostPlan:
    """A resolved Ghost module."""

    primary: ConvNormAct
    cheap: ConvNormAct

    @property
    def out_channels(self) -> int:
        return self.primary.out_channels + self.cheap.out_channels

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        first, hw = self.primary.cost(in_hw)
        second, hw = self.cheap.cost(hw)
        return first + second, hw

    def build(self) -> nn.Module:
        return GhostModule(self)


def resolve_ghost(in_channels: int, out_channels: int, stride: int,
                  options: dict[str, Any]) -> GhostPlan:
    """1x1 (stride) to out/2 -> BN -> act, then dw KxK on it -> BN -> act; concatenated."""
    if out_channels % 2:
        raise ArchDefError(f"a Ghost module needs an even output width, got {out_channels}",
                           key="out_channels")
    act, bn_args = _parts(options)
    k, half = options["kernel_size"], out_channels // 2
    primary = ConvNormAct(ConvSpec(in_channels, half, 1, _stride(stride), 0, 1, 1,
                                   options["bias"]),
                          NormSpec.from_args(bn_args, half, "bn_args"), act)
    cheap = ConvNormAct(ConvSpec(half, half, k, 1, k // 2, 1, half, options["bias"]),
                        NormSpec.from_args(bn_args, half, "bn_args"), act)
    return GhostPlan(primary, cheap)


for _k in (3, 5, 7):
    register_family(f"sep_k{_k}", LightOptions, resolve_sep, fixed={"kernel_size": _k},
                    description=f"separable conv: dw {_k}x{_k} -> BN -> act -> 1x1 -> BN -> act")
    register_family(f"gh_k{_k}", LightOptions, resolve_ghost, fixed={"kernel_size": _k},
                    description=f"Ghost module: 1x1 to out/2, dw {_k}x{_k} on it, concatenated")
