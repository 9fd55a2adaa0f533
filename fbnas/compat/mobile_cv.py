"""mobile-vision's FBNet builder API over fbnas, for users moving their code over.

Code written against ``mobile_cv.arch.fbnet_v2.fbnet_builder`` runs with one changed import::

    from fbnas.compat import mobile_cv as mbuilder

    arch_def = mbuilder.unify_arch_def(arch_def, ["blocks"])
    builder = mbuilder.FBNetBuilder(1.0)
    builder.add_basic_args(arch_def.get("basic_args"))   # or add_basic_args(**...)
    model = builder.build_blocks(arch_def["blocks"], dim_in=3)

:func:`unify_arch_def` turns each listed block list into mobile-vision's unified block
dicts and passes every other key through unchanged; :class:`FBNetBuilder` is fbnas's one
builder (``fbnas.FBNetBuilder``), whose ``build_blocks`` takes those dicts as well as
fbnas's ``BlockSpec``s. The blocks are fbnas's own, with the reference's module names
(``xif{stage}_{block}``), so mobile-vision checkpoints load into the result.

Written from the format's documented behaviour (REFERENCE_BUILDER.md), not from
mobile-vision's code (CC BY-NC).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import ArchSpec, BlockSpec
from fbnas.arch.unify import block_spec_from_unified, stage_out_channels, unify_stages
from fbnas.arch.unify import count_strides as count_spec_strides
from fbnas.builder import FBNetBuilder

UnifiedBlock = dict[str, Any]
"""``{"block_op": op, "block_cfg": {"out_channels", "stride", **options}, "stage_idx",
"block_idx"}``."""


def unify_arch_def(arch_def: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``arch_def`` whose ``keys`` hold flat lists of unified block dicts.

    Each listed key's stages are parsed as fbnas parses ``blocks``: repeats expanded (the
    copies after the first get stride 1, ``n=0`` drops the block), kwarg dicts merged left
    to right, ``stage_idx`` and ``block_idx`` (counted after expansion) added. Every other
    key — ``basic_args``, ``input_size`` or anything of the user's — is copied unchanged.

    Raises:
        ArchDefError: a listed key is missing, or one of its blocks is malformed (naming
            the key, stage, block and option).
    """
    if not isinstance(arch_def, Mapping):
        raise ArchDefError(f"an arch def must be a dict, got {type(arch_def).__name__}")
    if isinstance(keys, str):
        raise ArchDefError(f"keys must be a list of the arch def's block lists, e.g. "
                           f"[{keys!r}], not a string")
    unified = copy.deepcopy(dict(arch_def))
    for key in keys:
        if key not in unified:
            raise ArchDefError(f"the arch def has no {key!r} to unify (it has "
                               f"{sorted(map(str, unified))})", key=str(key))
        unified[key] = [spec.to_unified_dict() for spec in unify_stages(unified[key], key)]
    return unified


def _spec(blocks: Sequence[UnifiedBlock | BlockSpec]) -> ArchSpec:
    """The blocks as an :class:`ArchSpec` (dicts converted and checked)."""
    specs = tuple(b if isinstance(b, BlockSpec) else block_spec_from_unified(b, i)
                  for i, b in enumerate(blocks))
    if not specs:
        raise ArchDefError("the block list is empty")
    return ArchSpec(blocks=specs)


def get_num_stages(blocks: Sequence[UnifiedBlock | BlockSpec]) -> int:
    """Number of stages of a unified block list (the largest ``stage_idx`` + 1)."""
    return _spec(blocks).num_stages


def get_num_blocks_in_stage(blocks: Sequence[UnifiedBlock | BlockSpec]) -> list[int]:
    """Blocks per stage, stage 0 first."""
    spec = _spec(blocks)
    return [len(spec.stage(s)) for s in range(spec.num_stages)]


def get_stages_dim_out(blocks: Sequence[UnifiedBlock | BlockSpec]) -> list[int]:
    """The requested output width of each stage's last block (before any width ratio)."""
    return stage_out_channels(_spec(blocks))


def count_strides(blocks: Sequence[UnifiedBlock | BlockSpec]) -> float:
    """The product of the blocks' strides; a negative stride ``-s`` (upsampling) counts
    as ``1/s``."""
    return count_spec_strides(_spec(blocks))


__all__ = [
    "FBNetBuilder",
    "count_strides",
    "get_num_blocks_in_stage",
    "get_num_stages",
    "get_stages_dim_out",
    "unify_arch_def",
]
