"""Arch-def types, parsing and unification, and the reference channel rounding (no torch)."""

from fbnas.arch.errors import ArchDefError
from fbnas.arch.rounding import round_channels, scale_channels
from fbnas.arch.spec import ArchSpec, BlockSpec, FrozenKwargs, HeadSpec
from fbnas.arch.unify import count_strides, load_arch_def, merge_dicts, unify_arch_def

__all__ = [
    "ArchDefError",
    "ArchSpec",
    "BlockSpec",
    "FrozenKwargs",
    "HeadSpec",
    "count_strides",
    "load_arch_def",
    "merge_dicts",
    "round_channels",
    "scale_channels",
    "unify_arch_def",
]
