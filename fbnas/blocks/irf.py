"""The inverted-residual family (IRFBlock): MobileNetV2/V3, FBNet, EfficientNet, RegNet blocks.

Structure: ``pw`` 1x1 -> [``shuffle``] -> [``upsample``] -> ``dw`` kxk -> [``se``] -> ``pwl``
1x1 (norm, no act) -> [``res_conn`` add] -> [``relu`` after the add]. Options switch parts
off or reshape them, which is how one family covers FusedMBConv (``skip_dw`` + a 3x3
``pw_args``), RegNet's group convs (``dw_group_ratio``) and the ``_i8f`` variants
(``dw_skip_bnrelu``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.rounding import round_channels, round_half_away
from fbnas.arch.spec import thaw
from fbnas.blocks.layers import (
    HW,
    ActSpec,
    ChannelShuffle,
    ConvNormAct,
    ConvSpec,
    Cost,
    ESESpec,
    NormSpec,
    SESpec,
    TorchAdd,
    se_spec,
)
from fbnas.blocks.options import NamedArgs, OptionSchema, check_options, named_args
from fbnas.blocks.registry import register_family

ConvArgs = Mapping[str, Any] | None


@dataclass(frozen=True)
class ConvOverrides:
    """Keys allowed in ``pw_args`` / ``dw_args`` / ``pwl_args``."""

    kernel_size: int | None = None
    stride: int | None = None
    padding: int | tuple[int, int] | None = None
    dilation: int | None = None
    bias: bool | None = None


_CONV_OVERRIDES = OptionSchema.from_dataclass(ConvOverrides)


@dataclass(frozen=True)
class IRFOptions:
    """Options of an inverted-residual block (reference names and defaults).

    ``width_divisor`` defaults to 8 when a block is made directly; the builder always passes
    its own (1 unless ``basic_args`` say otherwise), as the reference does.

    ``mid_channels`` is an fbnas option, not a reference one: an explicit hidden width that
    replaces ``round_channels(in * expansion)``. Subnets extracted from slimmable networks
    (:mod:`fbnas.slim`) need it where no expansion ratio yields their hidden width (a width
    off the divisor grid, or an SE width tied to ``expansion`` by ``less_se_channels``, which
    keeps using ``expansion`` for its ratio).
    """

    expansion: float = 6
    kernel_size: int = 3
    bias: bool = False
    width_divisor: int = 8
    relu_args: NamedArgs = "relu"
    bn_args: NamedArgs = "bn"
    se_args: NamedArgs = None
    res_conn_args: NamedArgs = "default"
    round_se_channels: bool = False
    less_se_channels: bool = False
    drop_connect_rate: float | None = None
    pw_args: ConvArgs = None
    dw_args: ConvArgs = None
    pwl_args: ConvArgs = None
    pw_groups: int = 1
    pwl_groups: int = 1
    dw_group_ratio: int | None = None
    skip_dw: bool = False
    skip_pwl: bool = False
    skip_pwl_bn: bool = False
    dw_skip_bnrelu: bool = False
    always_pw: bool = False
    skip_shuffle: bool = False
    zero_last_bn_gamma: bool = False
    mid_expand_out: bool = False
    last_relu: bool = False
    mid_channels: int | None = None


@dataclass(frozen=True)
class IRFPlan:
    """A resolved inverted-residual block."""

    in_channels: int
    out_channels: int
    pw: ConvNormAct | None
    shuffle_groups: int
    upsample: int
    dw: ConvNormAct | None
    se: SESpec | None
    pwl: ConvNormAct | None
    residual: bool
    drop_connect_rate: float | None
    last_act: ActSpec | None
    se_act: ActSpec | None = None
    """The depthwise conv's activation when an eSE sits between its norm and it (PFLD's
    order: dw -> BN -> eSE -> act); None otherwise (the act is part of ``dw``)."""

    def cost(self, in_hw: HW) -> tuple[Cost, HW]:
        total, hw = Cost(), in_hw
        if self.pw is not None:
            cost, hw = self.pw.cost(hw)
            total += cost
        hw = (hw[0] * self.upsample, hw[1] * self.upsample)
        if self.dw is not None:
            cost, hw = self.dw.cost(hw)
            total += cost
        if self.se is not None:
            total += self.se.cost
        if self.pwl is not None:
            cost, hw = self.pwl.cost(hw)
            total += cost
        if self.last_act is not None:
            total += Cost(self.last_act.params(self.out_channels))
        return total, hw

    def build(self) -> IRFBlock:
        return IRFBlock(self)


class IRFBlock(nn.Module):
    """Inverted residual block built from an :class:`IRFPlan` (reference child names)."""

    def __init__(self, plan: IRFPlan) -> None:
        super().__init__()
        self.out_channels = plan.out_channels
        if plan.pw is not None:
            self.pw = plan.pw.build()
        if plan.shuffle_groups > 1:
            self.shuffle = ChannelShuffle(plan.shuffle_groups)
        if plan.upsample > 1:
            self.upsample = nn.Upsample(scale_factor=plan.upsample, mode="nearest")
        if plan.dw is not None:
            self.dw = plan.dw.build()
        if plan.se is not None:
            self.se = plan.se.build()
        if plan.se_act is not None:
            self.se_relu = plan.se_act.build()
        if plan.pwl is not None:
            self.pwl = plan.pwl.build()
        self.res_conn = TorchAdd(plan.drop_connect_rate) if plan.residual else None
        if plan.last_act is not None:
            self.relu = plan.last_act.build()

    def projection_input(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the 1x1 projection (``pwl``): the hidden activation it reads.

        The DNAS supernet runs the projection itself, with its mixture weight folded into BN.
        """
        for name in ("pw", "shuffle", "upsample", "dw", "se", "se_relu"):
            part = getattr(self, name, None)
            if part is not None:
                x = part(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.projection_input(x)
        pwl = getattr(self, "pwl", None)
        if pwl is not None:
            y = pwl(y)
        if self.res_conn is not None:
            y = self.res_conn(y, x)
        relu = getattr(self, "relu", None)
        return relu(y) if relu is not None else y


def _conv_overrides(options: dict[str, Any], key: str) -> dict[str, Any]:
    given = options[key] or {}
    checked = check_options(_CONV_OVERRIDES, given, prefix=f"{key}.")
    overrides = {k: v for k, v in checked.items() if v is not None}
    for name, value in overrides.items():
        if name == "bias":
            continue
        low = 0 if name == "padding" else 1
        if min(value if isinstance(value, (tuple, list)) else (value,)) < low:
            raise ArchDefError(f"{key}.{name} must be >= {low}, got {thaw(value)!r}",
                               key=f"{key}.{name}")
    return overrides


def resolve_irf(in_channels: int, out_channels: int, stride: int,
                options: dict[str, Any]) -> IRFPlan:
    """Resolves the widths and parts of an inverted-residual block.

    mid = round_channels((out if mid_expand_out else in) * expansion, width_divisor), or
    ``mid_channels`` when set; the pw conv is left out when mid == in (unless
    ``always_pw``); SE width = round_channels(int(mid * r)) with r = 0.25, or
    0.25 / expansion with ``less_se_channels`` (``round_se_channels`` uses round() instead
    of int()).
    """
    expansion = options["expansion"]
    divisor = options["width_divisor"]
    if expansion <= 0:
        raise ArchDefError(f"expansion must be > 0, got {expansion}", key="expansion")
    if divisor < 1:
        raise ArchDefError(f"width_divisor must be >= 1, got {divisor}", key="width_divisor")
    for key in ("pw_groups", "pwl_groups"):
        if options[key] < 1:
            raise ArchDefError(f"{key} must be >= 1, got {options[key]}", key=key)
    rate = options["drop_connect_rate"]
    if rate is not None and not 0 <= rate < 1:
        raise ArchDefError(f"drop_connect_rate must be in [0, 1), got {rate}",
                           key="drop_connect_rate")
    # Checked even where the part they configure is left out (e.g. no pw when mid == in).
    overrides = {key: _conv_overrides(options, key) for key in ("pw_args", "dw_args",
                                                                "pwl_args")}
    for fixed in ("kernel_size", "stride"):
        if fixed in overrides["dw_args"]:
            raise ArchDefError(f"dw_args.{fixed} is set by the op and the block stride",
                               key=f"dw_args.{fixed}")
    act = ActSpec.from_args(named_args(options["relu_args"], "relu_args"), "relu_args")
    bn_args = named_args(options["bn_args"], "bn_args")
    NormSpec.check_args(bn_args, "bn_args")
    bias = options["bias"]
    base = out_channels if options["mid_expand_out"] else in_channels
    mid = round_channels(base * expansion, divisor)
    if options["mid_channels"] is not None:
        if options["mid_channels"] < 1:
            raise ArchDefError(f"mid_channels must be >= 1, got {options['mid_channels']}",
                               key="mid_channels")
        mid = options["mid_channels"]

    res_args = named_args(options["res_conn_args"], "res_conn_args")
    if res_args is not None and res_args["name"] not in ("default", "projection"):
        raise ArchDefError(f"res_conn_args must be 'default', 'projection' or null, got "
                           f"{res_args['name']!r}", key="res_conn_args")
    if res_args is not None and len(res_args) > 1:
        extra = sorted(k for k in res_args if k != "name")[0]
        raise ArchDefError(f"res_conn_args has no option {extra!r}",
                           key=f"res_conn_args.{extra}")
    # 'projection' builds like 'default' in every reference model: an add only when shapes
    # already match, never a projection conv.
    residual = res_args is not None and in_channels == out_channels and stride == 1

    pw = None
    if mid != in_channels or options["always_pw"]:
        o = overrides["pw_args"]
        pw = ConvNormAct(
            ConvSpec(in_channels, mid, o.get("kernel_size", 1), o.get("stride", 1),
                     o.get("padding", 0), o.get("dilation", 1), options["pw_groups"],
                     o.get("bias", bias)),
            NormSpec.from_args(bn_args, mid, "bn_args"), act)
    elif options["pw_groups"] > 1 and in_channels % options["pw_groups"]:
        raise ArchDefError(f"pw_groups={options['pw_groups']} must divide {in_channels} "
                           f"channels", key="pw_groups")
    shuffle = options["pw_groups"] if options["pw_groups"] > 1 and not options[
        "skip_shuffle"] else 1
    if mid % shuffle:
        raise ArchDefError(f"channel shuffle of {shuffle} groups needs the {mid} channels "
                           f"divisible by it", key="pw_groups")

    dw = None
    if not options["skip_dw"]:
        o = overrides["dw_args"]
        k = options["kernel_size"]
        ratio = options["dw_group_ratio"]
        # groups = mid // ratio, as the reference computes it: the ratio need not divide
        # mid (FBNetV3_20G: mid 112, ratio 54 -> 2 groups), the groups must.
        if ratio is not None and not 1 <= ratio <= mid:
            raise ArchDefError(f"dw_group_ratio={ratio} must be in [1, {mid}] (the hidden "
                               f"width)", key="dw_group_ratio")
        groups = mid // ratio if ratio else mid
        if mid % groups:
            raise ArchDefError(f"dw_group_ratio={ratio} gives {groups} groups, which do not "
                               f"divide the {mid} hidden channels", key="dw_group_ratio")
        skip_bnrelu = options["dw_skip_bnrelu"]
        dw = ConvNormAct(
            ConvSpec(mid, mid, k, max(stride, 1), o.get("padding", k // 2),
                     o.get("dilation", 1), groups, o.get("bias", bias)),
            None if skip_bnrelu else NormSpec.from_args(bn_args, mid, "bn_args"),
            None if skip_bnrelu else act)

    se = se_act = None
    if options["se_args"] is not None:
        ratio = 0.25 / expansion if options["less_se_channels"] else 0.25
        raw = mid * ratio
        hidden = round_channels(round_half_away(raw) if options["round_se_channels"]
                                else int(raw), divisor)
        se = se_spec(named_args(options["se_args"], "se_args"), mid, hidden, act)
        if isinstance(se, ESESpec) and dw is not None and dw.act is not None:
            # PFLD places the eSE after the depthwise BN, before its activation.
            dw, se_act = replace(dw, act=None), dw.act

    pwl = None
    block_out = mid
    if not options["skip_pwl"]:
        o = overrides["pwl_args"]
        norm = None if options["skip_pwl_bn"] else NormSpec.from_args(
            bn_args, out_channels, "bn_args",
            zero_init=options["zero_last_bn_gamma"] and residual)
        pwl = ConvNormAct(
            ConvSpec(mid, out_channels, o.get("kernel_size", 1), o.get("stride", 1),
                     o.get("padding", 0), o.get("dilation", 1), options["pwl_groups"],
                     o.get("bias", bias)), norm, None)
        block_out = out_channels
    elif mid != out_channels:
        raise ArchDefError(f"skip_pwl leaves the block at its {mid} hidden channels, not "
                           f"out_channels={out_channels} (use mid_expand_out with expansion 1)",
                           key="skip_pwl")
    if residual:
        for key, part in (("pw_args", pw), ("dw_args", dw), ("pwl_args", pwl)):
            if part is not None and not part.conv.keeps_size:
                c = part.conv
                raise ArchDefError(
                    f"the residual add needs the {key[:-5]} conv to keep the spatial size, but "
                    f"kernel {c.kernel_size}, stride {c.stride}, padding {c.padding}, dilation "
                    f"{c.dilation} change it (fix {key} or set res_conn_args to null)", key=key)
    return IRFPlan(
        in_channels=in_channels, out_channels=block_out, pw=pw, shuffle_groups=shuffle,
        upsample=-stride if stride < 0 else 1, dw=dw, se=se, pwl=pwl, residual=residual,
        drop_connect_rate=options["drop_connect_rate"],
        last_act=act if options["last_relu"] else None, se_act=se_act)


# Named variants as data: (name, fixed options, overridable defaults).
_VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("irf", {}, {})]
for _k in (3, 5):
    _VARIANTS += [
        (f"ir_k{_k}", {"kernel_size": _k}, {}),
        (f"ir_k{_k}_g2", {"kernel_size": _k, "pw_groups": 2}, {}),
        (f"ir_k{_k}_hs", {"kernel_size": _k}, {"relu_args": "hswish"}),
        (f"ir_k{_k}_se", {"kernel_size": _k}, {"se_args": "se"}),
        (f"ir_k{_k}_sehsig", {"kernel_size": _k}, {"se_args": "se_hsig"}),
        (f"ir_k{_k}_sehsig_hs", {"kernel_size": _k},
         {"se_args": "se_hsig", "relu_args": "hswish"}),
    ]
    # PFLD's blocks (ALGORITHMS.md §5.2): the unreduced eSE (its depthwise pooling needs
    # ``se_args.fm_size``, the feature size the block sees) and a dilated depthwise conv
    # with "same" padding d * (k - 1) / 2 (NNI's k // 2 + d - 1 for k = 3).
    _VARIANTS.append((f"ir_k{_k}_ese", {"kernel_size": _k}, {"se_args": {"name": "ese"}}))
    for _d in (2, 3):
        _VARIANTS.append((f"ir_k{_k}_d{_d}", {"kernel_size": _k},
                          {"dw_args": {"dilation": _d, "padding": _d * (_k - 1) // 2}}))
for _name, _fixed, _defaults in _VARIANTS:
    register_family(_name, IRFOptions, resolve_irf, fixed=_fixed, defaults=_defaults,
                    description="inverted residual: pw 1x1 -> dw kxk -> [SE] -> pwl 1x1")
