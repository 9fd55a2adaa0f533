"""Layer specs shared by every block family: one source for building and for costing.

A block family resolves its options into these frozen specs (conv shapes, norm, activation,
SE). The same spec builds the ``nn.Module`` and computes params/MACs analytically, so the
analytic cost (used by search on millions of candidates) cannot drift from what is built.

Module and child names follow the reference builder (``conv``/``bn``/``relu``,
``se.se.0.conv``...), so reference checkpoints load by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import FrozenKwargs, thaw
from fbnas.blocks.options import matches, type_name

HW = tuple[int, int]


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates (conv/linear only, as the reference counts)."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)


def pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


# --------------------------------------------------------------------------- activations


class HSwish(nn.Module):
    """x * relu6(x + 3) / 6 (MobileNetV3); child ``relu`` as in the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.relu(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    """relu6(x + 3) / 6, the hard sigmoid gate of FBNetV2/V3 SE blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3.0) / 6.0


class Swish(nn.Module):
    """x * sigmoid(x) (EfficientNet); child ``sig`` as in the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sig(x)


# name -> (module factory(**options), params(channels, **options), option name -> type)
_ACTIVATIONS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "relu": (lambda: nn.ReLU(inplace=True), lambda c: 0, {}),
    "relu6": (lambda: nn.ReLU6(inplace=True), lambda c: 0, {}),
    "leakyrelu": (lambda negative_slope=0.01: nn.LeakyReLU(negative_slope, inplace=True),
                  lambda c, negative_slope=0.01: 0, {"negative_slope": float}),
    "prelu": (lambda num_parameters=1: nn.PReLU(num_parameters),
              lambda c, num_parameters=1: num_parameters, {"num_parameters": int}),
    "hswish": (HSwish, lambda c: 0, {}),
    "swish": (Swish, lambda c: 0, {}),
    "sig": (nn.Sigmoid, lambda c: 0, {}),
    "hsig": (HSigmoid, lambda c: 0, {}),
    "gelu": (nn.GELU, lambda c: 0, {}),
    "identity": (nn.Identity, lambda c: 0, {}),
}
ACTIVATION_NAMES = tuple(sorted(_ACTIVATIONS))

# Value ranges of activation/norm options, checked after their types.
_OPTION_RANGES: dict[str, tuple[Any, str]] = {
    "num_parameters": (lambda v: v >= 1, ">= 1"),
    "eps": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: v is None or 0 <= v <= 1, "in [0, 1] or null"),
    "num_groups": (lambda v: v >= 1, ">= 1"),
}


def _check_layer_options(
    kind: str, name: str, options: Mapping[str, Any], types: Mapping[str, Any], key: str
) -> None:
    """Checks the options of an activation/norm: known names, types and value ranges."""
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise ArchDefError(f"{kind} {name!r} has no option {unknown[0]!r}",
                           key=f"{key}.{unknown[0]}")
    for option, value in options.items():
        annotation = types[option]
        if not matches(value, annotation):
            raise ArchDefError(f"{kind} {name!r} option {option!r} must be "
                               f"{type_name(annotation)}, got {thaw(value)!r}",
                               key=f"{key}.{option}")
        check, wanted = _OPTION_RANGES.get(option, (None, ""))
        if check is not None and not check(value):
            raise ArchDefError(f"{kind} {name!r} option {option!r} must be {wanted}, got "
                               f"{value!r}", key=f"{key}.{option}")


@dataclass(frozen=True)
class ActSpec:
    """An activation by name with its options (``{"name": "leakyrelu", "negative_slope": .1}``)."""

    name: str
    options: FrozenKwargs = FrozenKwargs()

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None, key: str) -> ActSpec | None:
        if args is None:
            return None
        options = {k: v for k, v in args.items() if k != "name"}
        entry = _ACTIVATIONS.get(args["name"])
        if entry is None:
            raise ArchDefError(f"unknown activation {args['name']!r} in {key!r} "
                               f"(known: {', '.join(ACTIVATION_NAMES)})", key=key)
        _check_layer_options("activation", args["name"], options, entry[2], key)
        return cls(args["name"], FrozenKwargs(options))

    def build(self) -> nn.Module:
        return _ACTIVATIONS[self.name][0](**thaw(self.options))

    def params(self, channels: int) -> int:
        return _ACTIVATIONS[self.name][1](channels, **thaw(self.options))


# --------------------------------------------------------------------------- norms

_NORMS: dict[str, dict[str, Any]] = {
    "bn": {"momentum": float | None, "eps": float},
    "sync_bn": {"momentum": float | None, "eps": float},
    "gn": {"num_groups": int, "eps": float},
    "instance": {"eps": float, "momentum": float | None},
}
NORM_NAMES = tuple(sorted(_NORMS))


@dataclass(frozen=True)
class NormSpec:
    """A normalisation layer over ``channels`` (all kinds affine: 2 params per channel)."""

    name: str
    channels: int
    options: FrozenKwargs = FrozenKwargs()
    zero_init: bool = False

    @staticmethod
    def check_args(args: Mapping[str, Any] | None, key: str) -> None:
        """Checks a norm's name and options, for blocks that may end up without a norm."""
        if args is None:
            return
        name = args["name"]
        if name not in _NORMS:
            raise ArchDefError(f"unknown norm {name!r} in {key!r} (known: "
                               f"{', '.join(NORM_NAMES)})", key=key)
        options = {k: v for k, v in args.items() if k != "name"}
        _check_layer_options("norm", name, options, _NORMS[name], key)

    @classmethod
    def from_args(
        cls, args: Mapping[str, Any] | None, channels: int, key: str, zero_init: bool = False
    ) -> NormSpec | None:
        if args is None:
            return None
        cls.check_args(args, key)
        name = args["name"]
        options = {k: v for k, v in args.items() if k != "name"}
        if name == "gn":
            groups = options.get("num_groups")
            if not isinstance(groups, int) or groups <= 0 or channels % groups:
                raise ArchDefError(f"group norm needs num_groups dividing {channels} "
                                   f"channels, got {groups!r}", key=f"{key}.num_groups")
        return cls(name, channels, FrozenKwargs(options), zero_init)

    def build(self) -> nn.Module:
        opts = thaw(self.options)
        if self.name == "bn":
            module: nn.Module = nn.BatchNorm2d(self.channels, **opts)
        elif self.name == "sync_bn":
            module = nn.SyncBatchNorm(self.channels, **opts)
        elif self.name == "gn":
            module = nn.GroupNorm(opts.pop("num_groups"), self.channels, **opts)
        else:
            module = nn.InstanceNorm2d(self.channels, affine=True, **opts)
        if self.zero_init:
            nn.init.zeros_(module.weight)
        return module

    @property
    def params(self) -> int:
        return 2 * self.channels


# --------------------------------------------------------------------------- convolutions


@dataclass(frozen=True)
class ConvSpec:
    """The shape of one ``nn.Conv2d``: everything that decides its params and MACs."""

    in_channels: int
    out_channels: int
    kernel_size: HW = (1, 1)
    stride: HW = (1, 1)
    padding: HW = (0, 0)
    dilation: HW = (1, 1)
    groups: int = 1
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("kernel_size", "stride", "padding", "dilation"):
            object.__setattr__(self, name, pair(getattr(self, name)))
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ArchDefError(
                f"a conv {self.in_channels}->{self.out_channels} cannot have {self.groups} "
                f"groups: both channel counts must be divisible by it", key="groups")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ArchDefError(f"conv kernel/stride/dilation must be >= 1, got "
                               f"k={self.kernel_size} s={self.stride} d={self.dilation}",
                               key="kernel_size")
        if min(self.padding) < 0:
            raise ArchDefError(f"conv padding must be >= 0, got {self.padding}", key="padding")

    def out_hw(self, hw: HW) -> HW:
        out = tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip(hw, self.kernel_size, self.stride, self.padding,
                                        self.dilation, strict=False)
        )
        if min(out) < 1:
            raise ArchDefError(f"input {hw[0]}x{hw[1]} is too small for a {self.kernel_size} "
                               f"conv with stride {self.stride} and padding {self.padding}",
                               key="resolution")
        return out  # type: ignore[return-value]

    @property
    def keeps_size(self) -> bool:
        """Whether every input size comes out unchanged (stride 1, "same" padding)."""
        return all(s == 1 and 2 * p == d * (k - 1) for k, s, p, d in zip(
            self.kernel_size, self.stride, self.padding, self.dilation, strict=True))

    @property
    def weight_numel(self) -> int:
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw

    @property
    def params(self) -> int:
        return self.weight_numel + (self.out_channels if self.bias else 0)

    def cost(self, hw: HW) -> tuple[Cost, HW]:
        out = self.out_hw(hw)
        return Cost(self.params, self.weight_numel * out[0] * out[1]), out

    def build(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return conv


class ConvBNRelu(nn.Module):
    """conv -> [norm] -> [act] -> [upsample]; children ``conv``, ``bn``, ``relu``, ``upsample``."""

    def __init__(self, spec: ConvNormAct) -> None:
        super().__init__()
        self.conv = spec.conv.build()
        if spec.norm is not None:
            self.bn = spec.norm.build()
        if spec.act is not None:
            self.relu = spec.act.build()
        if spec.upsample > 1:
            self.upsample = nn.Upsample(scale_factor=spec.upsample, mode="nearest")
        self.out_channels = spec.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        return x


@dataclass(frozen=True)
class ConvNormAct:
    """Spec of a :class:`ConvBNRelu`: a conv, an optional norm and activation, then an
    optional nearest upsampling (a negative block stride)."""

    conv: ConvSpec
    norm: NormSpec | None = None
    act: ActSpec | None = None
    upsample: int = 1

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def cost(self, hw: HW) -> tuple[Cost, HW]:
        cost, hw = self.conv.cost(hw)
        if self.norm is not None:
            cost += Cost(self.norm.params)
        if self.act is not None:
            cost += Cost(self.act.params(self.conv.out_channels))
        return cost, (hw[0] * self.upsample, hw[1] * self.upsample)

    def build(self) -> ConvBNRelu:
        return ConvBNRelu(self)


# --------------------------------------------------------------------------- squeeze-excite

SE_GATES = {"se": "sig", "se_hsig": "hsig"}


class SEModule(nn.Module):
    """Squeeze-and-excitation: avg pool -> 1x1 conv (bias) -> act -> 1x1 conv (bias) -> gate."""

    def __init__(self, spec: SESpec) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        reduce = ConvNormAct(ConvSpec(spec.channels, spec.hidden, bias=True), act=spec.act)
        # The expanding conv keeps PyTorch's default init, as the reference does.
        expand = nn.Conv2d(spec.hidden, spec.channels, 1, bias=True)
        self.se = nn.Sequential(reduce.build(), expand, ActSpec(spec.gate).build())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(self.avg_pool(x))


@dataclass(frozen=True)
class SESpec:
    """An SE over ``channels`` with ``hidden`` reduced width; ``gate`` is ``sig`` or ``hsig``."""

    channels: int
    hidden: int
    act: ActSpec | None
    gate: str = "sig"

    @property
    def cost(self) -> Cost:
        params = 2 * self.channels * self.hidden + self.hidden + self.channels
        if self.act is not None:
            params += self.act.params(self.hidden)
        return Cost(params, 2 * self.channels * self.hidden)

    def build(self) -> SEModule:
        return SEModule(self)


class ESEModule(nn.Module):
    """Effective squeeze-excitation (VoVNetV2's eSE, as PFLD's NNI example uses it): pool ->
    1x1 conv C->C with bias (no reduction) -> hard-sigmoid gate -> multiply.

    The pooling is a depthwise ``fm_size`` x ``fm_size`` conv over the whole map (a learned
    weighted average, the seed's choice, which mobile runtimes run as one conv) or, with
    ``pool="avg"``, a global average pool.
    """

    def __init__(self, spec: ESESpec) -> None:
        super().__init__()
        if spec.pool == "dw":
            self.pool: nn.Module = ConvSpec(spec.channels, spec.channels, spec.fm_size,
                                            groups=spec.channels).build()
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(spec.channels, spec.channels, 1, bias=True)
        self.gate = HSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(self.pool(x)))  # (N, C, H, W) * (N, C, 1, 1)


@dataclass(frozen=True)
class ESESpec:
    """An eSE over ``channels``: ``pool`` is ``dw`` (a depthwise ``fm_size``-square conv,
    which needs the feature size the block sees) or ``avg`` (global average pooling)."""

    channels: int
    pool: str = "dw"
    fm_size: int | None = None

    @property
    def cost(self) -> Cost:
        fc = self.channels * self.channels
        params, macs = fc + self.channels, fc
        if self.pool == "dw":
            pool = self.channels * int(self.fm_size or 0) ** 2
            params, macs = params + pool, macs + pool
        return Cost(params, macs)

    def build(self) -> ESEModule:
        return ESEModule(self)


ESE = "ese"
"""The eSE's name in ``se_args`` (``{"name": "ese", "fm_size": 14}``)."""


def _ese_spec(se_args: Mapping[str, Any], channels: int, key: str) -> ESESpec:
    unknown = sorted(set(se_args) - {"name", "pool", "fm_size"})
    if unknown:
        raise ArchDefError(f"eSE has no option {unknown[0]!r} (accepted: fm_size, pool)",
                           key=f"{key}.{unknown[0]}")
    pool = se_args.get("pool", "dw")
    if pool not in ("dw", "avg"):
        raise ArchDefError(f"eSE pool must be 'dw' or 'avg', got {pool!r}", key=f"{key}.pool")
    fm_size = se_args.get("fm_size")
    if pool == "dw" and (isinstance(fm_size, bool) or not isinstance(fm_size, int)
                         or fm_size < 1):
        raise ArchDefError(f"eSE pooling with a depthwise conv needs the feature size the "
                           f"block sees: set {key}.fm_size (an int >= 1, got {fm_size!r}) "
                           f"or pool='avg'", key=f"{key}.fm_size")
    return ESESpec(channels, pool, fm_size if pool == "dw" else None)


def se_spec(
    se_args: Mapping[str, Any] | None, channels: int, hidden: int, block_act: ActSpec | None,
    key: str = "se_args",
) -> SESpec | ESESpec | None:
    """Resolves ``se_args`` (``"se"``, ``"se_hsig"`` or a dict with ``relu_args``; or
    ``{"name": "ese", "fm_size": F}``, the unreduced eSE)."""
    if se_args is None:
        return None
    name = se_args["name"]
    if name == ESE:
        return _ese_spec(se_args, channels, key)
    if name not in SE_GATES:
        raise ArchDefError(f"unknown SE type {name!r} (known: {', '.join([*SE_GATES, ESE])})",
                           key=key)
    unknown = sorted(set(se_args) - {"name", "relu_args"})
    if unknown:
        raise ArchDefError(f"SE has no option {unknown[0]!r}", key=f"{key}.{unknown[0]}")
    act = block_act
    if "relu_args" in se_args:
        from fbnas.blocks.options import named_args

        act = ActSpec.from_args(named_args(se_args["relu_args"], f"{key}.relu_args"),
                                f"{key}.relu_args")
    if hidden < 1:
        raise ArchDefError(f"SE width must be >= 1, got {hidden}", key=key)
    return SESpec(channels, hidden, act, SE_GATES[name])


# --------------------------------------------------------------------------- small modules


class ChannelShuffle(nn.Module):
    """Interleaves channel groups (ShuffleNet), after grouped pointwise convs."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Shuffle within each pixel's channel vector so the result stays channels_last:
            # an NCHW result here makes every following op run with mismatched layouts
            # (the supernet's step got several times slower on such layers).
            nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, g, c // g).transpose(3, 4)
            return nhwc.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class TorchAdd(nn.Module):
    """Residual addition, with optional drop-connect (stochastic depth) while training."""

    def __init__(self, drop_connect_rate: float | None = None) -> None:
        super().__init__()
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_connect_rate:
            keep = 1.0 - self.drop_connect_rate
            mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
            x = x * mask.bernoulli_(keep) / keep
        return x + y


def pool_out_hw(hw: HW, kernel: int, stride: int, padding: int) -> HW:
    """Output size of a (max/avg) pool without ceil mode."""
    out = tuple((size + 2 * padding - kernel) // stride + 1 for size in hw)
    if min(out) < 1:
        raise ArchDefError(f"input {hw[0]}x{hw[1]} is too small for a pool of kernel {kernel}",
                           key="resolution")
    return out  # type: ignore[return-value]


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
