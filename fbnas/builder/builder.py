"""ArchSpec -> nn.Module, with a per-block trace (channels, stride, shapes, cost).

Resolution is separate from building: :meth:`FBNetBuilder.trace` resolves every block
against the registry (options checked, widths rounded) without creating a tensor, so search
code and the analytic cost model get exact channel counts and costs at Python speed;
:meth:`FBNetBuilder.build_blocks` then only instantiates the resolved plans.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.rounding import scale_channels
from fbnas.arch.spec import ArchSpec, BlockSpec, FrozenKwargs, HeadSpec, thaw
from fbnas.arch.unify import block_spec_from_unified, merge_dicts
from fbnas.blocks import BLOCKS, HEADS
from fbnas.blocks.heads import HeadPlan
from fbnas.blocks.layers import HW, Cost
from fbnas.blocks.registry import BlockPlan

BUILDER_KEYS = frozenset({"width_divisor", "bn_args"})
"""basic_args keys the builder itself reads (besides what ops take)."""


@dataclass(frozen=True)
class BlockTrace:
    """One resolved block: where it sits, its real widths, its plan, and (given an input
    resolution) its spatial sizes and cost."""

    spec: BlockSpec
    in_channels: int
    out_channels: int
    plan: BlockPlan
    in_hw: HW | None = None
    out_hw: HW | None = None
    cost: Cost | None = None
    requested_out_channels: int | None = None
    """The width asked of the op (``out_channels`` after width scaling)."""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class HeadTrace:
    """The resolved head: its spec, input width and plan, and (given the input's spatial
    size) its cost and per-sample output shape. The one place a head is costed: the
    analytic cost, the DNAS layer costs and the latency tables all read it."""

    spec: HeadSpec
    in_channels: int
    plan: HeadPlan
    in_hw: HW | None = None
    cost: Cost | None = None
    output_shape: tuple[int, ...] | None = None
    """One sample's output shape (``(classes,)`` for the classifier)."""


class FBNetBuilder:
    """Builds blocks from unified specs, as the mobile-vision ``FBNetBuilder`` does.

    Args:
        width_ratio: multiplies every block's ``out_channels``; when it is not 1 the result
            is rounded with :func:`fbnas.arch.round_channels` to the width divisor.
        bn_args: network-wide norm (``"bn"``, ``{"name": "gn", "num_groups": 8}``...).
        width_divisor: channel granularity for the width ratio and for ops that round
            (1 by default: arch defs without it get no rounding, as in the reference).

    Example:
        >>> from fbnas.arch import unify_arch_def
        >>> spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3", 16, 2, 1)]]})
        >>> builder = FBNetBuilder(width_ratio=1.0)
        >>> builder.build_blocks(spec, dim_in=3).out_channels
        16
    """

    def __init__(
        self,
        width_ratio: float = 1.0,
        bn_args: str | Mapping[str, Any] | None = None,
        width_divisor: int = 1,
        basic_args: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(width_ratio, (int, float)) or width_ratio <= 0:
            raise ValueError(f"width_ratio must be > 0, got {width_ratio!r}")
        if not isinstance(width_divisor, int) or width_divisor < 1:
            raise ValueError(f"width_divisor must be an int >= 1, got {width_divisor!r}")
        self.width_ratio = float(width_ratio)
        self.basic_args: dict[str, Any] = {"width_divisor": width_divisor}
        if bn_args is not None:
            self.basic_args["bn_args"] = bn_args
        self._frozen_basic_args = FrozenKwargs(self.basic_args)
        if basic_args:
            self.add_basic_args(basic_args)

    def add_basic_args(self, basic_args: Mapping[str, Any] | None = None, /,
                       **options: Any) -> None:
        """Merges network-wide defaults (recursively; later keys win).

        Takes a mapping (``add_basic_args(arch["basic_args"])``) or, as mobile-vision's
        builder does, keywords (``add_basic_args(**arch["basic_args"])``); keywords win over
        the mapping. Each op takes the keys it knows; a key that no registered op knows is
        an error.
        """
        if options:
            basic_args = {**(basic_args or {}), **options}
        if not basic_args:
            return
        known = BLOCKS.all_option_names() | BUILDER_KEYS
        for key in basic_args:
            if key not in known:
                raise ArchDefError(f"basic_args key {key!r} is not an option of any "
                                   f"registered op", key=f"basic_args.{key}")
        divisor = basic_args.get("width_divisor", 1)
        if not _is_int(divisor) or divisor < 1:
            raise ArchDefError(f"basic_args width_divisor must be an int >= 1, got "
                               f"{thaw(divisor)!r}", key="basic_args.width_divisor")
        self.basic_args = merge_dicts(self.basic_args, thaw(basic_args))
        self._frozen_basic_args = FrozenKwargs(self.basic_args)

    @property
    def width_divisor(self) -> int:
        return int(self.basic_args["width_divisor"])

    def _blocks(self, blocks: ArchSpec | Iterable[BlockSpec | Mapping[str, Any]],
                stage_indices: Sequence[int] | None) -> list[BlockSpec]:
        """Unified specs; mobile-vision's unified block dicts are converted (and checked)."""
        specs = list(blocks.blocks if isinstance(blocks, ArchSpec) else blocks)
        for position, spec in enumerate(specs):
            if isinstance(spec, Mapping):
                specs[position] = block_spec_from_unified(spec, position)
            elif not isinstance(spec, BlockSpec):
                raise TypeError(f"build_blocks takes unified blocks (BlockSpecs from "
                                f"fbnas.unify_arch_def, or the dicts of "
                                f"fbnas.compat.mobile_cv.unify_arch_def), got {spec!r}")
        if stage_indices is not None:
            specs = [s for s in specs if s.stage_idx in set(stage_indices)]
        return specs

    def resolve_block(self, spec: BlockSpec, in_channels: int) -> BlockTrace:
        """Resolves one block against the registry (no tensors are made)."""
        try:
            # A block's own width_divisor, if valid; op.plan reports a mistyped one.
            divisor = spec.kwargs.get("width_divisor")
            if not _is_int(divisor) or divisor < 1:
                divisor = self.width_divisor
            out = scale_channels(spec.out_channels, self.width_ratio, divisor)
            plan, out_channels = _resolve(BLOCKS.version, spec.op, in_channels, out,
                                          spec.stride, spec.kwargs, self._frozen_basic_args)
        except ArchDefError as exc:
            raise exc.located(stage=spec.stage_idx, block=spec.block_idx, op=spec.op) from None
        return BlockTrace(spec, in_channels, out_channels, plan, requested_out_channels=out)

    def trace(
        self,
        blocks: ArchSpec | Iterable[BlockSpec],
        dim_in: int = 3,
        resolution: int | HW | None = None,
        stage_indices: Sequence[int] | None = None,
    ) -> list[BlockTrace]:
        """Resolves every block; with ``resolution`` also its spatial sizes and cost."""
        hw: HW | None = None
        if resolution is not None:
            hw = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        traces = []
        in_channels = dim_in
        for spec in self._blocks(blocks, stage_indices):
            trace = self.resolve_block(spec, in_channels)
            if hw is not None:
                try:
                    cost, out_hw = _cost(trace.plan, hw)
                except ArchDefError as exc:
                    raise exc.located(stage=spec.stage_idx, block=spec.block_idx,
                                      op=spec.op) from None
                trace = dataclasses.replace(trace, in_hw=hw, out_hw=out_hw, cost=cost)
                hw = out_hw
            traces.append(trace)
            in_channels = trace.out_channels
        return traces

    def trace_head(self, spec: HeadSpec, in_channels: int,
                   in_hw: int | HW | None = None) -> HeadTrace:
        """Resolves a head on ``in_channels`` features; with ``in_hw`` also its cost.

        Raises:
            ArchDefError: an unknown head op or bad options, naming the head.
        """
        if not isinstance(spec, HeadSpec):
            raise TypeError(f"trace_head takes a HeadSpec, got {spec!r}")
        hw = (in_hw, in_hw) if isinstance(in_hw, int) else in_hw
        try:
            plan = HEADS.get(spec.op).plan(in_channels, spec.options)
            trace = HeadTrace(spec, in_channels, plan)
            if hw is not None:
                cost, output_shape = plan.cost(tuple(hw))
                trace = dataclasses.replace(trace, in_hw=tuple(hw), cost=cost,
                                            output_shape=tuple(output_shape))
        except ArchDefError as exc:
            raise ArchDefError(f"head {spec.op!r}: {exc.reason}", key=exc.key) from None
        return trace

    def build_head(self, spec: HeadSpec | HeadTrace, in_channels: int | None = None
                   ) -> nn.Module:
        """Builds a head (a spec on ``in_channels`` features, or an already resolved trace)."""
        if isinstance(spec, HeadSpec):
            if in_channels is None:
                raise TypeError("build_head of a HeadSpec needs in_channels")
            spec = self.trace_head(spec, in_channels)
        return build_head_plan(spec)

    def build_blocks(
        self,
        blocks: ArchSpec | Iterable[BlockSpec],
        dim_in: int = 3,
        stage_indices: Sequence[int] | None = None,
        prefix_name: str = "xif",
    ) -> nn.Sequential:
        """Returns ``nn.Sequential`` of the blocks named ``xif{stage}_{block}``, with
        ``.out_channels`` set to the last block's width."""
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        last = dim_in
        for trace in self.trace(blocks, dim_in, stage_indices=stage_indices):
            name = f"{prefix_name}{trace.spec.stage_idx}_{trace.spec.block_idx}"
            modules[name] = build_plan(trace)
            last = trace.out_channels
        sequential = nn.Sequential(modules)
        sequential.out_channels = last
        return sequential


# Resolving and costing are pure functions of their (hashable) inputs, and networks repeat
# blocks a lot (repeats, shared zoo stages, search candidates), so both are memoised. The
# registry version is part of the key: re-registering an op never serves a stale plan.
@functools.lru_cache(maxsize=65536)
def _resolve(registry_version: int, op_name: str, in_channels: int, out_channels: int,
             stride: int, kwargs: FrozenKwargs,
             basic_args: FrozenKwargs) -> tuple[BlockPlan, int]:
    plan = BLOCKS.get(op_name).plan(in_channels, out_channels, stride, kwargs, basic_args)
    return plan, int(plan.out_channels)


@functools.lru_cache(maxsize=65536)
def _cost(plan: BlockPlan, hw: HW) -> tuple[Cost, HW]:
    return plan.cost(hw)


def clear_plan_cache() -> None:
    """Empties the memoised block resolutions and costs (for benchmarks of a cold start)."""
    _resolve.cache_clear()
    _cost.cache_clear()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_plan(trace: BlockTrace) -> nn.Module:
    """Instantiates one resolved block; a user op failing inside is reported with its place."""
    try:
        return trace.plan.build()
    except ArchDefError as exc:
        spec = trace.spec
        raise exc.located(stage=spec.stage_idx, block=spec.block_idx, op=spec.op) from None
    except (TypeError, ValueError, RuntimeError) as exc:
        spec = trace.spec
        raise ArchDefError(f"building the block failed: {exc}", stage=spec.stage_idx,
                           block=spec.block_idx, op=spec.op) from exc


def build_head_plan(trace: HeadTrace) -> nn.Module:
    """Instantiates a resolved head; a user head failing inside is reported as the head's."""
    try:
        return trace.plan.build()
    except ArchDefError as exc:
        raise ArchDefError(f"head {trace.spec.op!r}: {exc.reason}", key=exc.key) from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ArchDefError(f"head {trace.spec.op!r}: building it failed: {exc}") from exc


__all__ = ["BlockTrace", "FBNetBuilder", "HeadTrace", "build_head_plan", "build_plan",
           "clear_plan_cache"]
