"""Slimmable layers: they own max-width tensors and run on a leading slice of them.

Every slimmable network rests on one convention (universally slimmable networks, Joslim,
once-for-all): a layer at ``c`` channels uses the *first* ``c`` channels of its max-width
weights, ``weight[:out, :in]``. Widths are set from outside with the seed's verbs
``set_in_ch``, ``set_out_ch`` and ``set_groups``; the forward pass reads nothing else. The
slicing is written once (:func:`leading_slice`), used by the forward passes, by subnet
extraction (:meth:`SlimOp.active_tensors`) and by the analytic cost.

The standard attributes (``in_channels``, ``out_channels``, ``groups``, ``num_features``,
``in_features``, ``out_features``) hold the *active* widths, so ``repr`` and any code that
reads them (``fbnas.cost.count_macs``) describe what runs now; the ``max_*`` attributes
keep the extent of the weights.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.blocks.layers import ActSpec, ConvNormAct, ConvSpec, NormSpec, SESpec
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.soft import SoftWidth


def leading_slice(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Returns ``tensor[:shape[0], :shape[1], ...]`` (a view; the tensor itself if equal).

    Runs in every slim layer's forward pass, so only the leading dimensions that shrink are
    indexed (a conv weight ``(out, in, k, k)`` needs at most ``[:out, :in]``).
    """
    full = tensor.shape
    n = len(shape)
    while n and full[n - 1] == shape[n - 1]:
        n -= 1
    if n == 0:
        return tensor
    if n == 1:
        return tensor[: shape[0]]
    if n == 2:
        return tensor[: shape[0], : shape[1]]
    return tensor[tuple(slice(0, int(s)) for s in shape[:n])]


def _check_int(value: object, what: str) -> int:
    # numbers.Integral admits numpy integers; bool is an int subclass but never a width.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SlimConfigError(f"{what} must be an int, got {value!r}")
    return int(value)


class SlimOp:
    """Mixin of the slimmable layers: a place name for errors and the active tensors."""

    slim_path: str = ""
    """The module path inside its network (set by :class:`fbnas.slim.DynModel`)."""

    soft_in: SoftWidth | None = None
    """Soft mode (:mod:`fbnas.slim.soft`): the soft width of the input, for the cost."""
    soft_out: SoftWidth | None = None
    """Soft mode: the soft width of the output (a depthwise conv's: its one width)."""
    soft_kernel: SoftWidth | None = None
    """Soft mode: a soft kernel size (the weights are masked to the centred windows)."""

    def where(self) -> str:
        """``"SlimConv2d 'stages.1.blocks.0.dw.conv'"`` for error messages."""
        path = self.slim_path or "(unnamed)"
        return f"{type(self).__name__} {path!r}"

    def _width(self, value: object, maximum: int, what: str) -> int:
        value = _check_int(value, f"{self.where()}: {what}")
        if not 1 <= value <= maximum:
            raise SlimConfigError(f"{self.where()}: {what} must be in [1, {maximum}], got "
                                  f"{value}")
        return value

    def _check_input(self, channels: int, expected: int) -> None:
        if channels != expected:
            raise SlimConfigError(f"{self.where()}: set to {expected} input channels but got "
                                  f"a {channels}-channel input (set the widths through the "
                                  f"network's set_real_ch)")

    def active_tensors(self) -> dict[str, torch.Tensor]:
        """Own parameters and buffers as the active width uses them (leading slices)."""
        raise NotImplementedError


class SlimConv2d(nn.Conv2d, SlimOp):
    """A ``Conv2d`` whose input/output widths can shrink to any leading slice.

    Dense (``groups=1``) or depthwise (``groups == in == out``); a depthwise conv keeps
    groups = channels, so it has one width and ``set_in_ch``, ``set_out_ch`` and
    ``set_groups`` all set it. Grouped convs in between have no first-k-channels slice that
    keeps their group structure, so they are refused.

    Args:
        slim_out: False for a layer whose output width is fixed (a classifier's classes);
            then ``set_out_ch`` accepts only the maximum.

    Example:
        >>> conv = SlimConv2d(8, 16, 3, padding=1)
        >>> conv.set_in_ch(4); conv.set_out_ch(6)
        >>> conv(torch.zeros(1, 4, 5, 5)).shape
        torch.Size([1, 6, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        slim_out: bool = True,
    ) -> None:
        depthwise = groups > 1 and groups == in_channels == out_channels
        if groups != 1 and not depthwise:
            raise SlimConfigError(f"a slimmable conv is dense or depthwise; {groups} groups "
                                  f"over {in_channels}->{out_channels} channels have no "
                                  f"first-k-channels slice")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)
        self.depthwise = depthwise
        self.slim_out = slim_out
        self.max_in_channels = in_channels
        self.max_out_channels = out_channels

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, max={self.max_in_channels}->"
                f"{self.max_out_channels}")

    def _set_depthwise(self, channels: int) -> None:
        self.in_channels = self.out_channels = self.groups = channels

    def set_in_ch(self, channels: int) -> None:
        """Sets the input width (a depthwise conv: its one width)."""
        channels = self._width(channels, self.max_in_channels, "input width")
        if self.depthwise:
            self._set_depthwise(channels)
        else:
            self.in_channels = channels

    def set_out_ch(self, channels: int) -> None:
        """Sets the output width (a depthwise conv: its one width)."""
        if not self.slim_out and channels != self.max_out_channels:
            raise SlimConfigError(f"{self.where()}: the output width is fixed at "
                                  f"{self.max_out_channels}, got {channels!r}")
        channels = self._width(channels, self.max_out_channels, "output width")
        if self.depthwise:
            self._set_depthwise(channels)
        else:
            self.out_channels = channels

    def set_groups(self, groups: int) -> None:
        """Depthwise: sets the width (groups = channels); dense: only 1 is accepted."""
        if self.depthwise:
            self._set_depthwise(self._width(groups, self.max_in_channels, "groups"))
        elif groups != 1:
            raise SlimConfigError(f"{self.where()}: a dense conv has 1 group, got {groups!r}")

    def _active(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = self.weight, self.bias
        if (self.out_channels, self.in_channels) != (self.max_out_channels,
                                                     self.max_in_channels):
            kh, kw = self.kernel_size
            weight = leading_slice(weight, (self.out_channels,
                                            self.in_channels // self.groups, kh, kw))
            if bias is not None:
                bias = leading_slice(bias, (self.out_channels,))
        return weight, bias

    def active_tensors(self) -> dict[str, torch.Tensor]:
        weight, bias = self._active()
        return {"weight": weight} if bias is None else {"weight": weight, "bias": bias}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x.shape[1], self.in_channels)
        weight, bias = self._active()
        if self.soft_kernel is not None:  # soft mode: centred windows, Σ g_k (k×k)
            weight = weight * self.soft_kernel.kernel_mask(self.kernel_size[0]).to(weight.dtype)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SlimBatchNorm2d(nn.BatchNorm2d, SlimOp):
    """``BatchNorm2d`` over the first ``c`` channels: affine and running statistics sliced.

    The running statistics are shared by all widths (a width's statistics are the leading
    slice of one buffer), as in [JL]; recalibrate them per width before evaluating
    (``fbnas.export.calibrate_batchnorm`` works on a slim network set to a width). One
    width: ``set_in_ch`` and ``set_out_ch`` both set it.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.max_features = num_features

    def set_in_ch(self, channels: int) -> None:
        """Sets the width."""
        self.num_features = self._width(channels, self.max_features, "width")

    set_out_ch = set_in_ch

    def active_tensors(self) -> dict[str, torch.Tensor]:
        shape = (self.num_features,)
        tensors = {}
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(self, name)
            if tensor is not None:
                tensors[name] = leading_slice(tensor, shape)
        if self.num_batches_tracked is not None:
            tensors["num_batches_tracked"] = self.num_batches_tracked
        return tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x.shape[1], self.num_features)
        if self.num_features == self.max_features:
            return super().forward(x)
        # nn.BatchNorm2d.forward on sliced tensors; the slices are views, so the running
        # statistics of the active channels are updated in place.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        use_batch_stats = self.training or (self.running_mean is None
                                            and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        shape = (self.num_features,)
        mean, var, weight, bias = (None if t is None else leading_slice(t, shape) for t in (
            self.running_mean, self.running_var, self.weight, self.bias))
        return F.batch_norm(x, mean if keep_stats else None, var if keep_stats else None,
                            weight, bias, use_batch_stats, factor, self.eps)


class SlimLinear(nn.Linear, SlimOp):
    """A ``Linear`` on the leading ``[:out, :in]`` slice of its weights.

    Args:
        slim_out: False for a fixed output width (the classes of a classifier).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 slim_out: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.slim_out = slim_out
        self.max_in_features = in_features
        self.max_out_features = out_features

    def set_in_ch(self, channels: int) -> None:
        """Sets the input width."""
        self.in_features = self._width(channels, self.max_in_features, "input width")

    def set_out_ch(self, channels: int) -> None:
        """Sets the output width."""
        if not self.slim_out and channels != self.max_out_features:
            raise SlimConfigError(f"{self.where()}: the output width is fixed at "
                                  f"{self.max_out_features}, got {channels!r}")
        self.out_features = self._width(channels, self.max_out_features, "output width")

    def set_groups(self, groups: int) -> None:
        """Only 1 is accepted (the seed's verb set, for uniformity)."""
        if groups != 1:
            raise SlimConfigError(f"{self.where()}: a linear layer has 1 group, got {groups!r}")

    def _active(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = leading_slice(self.weight, (self.out_features, self.in_features))
        bias = None if self.bias is None else leading_slice(self.bias, (self.out_features,))
        return weight, bias

    def active_tensors(self) -> dict[str, torch.Tensor]:
        weight, bias = self._active()
        return {"weight": weight} if bias is None else {"weight": weight, "bias": bias}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x.shape[-1], self.in_features)
        return F.linear(x, *self._active())


# --------------------------------------------------------------------------- from layer specs


def slim_conv(spec: ConvSpec, *, kaiming: bool = True, slim_out: bool = True) -> SlimConv2d:
    """A :class:`SlimConv2d` of a block's conv spec, initialised as ``ConvSpec.build`` does."""
    conv = SlimConv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
                      spec.padding, spec.dilation, spec.groups, spec.bias, slim_out=slim_out)
    if kaiming:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return conv


def slim_norm(spec: NormSpec | None) -> SlimBatchNorm2d | None:
    """A :class:`SlimBatchNorm2d` for a ``bn`` norm spec (other norms are not slimmable)."""
    if spec is None:
        return None
    if spec.name != "bn":
        raise SlimConfigError(f"norm {spec.name!r} has no slimmable version (only 'bn'; "
                              f"convert to SyncBatchNorm after building, not before)")
    norm = SlimBatchNorm2d(spec.channels, **dict(spec.options))
    if spec.zero_init:
        nn.init.zeros_(norm.weight)
    return norm


def slim_act(spec: ActSpec | None) -> nn.Module | None:
    """The activation module (width-agnostic; a per-channel PReLU is refused)."""
    if spec is None:
        return None
    if spec.name == "prelu" and spec.options.get("num_parameters", 1) != 1:
        raise SlimConfigError("a per-channel PReLU has no slimmable version (use "
                              "num_parameters=1)")
    return spec.build()


def add_conv_norm_act(module: nn.Module, spec: ConvNormAct, *, slim_out: bool = True) -> None:
    """Adds ``conv``, ``bn``, ``relu``, ``upsample`` children as ``ConvBNRelu`` names them."""
    module.conv = slim_conv(spec.conv, slim_out=slim_out)
    norm = slim_norm(spec.norm)
    if norm is not None:
        module.bn = norm
    act = slim_act(spec.act)
    if act is not None:
        module.relu = act
    if spec.upsample > 1:
        module.upsample = nn.Upsample(scale_factor=spec.upsample, mode="nearest")


def set_conv_norm_in(module: nn.Module, channels: int) -> None:
    """Input width of a module made by :func:`add_conv_norm_act` (depthwise: BN too)."""
    module.conv.set_in_ch(channels)
    if module.conv.depthwise and "bn" in module._modules:
        module.bn.set_in_ch(channels)


def set_conv_norm_out(module: nn.Module, channels: int) -> None:
    """Output width of a module made by :func:`add_conv_norm_act` (conv and BN)."""
    module.conv.set_out_ch(channels)
    if "bn" in module._modules:
        module.bn.set_out_ch(channels)


def set_soft_widths(module: nn.Module, soft_in: SoftWidth | None,
                    soft_out: SoftWidth | None) -> None:
    """Records the soft widths on the conv (and BN) of a conv-norm-act module."""
    conv = module.conv
    if conv.depthwise:
        soft_in = soft_out = soft_out if soft_out is not None else soft_in
    conv.soft_in, conv.soft_out = soft_in, soft_out
    if "bn" in module._modules:
        module.bn.soft_in = module.bn.soft_out = soft_out


class SlimConvBNRelu(nn.Module):
    """conv -> [BN] -> [act] -> [upsample], the slimmable ``ConvBNRelu`` (same child names)."""

    def __init__(self, spec: ConvNormAct) -> None:
        super().__init__()
        add_conv_norm_act(self, spec)

    def set_in_ch(self, channels: int) -> None:
        """Sets the conv's input width (depthwise: the one width, BN included)."""
        set_conv_norm_in(self, channels)

    def set_out_ch(self, channels: int) -> None:
        """Sets the output width of the conv and its BN."""
        set_conv_norm_out(self, channels)

    soft_mask: torch.Tensor | None = None
    """Soft mode: ``(C,)`` multiplied into the output (None: no mask)."""

    def set_soft(self, soft_in: SoftWidth | None, soft_out: SoftWidth | None,
                 mask: bool = True) -> None:
        """Soft mode (:mod:`fbnas.slim.soft`): the soft input and output widths (None: the
        set width); ``mask`` multiplies the output by the output's mask. Run at full width.
        """
        set_soft_widths(self, soft_in, soft_out)
        self.soft_mask = (soft_out.mask(self.conv.max_out_channels)
                          if mask and soft_out is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        if self.soft_mask is not None:
            x = x * self.soft_mask.view(1, -1, 1, 1).to(x.dtype)
        return x


class SlimSE(nn.Module):
    """Squeeze-excite over a slimmable width: pool -> 1x1 (c -> s) -> act -> 1x1 (s -> c) -> gate.

    Child names are those of ``fbnas.blocks.layers.SEModule``. Its reduced width ``s``
    follows the block's hidden width (the block computes it with the block's own rule).
    """

    def __init__(self, spec: SESpec) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        reduce = SlimConvBNRelu(ConvNormAct(ConvSpec(spec.channels, spec.hidden, bias=True),
                                            act=spec.act))
        # The expanding conv keeps PyTorch's default init, as the static SE does.
        expand = SlimConv2d(spec.hidden, spec.channels, 1, bias=True)
        self.se = nn.Sequential(reduce, expand, ActSpec(spec.gate).build())
        self.max_hidden = spec.hidden

    def set_channels(self, channels: int, hidden: int) -> None:
        """Sets the gated width and the reduced width."""
        self.se[0].set_in_ch(channels)
        self.se[0].set_out_ch(hidden)
        self.se[1].set_in_ch(hidden)
        self.se[1].set_out_ch(channels)

    def set_soft(self, channels: SoftWidth | None, hidden: SoftWidth | None) -> None:
        """Soft mode: the gated width and the reduced width (masked after the reduce)."""
        self.se[0].set_soft(channels, hidden)
        self.se[1].soft_in, self.se[1].soft_out = hidden, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(self.avg_pool(x))


__all__ = [
    "SlimBatchNorm2d",
    "SlimConv2d",
    "SlimConvBNRelu",
    "SlimLinear",
    "SlimOp",
    "SlimSE",
    "add_conv_norm_act",
    "leading_slice",
    "set_conv_norm_in",
    "set_conv_norm_out",
    "set_soft_widths",
    "slim_act",
    "slim_conv",
    "slim_norm",
]
