"""Parse an arch def (dict, JSON or YAML file) and unify it into an :class:`ArchSpec`.

The format is mobile-vision's: ``{"blocks": [stage, ...], "basic_args": {...},
"input_size": 224}`` where a stage is a list of ``(op, out_channels, stride, repeats,
*kwarg_dicts)``. Unifying expands repeats (copies after the first get stride 1, ``n=0``
drops the block), merges the kwarg dicts left to right (recursively, later keys win) and
numbers blocks inside each stage after expansion.

Only the structure is checked here; whether an op exists and accepts its kwargs is checked
when the blocks are resolved against the registry (``fbnas.builder``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import ArchSpec, BlockSpec, FrozenKwargs
from fbnas.io import read_json_or_yaml

ARCH_DEF_KEYS = frozenset({"blocks", "basic_args", "input_size", "preprocessing"})
"""Top-level keys an arch def may have. ``preprocessing`` is zoo metadata the builder ignores."""

ArchDefLike = Mapping[str, Any] | ArchSpec | str | Path


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``base`` updated by ``update``; nested dicts merge recursively, later keys win."""
    merged = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_arch_def(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Returns the arch def as a plain dict, reading a ``.json``/``.yaml``/``.yml`` file if given.

    YAML is read with ``yaml.safe_load``: an arch file never executes code.
    """
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, Path)):
        raise ArchDefError(f"an arch def must be a dict with 'blocks' or a path to a JSON/YAML "
                           f"file, got {type(source).__name__}: {source!r}")
    path = Path(source)
    if not path.is_file():
        raise ArchDefError(f"arch def file {str(path)!r} does not exist")
    try:
        data = read_json_or_yaml(path)
    except ValueError as exc:
        raise ArchDefError(f"arch def file {str(path)!r} is not valid: {exc}") from None
    if isinstance(data, Mapping) and "arch_def" in data and "blocks" not in data:
        data = data["arch_def"]  # files written by fbnas (search, checkpoints) wrap the def
    if not isinstance(data, Mapping):
        raise ArchDefError(f"arch def file {str(path)!r} must hold a mapping with 'blocks'")
    return dict(data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_options(options: Any, where: dict[str, Any], what: str) -> Mapping[str, Any]:
    if not isinstance(options, Mapping):
        raise ArchDefError(f"{what} must be a dict of options, got {options!r}", **where)
    for key in options:
        if not isinstance(key, str):
            raise ArchDefError(f"{what} has a non-string key {key!r}", **where)
    return options


def parse_block(entry: Any, stage_idx: int, entry_idx: int) -> tuple[str, int, int, int, dict]:
    """Checks one ``(op, c, s, n, *dicts)`` entry; returns op, c, s, n and the merged kwargs."""
    where: dict[str, Any] = {"stage": stage_idx, "block": entry_idx}
    if not isinstance(entry, (list, tuple)):
        raise ArchDefError(f"a block must be a list (op, out_channels, stride, repeats, "
                           f"{{kwargs}}...), got {entry!r}", **where)
    if len(entry) < 2:
        raise ArchDefError(f"a block needs at least (op, out_channels), got {len(entry)} "
                           f"element(s): {list(entry)!r}", **where)
    op = entry[0]
    if not isinstance(op, str) or not op:
        raise ArchDefError(f"the op name must be a non-empty string, got {op!r}", **where)
    where["op"] = op
    out_channels = entry[1]
    stride = entry[2] if len(entry) > 2 else 1
    repeats = entry[3] if len(entry) > 3 else 1
    if not _is_int(out_channels) or out_channels <= 0:
        raise ArchDefError(f"out_channels must be a positive int, got {out_channels!r}",
                           key="out_channels", **where)
    if not _is_int(stride) or stride == 0:
        raise ArchDefError(f"stride must be a non-zero int (negative = upsample), got "
                           f"{stride!r}", key="stride", **where)
    if not _is_int(repeats) or repeats < 0:
        raise ArchDefError(f"repeats must be an int >= 0, got {repeats!r}", key="repeats",
                           **where)
    kwargs: dict[str, Any] = {}
    for position, options in enumerate(entry[4:], start=4):
        options = _check_options(options, where, f"element {position} of the block")
        kwargs = merge_dicts(kwargs, options)
    return op, out_channels, stride, repeats, kwargs


def unify_arch_def(arch_def: ArchDefLike) -> ArchSpec:
    """Returns the flat, typed form of an arch def.

    Args:
        arch_def: a dict in the mobile-vision format, a path to a JSON/YAML file holding one,
            or an :class:`ArchSpec` (returned unchanged).

    Raises:
        ArchDefError: naming the stage, block, op and key of the first malformed part.

    Example:
        >>> spec = unify_arch_def({"blocks": [[("conv_k3", 8, 2, 1)],
        ...                                   [("ir_k3", 16, 2, 2, {"expansion": 4})]]})
        >>> [(b.name, b.stride) for b in spec.blocks]
        [('xif0_0', 2), ('xif1_0', 2), ('xif1_1', 1)]
    """
    if isinstance(arch_def, ArchSpec):
        return arch_def
    raw = load_arch_def(arch_def)
    unknown = sorted(set(raw) - ARCH_DEF_KEYS, key=repr)
    if unknown:
        raise ArchDefError(f"unknown top-level key(s) {unknown}; an arch def has "
                           f"{sorted(ARCH_DEF_KEYS)}", key=str(unknown[0]))
    if "blocks" not in raw:
        raise ArchDefError("an arch def needs 'blocks': a list of stages", key="blocks")
    stages = raw["blocks"]
    basic_args = raw.get("basic_args")
    if basic_args is None:
        basic_args = {}
    _check_options(basic_args, {"key": "basic_args"}, "'basic_args'")
    input_size = raw.get("input_size")
    if input_size is not None and (not _is_int(input_size) or input_size <= 0):
        raise ArchDefError(f"input_size must be a positive int, got {input_size!r}",
                           key="input_size")

    blocks = unify_stages(stages)
    if not blocks:
        raise ArchDefError("the arch def has no blocks (every stage is empty or n=0)",
                           key="blocks")
    return ArchSpec(blocks=tuple(blocks), basic_args=FrozenKwargs(basic_args),
                    input_size=input_size)


def unify_stages(stages: Any, key: str = "blocks") -> list[BlockSpec]:
    """The flat block list of a list of stages: repeats expanded (copies after the first at
    stride 1, ``n=0`` dropped), kwarg dicts merged, blocks numbered inside each stage.

    Raises:
        ArchDefError: naming the stage, block, op and key of the first malformed entry
            (``key`` names the arch-def entry the stages came from when it is not
            ``blocks``).
    """
    if not isinstance(stages, Sequence) or isinstance(stages, (str, bytes)):
        raise ArchDefError(f"{key!r} must be a list of stages, got {stages!r}", key=key)
    blocks: list[BlockSpec] = []
    for stage_idx, stage in enumerate(stages):
        try:
            blocks += _unify_stage(stage, stage_idx)
        except ArchDefError as exc:
            if key == "blocks":
                raise
            raise ArchDefError(f"in {key!r}: {exc.reason}", stage=exc.stage, block=exc.block,
                               op=exc.op, key=exc.key) from None
    return blocks


def _unify_stage(stage: Any, stage_idx: int) -> list[BlockSpec]:
    if not isinstance(stage, Sequence) or isinstance(stage, (str, bytes)):
        raise ArchDefError(f"a stage must be a list of blocks, got {stage!r}", stage=stage_idx)
    blocks: list[BlockSpec] = []
    for entry_idx, entry in enumerate(stage):
        op, out_channels, stride, repeats, kwargs = parse_block(entry, stage_idx, entry_idx)
        frozen = FrozenKwargs(kwargs)
        for copy_idx in range(repeats):
            blocks.append(BlockSpec(op=op, out_channels=out_channels,
                                    stride=stride if copy_idx == 0 else 1, kwargs=frozen,
                                    stage_idx=stage_idx, block_idx=len(blocks)))
    return blocks


UNIFIED_BLOCK_KEYS = frozenset({"block_op", "block_cfg", "stage_idx", "block_idx"})
"""Keys of a block in mobile-vision's unified form (``unify_arch_def(arch, ["blocks"])``)."""


def block_spec_from_unified(entry: Any, position: int) -> BlockSpec:
    """A :class:`BlockSpec` from a unified block dict ``{"block_op", "block_cfg":
    {"out_channels", "stride", **options}, "stage_idx", "block_idx"}``.

    ``position`` (the index in the block list) locates errors when the dict's own indices
    are missing or malformed.

    Raises:
        ArchDefError: naming the block and the bad key.
    """
    if not isinstance(entry, Mapping):
        raise ArchDefError(f"a unified block must be a dict with {sorted(UNIFIED_BLOCK_KEYS)},"
                           f" got {entry!r}", block=position)
    stage_idx, block_idx = entry.get("stage_idx", 0), entry.get("block_idx", position)
    where: dict[str, Any] = {"stage": stage_idx if _is_int(stage_idx) else None,
                             "block": block_idx if _is_int(block_idx) else position}
    unknown = sorted(set(entry) - UNIFIED_BLOCK_KEYS, key=repr)
    if unknown:
        raise ArchDefError(f"unknown key(s) {unknown} in a unified block (it has "
                           f"{sorted(UNIFIED_BLOCK_KEYS)})", key=str(unknown[0]), **where)
    for name in ("block_op", "block_cfg"):
        if name not in entry:
            raise ArchDefError(f"a unified block needs {name!r}", key=name, **where)
    for name, value in (("stage_idx", stage_idx), ("block_idx", block_idx)):
        if not _is_int(value) or value < 0:
            raise ArchDefError(f"{name} must be an int >= 0, got {value!r}", key=name, **where)
    cfg = dict(_check_options(entry["block_cfg"], where, "'block_cfg'"))
    if "out_channels" not in cfg:
        raise ArchDefError("block_cfg needs 'out_channels'", key="out_channels", **where)
    out_channels, stride = cfg.pop("out_channels"), cfg.pop("stride", 1)
    op, out_channels, stride, _, kwargs = parse_block(
        [entry["block_op"], out_channels, stride, 1, cfg], stage_idx, block_idx)
    return BlockSpec(op=op, out_channels=out_channels, stride=stride,
                     kwargs=FrozenKwargs(kwargs), stage_idx=stage_idx, block_idx=block_idx)


def count_strides(spec: ArchSpec) -> float:
    """Total down-sampling factor: the product of strides (a negative stride s counts 1/|s|)."""
    total = 1.0
    for block in spec.blocks:
        total *= block.stride if block.stride > 0 else 1.0 / -block.stride
    return total


def stage_out_channels(spec: ArchSpec) -> list[int]:
    """The requested output width of each stage's last block (before width scaling)."""
    return [spec.stage(s)[-1].out_channels for s in range(spec.num_stages) if spec.stage(s)]
