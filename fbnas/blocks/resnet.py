"""ResNet blocks: ``res_k3`` (BasicBlock, ResNet18/34) and ``res_block_k3`` (Bottleneck).

Two options are fbnas's own, not the reference's, for subnets extracted from slimmable
networks (:mod:`fbnas.slim`): ``mid_channels`` sets the inner width (the first conv's output;
by default ``out`` for the basic block and ``int(out * 0.25)`` for the bottleneck), and
``always_projection`` keeps the 1x1 shortcut conv even when the input and output shapes
agree (a slimmed block whose input and output widths happen to coincide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.blocks.layers import HW, ActSpec, ConvNormAct, ConvSpec, Cost, NormSpec, TorchAdd
from fbnas.blocks.options import NamedArgs, named_args
from fbnas.blocks.registry import register_family


@dataclass(frozen=True)
class BasicBlockOptions:
    bias: bool = False
    bn_args: NamedArgs = "bn"
    relu_args: NamedArgs = "relu"
    bn_in_skip: bool = True
    bias_in_skip: bool = False
    downsample_in_conv2: bool = False
    mid_channels: int | None = None
    always_projection: bool = False


@dataclass(frozen=True)
class BottleneckOptions:
    bias: bool = False
    bn_args: NamedArgs = "bn"
    relu_args: NamedArgs = "relu"
    bn_in_skip: bool = True
    mid_channels: int | None = None
    always_projection: bool = False


@dataclass(frozen=True)
class ResidualPlan:
    """A chain of convs plus a shortcut (``skip``/``downsample``), an add and an activation."""

    out_channels: int
    convs: tuple[tuple[str, ConvNormAct], ...]
    shortcut_name: str
    shortcut: ConvNormAct | None
    act: ActSpec | None

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        total, hw = Cost(), in_hw
        for _, conv in self.convs:
            cost, hw = conv.cost(hw)
            total += cost
        if self.shortcut is not None:
            total += self.shortcut.cost(in_hw)[0]
        if self.act is not None:
            total += Cost(self.act.params(self.out_channels))
        return total, hw

    def build(self) -> ResidualBlock:
        return ResidualBlock(self)


class ResidualBlock(nn.Module):
    """convs -> add shortcut -> act; children ``conv1..``, ``skip``/``downsample``, ``add``,
    ``relu`` as in the reference."""

    def __init__(self, plan: ResidualPlan) -> None:
        super().__init__()
        self.out_channels = plan.out_channels
        self.conv_names = [name for name, _ in plan.convs]
        for name, conv in plan.convs:
            self.add_module(name, conv.build())
        self.shortcut_name = plan.shortcut_name
        if plan.shortcut is not None:
            self.add_module(plan.shortcut_name, plan.shortcut.build())
        self.add = TorchAdd()
        if plan.act is not None:
            self.relu = plan.act.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self.conv_names:
            y = getattr(self, name)(y)
        shortcut = getattr(self, self.shortcut_name, None)
        y = self.add(y, shortcut(x) if shortcut is not None else x)
        relu = getattr(self, "relu", None)
        return relu(y) if relu is not None else y


def _norm_act(options: dict[str, Any], channels: int) -> tuple[NormSpec | None, ActSpec | None]:
    norm = NormSpec.from_args(named_args(options["bn_args"], "bn_args"), channels, "bn_args")
    act = ActSpec.from_args(named_args(options["relu_args"], "relu_args"), "relu_args")
    return norm, act


def _positive_stride(stride: int) -> None:
    if stride < 1:
        raise ArchDefError(f"ResNet blocks need a positive stride, got {stride}", key="stride")


def _mid_channels(options: dict[str, Any], default: int) -> int:
    mid = options["mid_channels"]
    if mid is None:
        return default
    if mid < 1:
        raise ArchDefError(f"mid_channels must be >= 1, got {mid}", key="mid_channels")
    return mid


def _needs_projection(in_channels: int, out_channels: int, stride: int,
                      options: dict[str, Any]) -> bool:
    return in_channels != out_channels or stride != 1 or options["always_projection"]


def resolve_basic(in_channels: int, out_channels: int, stride: int,
                  options: dict[str, Any]) -> ResidualPlan:
    """3x3 (stride) -> BN -> act -> 3x3 -> BN, + 1x1 projection when shapes change.

    The first conv's width is ``out_channels`` unless ``mid_channels`` sets it.
    """
    _positive_stride(stride)
    mid = _mid_channels(options, out_channels)
    norm, act = _norm_act(options, out_channels)
    norm_mid, _ = _norm_act(options, mid)
    s1, s2 = (1, stride) if options["downsample_in_conv2"] else (stride, 1)
    bias = options["bias"]
    conv1 = ConvNormAct(ConvSpec(in_channels, mid, 3, s1, 1, bias=bias), norm_mid, act)
    conv2 = ConvNormAct(ConvSpec(mid, out_channels, 3, s2, 1, bias=bias), norm, None)
    skip = None
    if _needs_projection(in_channels, out_channels, stride, options):
        skip = ConvNormAct(ConvSpec(in_channels, out_channels, 1, stride,
                                    bias=options["bias_in_skip"]),
                           norm if options["bn_in_skip"] else None, None)
    return ResidualPlan(out_channels, (("conv1", conv1), ("conv2", conv2)), "skip", skip, act)


def resolve_bottleneck(in_channels: int, out_channels: int, stride: int,
                       options: dict[str, Any]) -> ResidualPlan:
    """1x1 -> 3x3 (stride) -> 1x1 at width int(out * 0.25) (or ``mid_channels``), + 1x1
    ``downsample``."""
    _positive_stride(stride)
    width = _mid_channels(options, int(out_channels * 0.25))
    if width < 1:
        raise ArchDefError(f"a bottleneck needs out_channels >= 4, got {out_channels}",
                           key="out_channels")
    bias = options["bias"]
    norm_w, act = _norm_act(options, width)
    norm_out, _ = _norm_act(options, out_channels)
    conv1 = ConvNormAct(ConvSpec(in_channels, width, 1, bias=bias), norm_w, act)
    conv2 = ConvNormAct(ConvSpec(width, width, 3, stride, 1, bias=bias), norm_w, act)
    conv3 = ConvNormAct(ConvSpec(width, out_channels, 1, bias=bias), norm_out, None)
    downsample = None
    if _needs_projection(in_channels, out_channels, stride, options):
        downsample = ConvNormAct(ConvSpec(in_channels, out_channels, 1, stride, bias=False),
                                 norm_out if options["bn_in_skip"] else None, None)
    return ResidualPlan(out_channels, (("conv1", conv1), ("conv2", conv2), ("conv3", conv3)),
                        "downsample", downsample, act)


register_family("res_k3", BasicBlockOptions, resolve_basic,
                description="ResNet basic block: two 3x3 convs + shortcut")
register_family("res_block_k3", BottleneckOptions, resolve_bottleneck,
                description="ResNet bottleneck: 1x1 -> 3x3 -> 1x1 (width out/4) + shortcut")
