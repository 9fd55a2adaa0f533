"""Counting params and MACs of built modules (the measured side of the cost model).

MACs are multiply-accumulates of conv and linear layers only — bias, norms, activations,
adds and pooling are not counted — which equals ``torch.utils.flop_counter`` total / 2 and
the reference's figures. Counting runs one forward pass with hooks; a model built under
``torch.device("meta")`` is counted without allocating or computing anything, which is
how the large zoo models are counted at their native resolutions.

It sits with the blocks (the cost package re-exports it) because the block registry counts
the analytic cost of a user's own op with it, and blocks rank below cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

InputSize = int | Sequence[int]


def count_params(model: nn.Module) -> int:
    """Number of parameters (every ``model.parameters()`` element, BN affine included)."""
    return sum(p.numel() for p in model.parameters())


def _input_shape(model: nn.Module, input_size: InputSize) -> tuple[int, ...]:
    if isinstance(input_size, int):
        return (1, 3, input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if len(shape) == 2:
        return (1, 3, *shape)
    if len(shape) == 3:
        return (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"input_size must be R, (H, W), (C, H, W) or (N, C, H, W), got "
                         f"{input_size!r}")
    return shape


def _device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * int(
            torch.tensor(module.kernel_size).prod())
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


@dataclass(frozen=True)
class ModuleCostRow:
    """Cost of one named part of a model (a block, or the head)."""

    name: str
    params: int
    macs: int
    output_shape: tuple[int, ...]


def count_breakdown(
    model: nn.Module, input_size: InputSize, parts: Sequence[tuple[str, nn.Module]] | None = None
) -> tuple[list[ModuleCostRow], tuple[int, ...]]:
    """Per-part params and MACs from one forward pass, and the model's output shape.

    Args:
        model: any module taking one ``(N, C, H, W)`` tensor.
        input_size: resolution ``R`` (a 1x3xRxR input) or a full shape.
        parts: ``(name, submodule)`` to report; defaults to the blocks of an FBNet model
            (``backbone.stages.*`` and ``head``) or else the model's direct children.
    """
    if parts is None:
        parts = _default_parts(model)
    shape = _input_shape(model, input_size)
    layer_macs: dict[int, int] = {}
    part_outputs: dict[str, tuple[int, ...]] = {}
    handles = []

    def layer_hook(module: nn.Module, _inputs, output) -> None:
        layer_macs[id(module)] = layer_macs.get(id(module), 0) + _layer_macs(module, output)

    def part_hook(name: str):
        def hook(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                part_outputs[name] = tuple(output.shape)
        return hook

    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(module.register_forward_hook(layer_hook))
    for name, part in parts:
        handles.append(part.register_forward_hook(part_hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.zeros(shape, device=_device(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    rows = []
    for name, part in parts:
        macs = sum(layer_macs.get(id(m), 0) for m in part.modules())
        rows.append(ModuleCostRow(name, count_params(part), macs, part_outputs.get(name, ())))
    return rows, tuple(output.shape)


def _default_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    backbone = getattr(model, "backbone", None)
    stages = getattr(backbone, "stages", None)
    if isinstance(stages, nn.Module):
        parts = list(stages.named_children())
        head = getattr(model, "head", None)
        if isinstance(head, nn.Module):
            parts.append(("head", head))
        return parts
    return list(model.named_children()) or [("model", model)]


def count_module(module: nn.Module, input_size: InputSize) -> tuple[int, int, tuple[int, ...]]:
    """(params, MACs, output shape) of a module for one input."""
    rows, out_shape = count_breakdown(module, input_size, parts=[("module", module)])
    return rows[0].params, rows[0].macs, out_shape


def count_macs(model: nn.Module, input_size: InputSize) -> int:
    """Multiply-accumulates of conv and linear layers for one input (batch 1 by default).

    Example:
        >>> count_macs(nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 4, 4))
        3456
    """
    return count_module(model, input_size)[1]
