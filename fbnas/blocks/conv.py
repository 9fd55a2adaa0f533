"""The conv family: ``conv``, ``conv_k{1,3,5,7}`` and their ``_hs`` variants (ConvBNRelu)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fbnas.blocks.layers import ActSpec, ConvNormAct, ConvSpec, NormSpec
from fbnas.blocks.options import NamedArgs, named_args
from fbnas.blocks.registry import register_family


@dataclass(frozen=True)
class ConvOptions:
    """Options of a conv block.

    ``bias`` defaults to True even before the norm, as in the reference (FBNet stems and
    ``conv_k1`` heads have biases). Plain ``conv`` defaults to a 1x1 kernel and padding 0;
    the ``conv_kN`` ops fix kernel N and padding N // 2.
    """

    kernel_size: int = 1
    padding: int | tuple[int, int] = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    bn_args: NamedArgs = "bn"
    relu_args: NamedArgs = "relu"


def resolve_conv(in_channels: int, out_channels: int, stride: int,
                 options: dict[str, Any]) -> ConvNormAct:
    """conv (stride |s|, or 1 then x|s| nearest upsampling when s < 0) -> norm -> act."""
    conv = ConvSpec(in_channels, out_channels, options["kernel_size"], max(stride, 1),
                    options["padding"], options["dilation"], options["groups"],
                    options["bias"])
    norm = NormSpec.from_args(named_args(options["bn_args"], "bn_args"), out_channels, "bn_args")
    act = ActSpec.from_args(named_args(options["relu_args"], "relu_args"), "relu_args")
    return ConvNormAct(conv, norm, act, upsample=-stride if stride < 0 else 1)


register_family("conv", ConvOptions, resolve_conv,
                description="conv -> BN -> ReLU, kernel and padding from options")
for _k in (1, 3, 5, 7):
    register_family(f"conv_k{_k}", ConvOptions, resolve_conv,
                    fixed={"kernel_size": _k, "padding": _k // 2},
                    description=f"{_k}x{_k} conv -> BN -> ReLU")
for _k in (None, 1, 3, 5):
    _name = "conv_hs" if _k is None else f"conv_k{_k}_hs"
    register_family(_name, ConvOptions, resolve_conv,
                    fixed={} if _k is None else {"kernel_size": _k, "padding": _k // 2},
                    defaults={"relu_args": "hswish"},
                    description="conv -> BN -> h-swish")
