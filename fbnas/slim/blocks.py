"""Slimmable blocks (hierarchy level 3): each maps its own widths onto its slimmable ops.

A block is made from the same resolved plan the static builder builds (an op of the one
block registry, :data:`fbnas.blocks.BLOCKS`), so at full width it *is* the static block:
same parts, same child names (``pw.conv``, ``se.se.0.conv``...), same parameter shapes.
Child names matter: subnet extraction copies tensors by name.

Each block declares its widths as :class:`~fbnas.slim.channels.WidthSlot`s, in the order
``set_out_ch`` takes them (the seed's ``search_dim`` of a block is their number):

==========================  ================  =============================================
block                       widths            tied to the input width
==========================  ================  =============================================
SlimConvBlock               out               out, if the conv is depthwise
SlimDWSConv                 out               out, with an identity shortcut
SlimInvertedResidual        mid, out          out, with an identity shortcut
SlimBasicBlock              mid, out          out, with an identity shortcut
SlimBottleNeck              mid, out          out, with an identity shortcut
SlimIRPool                  mid, out          none
SlimPassThrough             (none)            the output is the input (pools, identity skip)
==========================  ================  =============================================

A block is driven with ``set_in_ch(c)`` then ``set_out_ch([...])``, as in the seed.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fbnas.arch.rounding import round_channels, round_half_away
from fbnas.arch.spec import BlockSpec, FrozenKwargs
from fbnas.blocks import BLOCKS
from fbnas.blocks.irf import IRFPlan
from fbnas.blocks.layers import ConvNormAct, TorchAdd
from fbnas.blocks.pool import IRPoolPlan, PoolPlan, SkipPlan
from fbnas.blocks.resnet import ResidualPlan
from fbnas.slim.channels import UnitLayout, WidthSlot, check_widths
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.ops import (
    SlimConvBNRelu,
    SlimSE,
    add_conv_norm_act,
    set_conv_norm_in,
    set_conv_norm_out,
    slim_act,
)
from fbnas.slim.soft import SoftWidth

KwargsPatch = dict[str, Any]


class SlimBlock(nn.Module):
    """Base of the slimmable blocks.

    Attributes:
        spec: the arch-def block it was made from (op, requested width, stride, kwargs).
        basic_args: the network-wide defaults it was resolved with.
        width_slots: the widths ``set_out_ch`` takes.
        in_ch, widths: the current setting.
        name: ``"stage 2, block 1"`` inside an arch-def network, else None (then the module
            path names it in messages).
    """

    def __init__(self, spec: BlockSpec, basic_args: Mapping[str, Any], in_channels: int,
                 slots: Sequence[WidthSlot], output: int | None) -> None:
        super().__init__()
        self.spec = spec
        self.basic_args = FrozenKwargs(basic_args)
        self.max_in_channels = in_channels
        self.width_slots = tuple(slots)
        self.output_slot = output
        self.in_ch = in_channels
        self.widths = tuple(s.max_channels for s in self.width_slots)
        self.name: str | None = None
        self.slim_path = ""

    @property
    def search_dim(self) -> int:
        """The number of widths this block sets (before ties with other blocks are fused)."""
        return len(self.width_slots)

    @property
    def out_ch(self) -> int:
        """The current output width."""
        return self.in_ch if self.output_slot is None else self.widths[self.output_slot]

    @property
    def label(self) -> str:
        where = self.name or self.slim_path or "(unnamed block)"
        return f"{where} ({self.spec.op}, {type(self).__name__})"

    def extra_repr(self) -> str:
        names = ", ".join(f"{s.name}={w}" for s, w in zip(self.width_slots, self.widths,
                                                            strict=True))
        return f"in={self.in_ch}" + (f", {names}" if names else "")

    def layout(self) -> UnitLayout:
        """Its widths and ties, for :class:`~fbnas.slim.channels.ChannelGroups`."""
        return UnitLayout(self.label, self.width_slots, self.output_slot)

    def set_in_ch(self, channels: int) -> None:
        """Sets the input width (call before :meth:`set_out_ch`)."""
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or not (
                1 <= channels <= self.max_in_channels):
            raise SlimConfigError(f"{self.label}: the input width must be an int in [1, "
                                  f"{self.max_in_channels}], got {channels!r}")
        self.in_ch = int(channels)
        self._apply_in(self.in_ch)

    def set_out_ch(self, widths: Sequence[int]) -> None:
        """Sets the block's widths (``[mid, out]``...; see the module table)."""
        self.widths = check_widths(self.layout(), self.in_ch, widths, "set_out_ch")
        self._apply_widths(self.widths)

    def _apply_in(self, channels: int) -> None:
        raise NotImplementedError

    def set_soft(self, soft_in: SoftWidth | None, widths: Sequence[SoftWidth | None]) -> None:
        """Soft mode (:mod:`fbnas.slim.soft`): the soft input width and one soft width (or
        None: the set width) per width slot; outputs are masked by them. Run at full width.

        Raises:
            SlimConfigError: a block without a soft-mask mode, or a wrong number of widths.
        """
        widths = tuple(widths)
        if len(widths) != len(self.width_slots):
            raise SlimConfigError(f"{self.label}: expected {len(self.width_slots)} soft "
                                  f"widths, got {len(widths)}")
        self._apply_soft(soft_in, widths)

    def _apply_soft(self, soft_in: SoftWidth | None,
                    widths: tuple[SoftWidth | None, ...]) -> None:
        raise SlimConfigError(f"{self.label}: no soft-mask mode (soft modes: conv, inverted "
                              f"residual, ir_pool, pass-through blocks)")

    def set_soft_kernel(self, kernel: SoftWidth | None) -> None:
        """Soft mode: a soft kernel size of the block's depthwise conv (None: its own)."""
        if kernel is not None:
            raise SlimConfigError(f"{self.label}: no searchable kernel")

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        raise NotImplementedError

    @property
    def residual_active(self) -> bool | None:
        """Whether the residual add runs at the current widths (None: no such notion)."""
        return None

    def static_candidates(self) -> list[tuple[int, KwargsPatch]]:
        """``(out_channels, kwargs patch)`` that may express the current widths as a static
        block of ``spec.op``, most reference-like first; extraction keeps the first whose
        resolved plan matches (see :mod:`fbnas.slim.extract`)."""
        return [(self.out_ch, {})]


# --------------------------------------------------------------------------- conv, pass-through


class SlimConvBlock(SlimBlock):
    """The conv family (``conv_k3``, ``conv_k1_hs``...): conv -> [BN] -> [act].

    Child names are those of ``ConvBNRelu`` (the static block *is* one).
    """

    def __init__(self, plan: ConvNormAct, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int) -> None:
        conv = plan.conv
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        slot = WidthSlot("out", plan.out_channels, "depthwise" if depthwise else None)
        super().__init__(spec, basic_args, in_channels, (slot,), 0)
        add_conv_norm_act(self, plan)

    def _apply_in(self, channels: int) -> None:
        set_conv_norm_in(self, channels)

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        set_conv_norm_out(self, widths[0])

    soft_mask: torch.Tensor | None = None

    def _apply_soft(self, soft_in: SoftWidth | None,
                    widths: tuple[SoftWidth | None, ...]) -> None:
        SlimConvBNRelu.set_soft(self, soft_in, widths[0] if widths[0] is not None
                                else soft_in if self.conv.depthwise else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        if self.soft_mask is not None:
            x = x * self.soft_mask.view(1, -1, 1, 1).to(x.dtype)
        return x


class SlimPassThrough(SlimBlock):
    """A block whose output width is its input width: pools, an identity ``skip``."""

    def __init__(self, module: nn.Module, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int) -> None:
        super().__init__(spec, basic_args, in_channels, (), None)
        self.op = module

    def _apply_in(self, channels: int) -> None:
        pass

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        pass

    def _apply_soft(self, soft_in: SoftWidth | None,
                    widths: tuple[SoftWidth | None, ...]) -> None:
        pass  # pools and the identity keep zeros zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


# --------------------------------------------------------------------------- inverted residuals


def _expansion_value(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def mid_patches(base: int, mid: int, divisor: int) -> list[KwargsPatch]:
    """Ways to ask a static block for hidden width ``mid`` from width ``base``: unchanged
    options, then the shortest decimal ``expansion`` that rounds to it, then ``mid_channels``
    (the fbnas option for widths no expansion ratio yields)."""
    patches: list[KwargsPatch] = [{}]
    for digits in range(1, 7):
        expansion = round(mid / base, digits)
        if expansion > 0 and round_channels(base * expansion, divisor) == mid:
            patches.append({"expansion": _expansion_value(expansion)})
            break
    patches.append({"mid_channels": mid})
    return patches


def _refuse(condition: bool, spec: BlockSpec, what: str) -> None:
    if condition:
        raise SlimConfigError(f"op {spec.op!r}: {what} has no slimmable version")


class _SlimIRF(SlimBlock):
    """Shared part of the inverted-residual family: [upsample] -> dw -> [SE] -> pwl -> add."""

    def __init__(self, plan: IRFPlan, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int, options: Mapping[str, Any],
                 slots: Sequence[WidthSlot]) -> None:
        _refuse(plan.shuffle_groups > 1 or (plan.pw is not None and plan.pw.conv.groups > 1),
                spec, "a grouped pw conv (pw_groups)")
        _refuse(plan.pwl is None, spec, "skip_pwl")
        _refuse(plan.pwl is not None and plan.pwl.conv.groups > 1, spec,
                "a grouped pwl conv (pwl_groups)")
        _refuse(plan.dw is not None and plan.dw.conv.groups != plan.dw.conv.in_channels, spec,
                "a grouped (not depthwise) dw conv (dw_group_ratio)")
        super().__init__(spec, basic_args, in_channels, slots, len(slots) - 1)
        self.residual = plan.residual
        self.mid_expand_out = bool(options["mid_expand_out"])
        self.divisor = int(options["width_divisor"])
        # The SE width follows the hidden width by the static block's own rule.
        self.se_ratio = (0.25 / options["expansion"] if options["less_se_channels"]
                         else 0.25)
        self.se_round = bool(options["round_se_channels"])

    def _add_tail(self, plan: IRFPlan) -> None:
        if plan.upsample > 1:
            self.upsample = nn.Upsample(scale_factor=plan.upsample, mode="nearest")
        if plan.dw is not None:
            self.dw = SlimConvBNRelu(plan.dw)
        if plan.se is not None:
            self.se = SlimSE(plan.se)
        self.pwl = SlimConvBNRelu(plan.pwl)
        self.res_conn = TorchAdd(plan.drop_connect_rate) if plan.residual else None
        act = slim_act(plan.last_act)
        if act is not None:
            self.relu = act

    def se_channels(self, mid: int) -> int:
        """The SE width at hidden width ``mid`` (the static rule, capped at the full width)."""
        raw = mid * self.se_ratio
        hidden = round_channels(round_half_away(raw) if self.se_round else int(raw),
                                self.divisor)
        return min(hidden, self.se.max_hidden)

    def _soft_tail(self, mid: SoftWidth | None, out: SoftWidth | None) -> None:
        """Soft widths from the dw conv on: every output at the hidden width is masked
        (BN would turn masked zeros into its bias), the SE's reduced width follows the hidden
        width by the block's rule, the pwl output is masked by ``out``."""
        if "dw" in self._modules:
            self.dw.set_soft(mid, mid)
        if "se" in self._modules:
            self.se.set_soft(mid, None if mid is None else mid.map(self.se_channels))
        self.pwl.set_soft(mid, out)

    def set_soft_kernel(self, kernel: SoftWidth | None) -> None:
        if "dw" not in self._modules:
            super().set_soft_kernel(kernel)
        if kernel is not None:
            kernel.kernel_mask(self.dw.conv.kernel_size[0])  # checks the options
        self.dw.conv.soft_kernel = kernel

    def _set_mid(self, mid: int) -> None:
        if "dw" in self._modules:
            self.dw.set_in_ch(mid)
        if "se" in self._modules:
            self.se.set_channels(mid, self.se_channels(mid))
        self.pwl.set_in_ch(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in ("pw", "upsample", "dw", "se", "pwl"):
            part = self._modules.get(name)
            if part is not None:
                y = part(y)
        if self.res_conn is not None:
            y = self.res_conn(y, x)
        relu = self._modules.get("relu")
        return relu(y) if relu is not None else y

    @property
    def residual_active(self) -> bool:
        return self.residual

    def _structure_patch(self) -> KwargsPatch:
        out = self.out_ch
        if not self.residual and self.in_ch == out and self.spec.stride == 1:
            return {"res_conn_args": None}  # the static block would add one
        return {}

    def _candidates(self, mid: int, patch: KwargsPatch) -> list[tuple[int, KwargsPatch]]:
        base = self.out_ch if self.mid_expand_out else self.in_ch
        return [(self.out_ch, {**m, **patch, **self._structure_patch()})
                for m in mid_patches(base, mid, self.divisor)]


class SlimDWSConv(_SlimIRF):
    """Depthwise-separable block: dw kxk -> [SE] -> pwl 1x1 [+ identity].

    An inverted residual without its pw conv (expansion 1: MobileNetV2/V3's and
    EfficientNet's first block). Its hidden width is its input width, so it has one width
    of its own: ``set_out_ch([out])``.
    """

    def __init__(self, plan: IRFPlan, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int, options: Mapping[str, Any]) -> None:
        slot = WidthSlot("out", plan.out_channels, "residual" if plan.residual else None)
        super().__init__(plan, spec, basic_args, in_channels, options, (slot,))
        self._add_tail(plan)

    def _apply_in(self, channels: int) -> None:
        self._set_mid(channels)

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        self.pwl.set_out_ch(widths[0])

    def _apply_soft(self, soft_in: SoftWidth | None,
                    widths: tuple[SoftWidth | None, ...]) -> None:
        self._soft_tail(soft_in, widths[0])

    def static_candidates(self) -> list[tuple[int, KwargsPatch]]:
        return self._candidates(self.in_ch, {})


class SlimInvertedResidual(_SlimIRF):
    """Inverted residual: pw 1x1 -> dw kxk -> [SE] -> pwl 1x1 [+ identity].

    ``set_out_ch([mid, out])`` sets the pw output, the dw width (groups = channels), the SE
    (its reduced width follows ``mid`` by the block's rule) and the pwl; ``set_in_ch``
    sets the pw input.
    """

    def __init__(self, plan: IRFPlan, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int, options: Mapping[str, Any]) -> None:
        slots = (WidthSlot("mid", plan.pw.out_channels),
                 WidthSlot("out", plan.out_channels, "residual" if plan.residual else None))
        super().__init__(plan, spec, basic_args, in_channels, options, slots)
        self.pw = SlimConvBNRelu(plan.pw)
        self._add_tail(plan)

    def _apply_in(self, channels: int) -> None:
        self.pw.set_in_ch(channels)

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        mid, out = widths
        self.pw.set_out_ch(mid)
        self._set_mid(mid)
        self.pwl.set_out_ch(out)

    def _apply_soft(self, soft_in: SoftWidth | None,
                    widths: tuple[SoftWidth | None, ...]) -> None:
        mid, out = widths
        self.pw.set_soft(soft_in, mid)
        self._soft_tail(mid, out)

    def static_candidates(self) -> list[tuple[int, KwargsPatch]]:
        mid = self.widths[0]
        # A static block leaves out its pw conv at mid == in unless told to keep it.
        return self._candidates(mid, {"always_pw": True} if mid == self.in_ch else {})


class SlimIRPool(SlimBlock):
    """The pooled head (``ir_pool``): pw 1x1 -> global pool -> pwl 1x1 (act, no BN).

    ``set_out_ch([mid, out])``. As the static block, it adds its input when the input and
    output widths agree at stride 1 and the pooled map has the input's shape (only for a
    1x1 input map).
    """

    def __init__(self, plan: IRPoolPlan, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int, options: Mapping[str, Any]) -> None:
        _refuse(plan.se is not None or plan.pw_se is not None, spec, "an SE (se_args)")
        slots = (WidthSlot("mid", plan.pw.out_channels), WidthSlot("out", plan.out_channels))
        super().__init__(spec, basic_args, in_channels, slots, 1)
        self.divisor = int(options["width_divisor"])
        self.pw = SlimConvBNRelu(plan.pw)
        self.dw = (nn.AdaptiveAvgPool2d(1) if plan.pool_kernel == -1
                   else nn.AvgPool2d(plan.pool_kernel))
        self.pwl = SlimConvBNRelu(plan.pwl)
        self.res_conn = TorchAdd()

    def _apply_in(self, channels: int) -> None:
        self.pw.set_in_ch(channels)

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        mid, out = widths
        self.pw.set_out_ch(mid)
        self.pwl.set_in_ch(mid)
        self.pwl.set_out_ch(out)

    def _apply_soft(self, soft_in: SoftWidth | None,
                    widths: tuple[SoftWidth | None, ...]) -> None:
        mid, out = widths
        self.pw.set_soft(soft_in, mid)
        self.pwl.set_soft(mid, out)

    @property
    def residual_active(self) -> bool:
        return self.in_ch == self.out_ch and self.spec.stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwl(self.dw(self.pw(x)))
        if self.residual_active and y.shape == x.shape:
            y = self.res_conn(y, x)
        return y

    def static_candidates(self) -> list[tuple[int, KwargsPatch]]:
        return [(self.out_ch, patch)
                for patch in mid_patches(self.in_ch, self.widths[0], self.divisor)]


# --------------------------------------------------------------------------- ResNet


class _SlimResidual(SlimBlock):
    """A chain of convs (input -> mid -> ... -> mid -> output) plus a shortcut, add, act."""

    num_convs = 0

    def __init__(self, plan: ResidualPlan, spec: BlockSpec, basic_args: Mapping[str, Any],
                 in_channels: int) -> None:
        if len(plan.convs) != self.num_convs:
            raise SlimConfigError(f"op {spec.op!r}: {type(self).__name__} needs "
                                  f"{self.num_convs} convs, the plan has {len(plan.convs)}")
        mid = plan.convs[0][1].out_channels
        for name, conv in plan.convs[1:-1]:
            if conv.conv.in_channels != mid or conv.out_channels != mid:
                raise SlimConfigError(f"op {spec.op!r}: inner conv {name} changes the width")
        slots = (WidthSlot("mid", mid),
                 WidthSlot("out", plan.out_channels,
                           "residual" if plan.shortcut is None else None))
        super().__init__(spec, basic_args, in_channels, slots, 1)
        self.conv_names = tuple(name for name, _ in plan.convs)
        for name, conv in plan.convs:
            self.add_module(name, SlimConvBNRelu(conv))
        self.shortcut_name = plan.shortcut_name
        if plan.shortcut is not None:
            self.add_module(plan.shortcut_name, SlimConvBNRelu(plan.shortcut))
        self.add = TorchAdd()
        act = slim_act(plan.act)
        if act is not None:
            self.relu = act

    def _shortcut(self) -> nn.Module | None:
        return self._modules.get(self.shortcut_name)

    def _apply_in(self, channels: int) -> None:
        self._modules[self.conv_names[0]].set_in_ch(channels)
        if self._shortcut() is not None:
            self._shortcut().set_in_ch(channels)

    def _apply_widths(self, widths: tuple[int, ...]) -> None:
        mid, out = widths
        convs = [self._modules[name] for name in self.conv_names]
        convs[0].set_out_ch(mid)
        for conv in convs[1:-1]:
            conv.set_in_ch(mid)
            conv.set_out_ch(mid)
        convs[-1].set_in_ch(mid)
        convs[-1].set_out_ch(out)
        if self._shortcut() is not None:
            self._shortcut().set_out_ch(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self.conv_names:
            y = self._modules[name](y)
        shortcut = self._shortcut()
        y = self.add(y, shortcut(x) if shortcut is not None else x)
        relu = self._modules.get("relu")
        return relu(y) if relu is not None else y

    def static_candidates(self) -> list[tuple[int, KwargsPatch]]:
        patch: KwargsPatch = {}
        if self._shortcut() is not None and self.in_ch == self.out_ch and self.spec.stride == 1:
            patch["always_projection"] = True  # the static block would drop the shortcut
        return [(self.out_ch, patch), (self.out_ch, {**patch, "mid_channels": self.widths[0]})]


class SlimBasicBlock(_SlimResidual):
    """ResNet basic block (``res_k3``): 3x3 (in -> mid) -> 3x3 (mid -> out) + shortcut.

    ``set_out_ch([mid, out])``; with an identity shortcut ``out`` is tied to the input.
    """

    num_convs = 2


class SlimBottleNeck(_SlimResidual):
    """ResNet bottleneck (``res_block_k3``): 1x1 (in -> mid) -> 3x3 (mid -> mid) -> 1x1
    (mid -> out) + shortcut. ``set_out_ch([mid, out])``: both inner convs share ``mid``."""

    num_convs = 3


# --------------------------------------------------------------------------- from plans

BlockFactory = Callable[[Any, BlockSpec, Mapping[str, Any], int, Mapping[str, Any]], SlimBlock]


def _irf(plan, spec, basic_args, in_channels, options) -> SlimBlock:
    cls = SlimInvertedResidual if plan.pw is not None else SlimDWSConv
    return cls(plan, spec, basic_args, in_channels, options)


def _residual(plan, spec, basic_args, in_channels, options) -> SlimBlock:
    by_count = {cls.num_convs: cls for cls in (SlimBasicBlock, SlimBottleNeck)}
    if len(plan.convs) not in by_count:
        raise SlimConfigError(f"op {spec.op!r}: a residual block of {len(plan.convs)} convs "
                              f"has no slimmable version")
    return by_count[len(plan.convs)](plan, spec, basic_args, in_channels)


def _skip(plan, spec, basic_args, in_channels, options) -> SlimBlock:
    _refuse(plan.projection is not None, spec, "a skip with a projection conv")
    return SlimPassThrough(plan.build(), spec, basic_args, in_channels)


_FROM_PLAN: dict[type, BlockFactory] = {
    ConvNormAct: lambda plan, spec, basic, c, _: SlimConvBlock(plan, spec, basic, c),
    IRFPlan: _irf,
    IRPoolPlan: lambda plan, spec, basic, c, opts: SlimIRPool(plan, spec, basic, c, opts),
    ResidualPlan: _residual,
    PoolPlan: lambda plan, spec, basic, c, _: SlimPassThrough(plan.build(), spec, basic, c),
    SkipPlan: _skip,
}
"""Slimmable version of each kind of resolved plan (keyed by plan type, not op name, so
every named variant of a family is covered: ``ir_k5_sehsig_hs`` is an ``IRFPlan``)."""


def slim_block_from_spec(spec: BlockSpec, in_channels: int,
                         basic_args: Mapping[str, Any] | None = None) -> SlimBlock:
    """The slimmable block of an arch-def block at full width (see :func:`slim_block`)."""
    op = BLOCKS.get(spec.op)
    options = op.options(spec.kwargs, basic_args)
    plan = op.resolve(in_channels, spec.out_channels, spec.stride, options)
    factory = _FROM_PLAN.get(type(plan))
    if factory is None:
        raise SlimConfigError(f"op {spec.op!r} has no slimmable version (slimmable: conv, "
                              f"inverted residual, ir_pool, ResNet blocks, pools, identity "
                              f"skip)")
    return factory(plan, spec, FrozenKwargs(basic_args or {}), in_channels, options)


def slim_block(
    op: str,
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    kwargs: Mapping[str, Any] | None = None,
    basic_args: Mapping[str, Any] | None = None,
) -> SlimBlock:
    """A slimmable block of a registered op at its full width.

    The op resolves through the one block registry exactly as in an arch def (same options,
    same checks, same widths), then becomes the slimmable block of its family.

    Args:
        op: a registered op (``"ir_k3"``, ``"ir_k5_sehsig_hs"``, ``"res_k3"``, ``"conv_k3"``).
        in_channels, out_channels, stride: as in an arch-def entry.
        kwargs: the block's options (``{"expansion": 6}``).
        basic_args: network-wide defaults (``{"width_divisor": 8}``).

    Raises:
        ArchDefError: for options the op rejects.
        SlimConfigError: for an op or option without a slimmable version.

    Example:
        >>> block = slim_block("ir_k3", 16, 24, 2, {"expansion": 6})
        >>> type(block).__name__, block.search_dim, block.widths
        ('SlimInvertedResidual', 2, (96, 24))
    """
    spec = BlockSpec(op, out_channels, stride, FrozenKwargs(kwargs or {}))
    return slim_block_from_spec(spec, in_channels, basic_args)


__all__ = [
    "SlimBasicBlock",
    "SlimBlock",
    "SlimBottleNeck",
    "SlimConvBlock",
    "SlimDWSConv",
    "SlimIRPool",
    "SlimInvertedResidual",
    "SlimPassThrough",
    "mid_patches",
    "slim_block",
    "slim_block_from_spec",
]
