"""Params and MACs of any width setting, computed from the active widths (no forward pass).

Search over widths needs the cost of many width vectors; building each subnet to count it
would cost far more than the search step. Spatial sizes do not depend on widths, so one
shape-only pass on PyTorch's ``meta`` device (per input size, cached) records how many
output positions every conv and linear layer has; after that a width setting costs

* params: the elements of every layer's active tensors (leading slices), and
* MACs: positions x active weight elements for each conv and linear layer
  (``k_h * k_w * in / groups * out * H_out * W_out``; ALGORITHMS.md section 6.7: BN,
  activations, pooling and adds are not counted, the SE 1x1 convs and the classifier are),

which are the figures ``fbnas.cost.count_params``/``count_macs`` report for the extracted
subnet (the tests check it over random width vectors). Works for any :class:`DynModel`,
hand-written ones included.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from fbnas.blocks.layers import Cost
from fbnas.slim.dyn_model import DynModel
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.extract import widths_set
from fbnas.slim.ops import SlimBatchNorm2d, SlimConv2d, SlimLinear, SlimOp
from fbnas.slim.soft import SoftWidth

InputSize = int | Sequence[int]

_POSITIONS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], dict[str, int]]] = (
    weakref.WeakKeyDictionary())


@dataclass(frozen=True)
class ModuleCost:
    """The cost of one module (a conv, a linear, a norm) of a slim network at a width setting.

    Named for modules, apart from DNAS's per-layer candidate costs (``LayerCosts``).

    Attributes:
        name: module path.
        kind: ``"conv"``, ``"linear"`` or ``"other"`` (norms, parametrised activations).
        in_channels, out_channels, groups: active widths (0 for ``"other"``).
        kernel_size, stride: of a conv (``(1, 1)`` otherwise).
        positions: output positions per sample (``H_out * W_out`` of a conv).
        params, macs: at the active widths.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    positions: int
    params: int
    macs: int


def _input_shape(model: nn.Module, input_size: InputSize | None) -> tuple[int, ...]:
    if input_size is None:
        input_size = getattr(model, "resolution", None)
        if input_size is None:
            raise SlimConfigError(f"{type(model).__name__} has no native resolution: pass "
                                  f"input_size")
    dim_in = int(getattr(model, "in_channels", 3))
    if isinstance(input_size, int):
        return (1, dim_in, input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if len(shape) == 2:
        return (1, dim_in, *shape)
    if len(shape) == 3:
        return (1, *shape)
    if len(shape) != 4 or shape[0] != 1:
        raise SlimConfigError(f"input_size must be R, (H, W), (C, H, W) or (1, C, H, W), got "
                              f"{input_size!r}")
    return shape


def _is_counted_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))


def output_positions(model: nn.Module, input_size: InputSize | None = None) -> dict[str, int]:
    """Output positions per sample of every conv/linear layer (module path -> count).

    One forward pass on the ``meta`` device (shapes only, nothing computed or allocated),
    cached per model and input shape.
    """
    shape = _input_shape(model, input_size)
    cache = _POSITIONS.setdefault(model, {})
    if shape in cache:
        return cache[shape]
    names = {module: name for name, module in model.named_modules()}
    positions: dict[str, int] = {}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        channels = output.shape[1] if isinstance(module, nn.modules.conv._ConvNd) else (
            output.shape[-1])
        positions[names[module]] = output.numel() // max(channels, 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_counted_layer(m)]
    tensors = {name: torch.empty_like(t, device="meta")
               for name, t in chain(model.named_parameters(), model.named_buffers())}
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            functional_call(model, tensors, (torch.empty(shape, device="meta"),))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    cache[shape] = positions
    return positions


def _module_cost(name: str, module: nn.Module, state: dict[str, torch.Tensor],
                 positions: dict[str, int]) -> ModuleCost | None:
    own_params = dict(module.named_parameters(recurse=False))
    if not own_params and not _is_counted_layer(module):
        return None
    active = state if isinstance(module, SlimOp) else own_params
    params = sum(t.numel() for key, t in active.items() if key in own_params)
    if not _is_counted_layer(module):
        return ModuleCost(name, "other", 0, 0, 0, (1, 1), (1, 1), 0, params, 0)
    position = positions.get(name, 0)
    macs = position * active["weight"].numel()
    if isinstance(module, nn.Linear):
        return ModuleCost(name, "linear", module.in_features, module.out_features, 1, (1, 1),
                          (1, 1), position, params, macs)
    kernel = tuple(module.kernel_size)
    stride = tuple(module.stride)
    return ModuleCost(name, "conv", module.in_channels, module.out_channels, module.groups,
                      (kernel[0], kernel[-1]), (stride[0], stride[-1]), position, params,
                      macs)


def module_costs(model: DynModel, real_ch: Sequence[Any] | None = None,
                 input_size: InputSize | None = None) -> list[ModuleCost]:
    """Per-module params and MACs at ``real_ch`` (None: the current setting).

    Args:
        model: any slim network.
        real_ch: a width setting; the model is left at its previous one.
        input_size: ``R`` or ``(H, W)``...; default: the model's native resolution.
    """
    positions = output_positions(model, input_size)
    rows = []
    with widths_set(model, real_ch):
        for name, module in model.named_modules():
            state = module.active_tensors() if isinstance(module, SlimOp) else {}
            row = _module_cost(name, module, state, positions)
            if row is not None:
                rows.append(row)
    return rows


def subnet_cost(model: DynModel, real_ch: Sequence[Any] | None = None,
                input_size: InputSize | None = None) -> Cost:
    """Params and MACs of the subnet ``real_ch`` selects (None: the current setting).

    Equal to ``count_params``/``count_macs`` of ``extract_subnet(model, real_ch)``, without
    building it (about a millisecond for MobileNetV2 once the positions are cached).

    Example:
        >>> from fbnas.slim import build_slim_model
        >>> slim = build_slim_model("slim_mbv2")
        >>> subnet_cost(slim).macs  # full width: the zoo model's MACs at 224
        300774272
    """
    rows = module_costs(model, real_ch, input_size)
    return Cost(sum(r.params for r in rows), sum(r.macs for r in rows))


def effective(soft: SoftWidth | None, channels: int) -> torch.Tensor | float:
    """The effective width of a layer side: its soft width's, else its set width."""
    return float(channels) if soft is None else soft.effective


Size = tuple[torch.Tensor | float, torch.Tensor | float]


def soft_cost(model: nn.Module, sizes: Mapping[str, Size], prefix: str = ""
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(params, MACs)`` of ``model`` at its soft widths, differentiable in their weights.

    ALGORITHMS.md §2.3: per conv ``k² · C̄_in · C̄_out / γ`` parameters (+ ``C̄_out`` bias),
    times the effective output size ``h̄ · w̄`` for MACs (a depthwise conv: ``k² · C̄``, its
    width is its input's); per BatchNorm ``2 · C̄``; per linear ``C̄_in · C̄_out``
    (+ bias). A soft kernel counts ``Σ g_k k²`` for ``k²``. Layers without a soft width
    count their set widths; other parametrised modules count their parameters. At one-hot
    weights this is :func:`subnet_cost` of those widths, exactly.

    Args:
        model: a slim network (its layers carry the soft widths that
            :meth:`fbnas.slim.DynModel.set_soft_widths` set).
        sizes: effective output ``(h̄, w̄)`` of every conv, by module path
            (:func:`output_sizes` for one resolution).
        prefix: ``model``'s path in the network ``sizes`` names (``"stages.2.blocks.1."``
            for one block).
    """
    params: torch.Tensor | float = 0.0
    macs: torch.Tensor | float = 0.0
    for name, module in model.named_modules():
        if isinstance(module, SlimConv2d):
            kh, kw = module.kernel_size
            area = kh * kw if module.soft_kernel is None else module.soft_kernel.effective_area
            c_out = effective(module.soft_out, module.out_channels)
            if module.depthwise:
                weight = area * c_out
            else:
                weight = area * effective(module.soft_in, module.in_channels) * c_out
            if prefix + name not in sizes:
                raise SlimConfigError(f"no output size for conv {prefix + name!r}")
            h, w = sizes[prefix + name]
            macs = macs + weight * h * w
            params = params + weight + (c_out if module.bias is not None else 0.0)
        elif isinstance(module, SlimLinear):
            c_out = effective(module.soft_out, module.out_features)
            weight = effective(module.soft_in, module.in_features) * c_out
            macs = macs + weight
            params = params + weight + (c_out if module.bias is not None else 0.0)
        elif isinstance(module, SlimBatchNorm2d):
            if module.affine:
                params = params + 2 * effective(module.soft_out, module.num_features)
        else:
            params = params + sum(p.numel() for p in module.parameters(recurse=False))
    return torch.as_tensor(params), torch.as_tensor(macs)


def output_sizes(model: nn.Module, input_size: int | Sequence[int]) -> dict[str, tuple[int, int]]:
    """``{conv path: (H_out, W_out)}`` from one shapes-only pass on the ``meta`` device.

    Run it on the network without soft widths set (the sizes do not depend on widths).
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    names = {module: name for name, module in model.named_modules()}
    sizes: dict[str, tuple[int, int]] = {}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        sizes[names[module]] = (int(output.shape[-2]), int(output.shape[-1]))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    tensors = {name: torch.empty_like(t, device="meta")
               for name, t in chain(model.named_parameters(), model.named_buffers())}
    dim_in = int(getattr(model, "in_channels", 3))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            functional_call(model, tensors,
                            (torch.empty(1, dim_in, *input_size, device="meta"),))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sizes


__all__ = ["ModuleCost", "effective", "module_costs", "output_positions", "output_sizes",
           "soft_cost", "subnet_cost"]
