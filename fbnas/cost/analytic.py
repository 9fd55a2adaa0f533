"""Analytic params and MACs straight from an arch def, without building torch modules.

Search evaluates huge numbers of candidates; building and counting a network costs tens of
milliseconds to seconds, this costs well under a millisecond per small network. The figures
are computed by the same layer specs the modules are built from (``fbnas.blocks.layers``),
and the test suite checks that they equal the counted figures for every zoo model.
"""

from __future__ import annotations

from dataclasses import dataclass

from fbnas.arch.spec import ArchSpec, HeadSpec
from fbnas.blocks.heads import head_spec_for
from fbnas.builder import FBNetBuilder
from fbnas.zoo.model import DEFAULT_RESOLUTION, ArchSource, resolve_arch


@dataclass(frozen=True)
class BlockCostRow:
    """Cost of one block: name, op, widths, spatial output and params/MACs."""

    name: str
    op: str
    in_channels: int
    out_channels: int
    out_hw: tuple[int, int]
    params: int
    macs: int


@dataclass(frozen=True)
class ArchCost:
    """Whole-network cost (backbone + head) with a per-block breakdown."""

    params: int
    macs: int
    resolution: int
    output_shape: tuple[int, ...]
    blocks: tuple[BlockCostRow, ...]
    head_params: int
    head_macs: int
    head: HeadSpec | None = None


def arch_cost(
    arch: ArchSource,
    resolution: int | None = None,
    num_classes: int | None = 1000,
    width_ratio: float = 1.0,
    dim_in: int = 3,
    *,
    head: HeadSpec | None = None,
) -> ArchCost:
    """Params and MACs of the network :func:`fbnas.build_model` would build, analytically.

    Args:
        arch: a zoo name, an arch-def dict or file, or an ArchSpec.
        resolution: input size; defaults to the arch's native resolution.
        num_classes: classifier outputs (``None``: backbone only).
        head: another head, as data (replaces the classifier of ``num_classes``).

    Example:
        >>> arch_cost("fbnet_a", 224).macs
        244452664
    """
    spec, _, native = resolve_arch(arch)
    return spec_cost(spec, resolution or native, num_classes, width_ratio, dim_in, head=head)


def spec_cost(
    spec: ArchSpec,
    resolution: int = DEFAULT_RESOLUTION,
    num_classes: int | None = 1000,
    width_ratio: float = 1.0,
    dim_in: int = 3,
    *,
    head: HeadSpec | None = None,
) -> ArchCost:
    """:func:`arch_cost` for an already unified spec (the search hot path)."""
    builder = FBNetBuilder(width_ratio=width_ratio)
    builder.add_basic_args(spec.basic_args)
    traces = builder.trace(spec, dim_in=dim_in, resolution=resolution)
    rows = tuple(
        BlockCostRow(t.name, t.spec.op, t.in_channels, t.out_channels, t.out_hw,
                     t.cost.params, t.cost.macs)
        for t in traces
    )
    last = traces[-1]
    head = head_spec_for(num_classes, head)
    head_params = head_macs = 0
    if head is not None:
        head_trace = builder.trace_head(head, last.out_channels, last.out_hw)
        head_params, head_macs = head_trace.cost.params, head_trace.cost.macs
        output_shape: tuple[int, ...] = (1, *head_trace.output_shape)
    else:
        output_shape = (1, last.out_channels, *last.out_hw)
    return ArchCost(
        params=sum(r.params for r in rows) + head_params,
        macs=sum(r.macs for r in rows) + head_macs,
        resolution=resolution,
        output_shape=output_shape,
        blocks=rows,
        head_params=head_params,
        head_macs=head_macs,
        head=head,
    )
