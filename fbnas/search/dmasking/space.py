"""The DMaskingNAS search space as data: per-stage width options, expansions, kernels, SE,
resolutions (ALGORITHMS.md §2.4).

A space file (YAML or JSON) lists the stages of the supernet, stem first, the head block
last; every range is in the file, as a list or as ``{min, max, step}``::

    name: dmasking_digits
    resolutions: [32, 24, 16]          # the largest is the supernet's input size
    resolution_blocks: null            # N: blocks run at the searched resolution (null: all)
    width_divisor: 4
    stages:
      - {kind: conv, blocks: 1, stride: 2, widths: {min: 8, max: 16, step: 4}, act: hswish}
      - {kind: ir, blocks: 2, stride: 2, widths: [16, 24], expansions: [1, 3, 6],
         kernels: [3, 5], se: false, act: relu}
      - {kind: ir_pool, blocks: 1, stride: 1, widths: [64], expansions: [6], act: hswish}

Widths are the output channels of each block of the stage (the blocks of a stage after its
first share them through their residual adds: one choice, as FBNetV2 requires); the
hidden width of an inverted residual is searched by masking too, with options
``round(e · C_in,max)`` for each expansion ``e`` (``C_in,max``: the block's widest input),
and converted back to a (fractional) ratio when a network is derived. ``channels`` (the
supernet's width) defaults to the largest width option; an option above it, off the
divisor grid, or an empty list is refused naming the stage.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from fbnas.arch.rounding import round_channels
from fbnas.errors import ConfigError, did_you_mean

Kind = Literal["conv", "ir", "ir_pool"]
KINDS: tuple[Kind, ...] = ("conv", "ir", "ir_pool")
ACTS = ("relu", "hswish")


def _reject(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(str(key), known, n=2)}")


def _range(value: Any, where: str, real: bool = False) -> tuple:
    """A list of options, or ``{min, max, step}`` expanded (inclusive)."""
    if isinstance(value, Mapping):
        _reject(value, ("min", "max", "step"), where)
        missing = [k for k in ("min", "max", "step") if k not in value]
        if missing:
            raise ConfigError(f"{where}: a range needs min, max and step (missing "
                              f"{', '.join(missing)})")
        lo, hi, step = value["min"], value["max"], value["step"]
        if not step > 0 or hi < lo:
            raise ConfigError(f"{where}: a range needs step > 0 and max >= min, got {value}")
        count = int(math.floor((hi - lo) / step + 1e-9)) + 1
        values = [lo + i * step for i in range(count)]
        value = [round(v, 6) for v in values] if real else [int(v) for v in values]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{where}: expected a list of options or {{min, max, step}}, got "
                          f"{value!r}")
    if not value:
        raise ConfigError(f"{where}: the option list is empty")
    out = []
    for v in value:
        ok = isinstance(v, numbers.Real) if real else isinstance(v, numbers.Integral)
        if isinstance(v, bool) or not ok or v <= 0:
            raise ConfigError(f"{where}: options must be positive "
                              f"{'numbers' if real else 'ints'}, got {v!r}")
        out.append(float(v) if real else int(v))
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}: repeated options {out}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class MaskedStage:
    """One stage of the supernet: ``blocks`` blocks of one kind (the first with ``stride``).

    Attributes:
        kind: ``conv`` (a conv block: the stem), ``ir`` (inverted residuals), ``ir_pool``
            (the pooled head block).
        widths: output width options of every block of the stage.
        channels: the supernet's width (default the largest option).
        expansions: hidden-width options as ratios of the block's widest input (ir,
            ir_pool).
        kernels: kernel sizes (ir: 3 and/or 5; conv: one).
        se: squeeze-excite (hard-sigmoid gate) in the inverted residuals.
        act: ``relu`` or ``hswish``.
        skip: mixes FBNetV1-style block choices into the masks: every block after the
            stage's first is a choice between itself and an identity (``skip``), a Gumbel
            mixture ``g_block · block(x) + g_skip · x`` whose cost is ``g_block`` times
            the block's.
        residual: false drops the identity adds of the stage's blocks (``res_conn_args:
            null``), which unties their widths from their inputs'.
    """

    kind: Kind
    blocks: int
    stride: int
    widths: tuple[int, ...]
    channels: int
    expansions: tuple[float, ...] = (1.0,)
    kernels: tuple[int, ...] = (3,)
    se: bool = False
    act: str = "relu"
    skip: bool = False
    residual: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], divisor: int, where: str) -> MaskedStage:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a stage is a mapping, got {data!r}")
        _reject(data, ("kind", "blocks", "stride", "widths", "channels",
                       "expansions", "kernels", "se", "act", "skip", "residual"), where)
        kind = data.get("kind", "ir")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got "
                              f"{kind!r}{did_you_mean(str(kind), KINDS)}")
        if "widths" not in data:
            raise ConfigError(f"{where}: widths (the output width options) are missing")
        widths = _range(data["widths"], f"{where}.widths")
        channels = data.get("channels", max(widths))
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"{where}.channels: must be an int >= 1, got {channels!r}")
        above = [w for w in widths if w > channels]
        if above:
            raise ConfigError(f"{where}.widths: options {above} are above the layer's "
                              f"maximum {channels} (channels)")
        off = [w for w in widths if w % divisor]
        if off:
            raise ConfigError(f"{where}.widths: options {off} are not multiples of the "
                              f"width divisor {divisor}")
        blocks, stride = data.get("blocks", 1), data.get("stride", 1)
        for key, value in (("blocks", blocks), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key}: must be an int >= 1, got {value!r}")
        expansions = _range(data.get("expansions", [1]), f"{where}.expansions", real=True)
        kernels = _range(data.get("kernels", [3]), f"{where}.kernels")
        allowed = (3, 5) if kind == "ir" else (1, 3, 5)
        bad = [k for k in kernels if k not in allowed]
        if bad or (kind != "ir" and len(kernels) > 1):
            raise ConfigError(f"{where}.kernels: {kind} blocks take "
                              f"{'3 and/or 5' if kind == 'ir' else 'one of 1, 3, 5'}, got "
                              f"{list(kernels)}")
        act = data.get("act", "relu")
        if act not in ACTS:
            raise ConfigError(f"{where}.act: one of {', '.join(ACTS)}, got {act!r}")
        se = data.get("se", False)
        if not isinstance(se, bool) or (se and kind != "ir"):
            raise ConfigError(f"{where}.se: true or false (inverted residuals only), got "
                              f"{se!r}")
        skip = data.get("skip", False)
        if not isinstance(skip, bool) or (skip and (kind != "ir" or blocks < 2)):
            raise ConfigError(f"{where}.skip: true or false; an FBNetV1-style choice between "
                              f"a block and an identity, for the residual blocks after the "
                              f"first of an ir stage (this stage: {kind}, {blocks} blocks), "
                              f"got {skip!r}")
        residual = data.get("residual", True)
        if not isinstance(residual, bool) or (not residual and kind != "ir"):
            raise ConfigError(f"{where}.residual: true or false (inverted residuals only), "
                              f"got {residual!r}")
        return cls(kind, blocks, stride, widths, channels, expansions, kernels, se, act,
                   skip, residual)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "blocks": self.blocks, "stride": self.stride,
                "widths": list(self.widths), "channels": self.channels,
                "expansions": list(self.expansions), "kernels": list(self.kernels),
                "se": self.se, "act": self.act, "skip": self.skip,
                "residual": self.residual}

    def op(self, kernel: int) -> str:
        """The registered op of a block of this stage with kernel ``kernel``."""
        hs = "_hs" if self.act == "hswish" else ""
        if self.kind == "conv":
            return f"conv_k{kernel}{hs}"
        if self.kind == "ir_pool":
            return f"ir_pool{hs}"
        return f"ir_k{kernel}{'_sehsig' if self.se else ''}{hs}"


@dataclass(frozen=True)
class BlockOptions:
    """The searchable choices of one unified block of the space."""

    stage: int
    index: int
    stage_spec: MaskedStage
    in_max: int
    widths: tuple[int, ...]
    mids: tuple[int, ...] | None
    kernels: tuple[int, ...]
    stride: int
    skippable: bool = False

    @property
    def label(self) -> str:
        return f"stage {self.stage}, block {self.index}"


@dataclass(frozen=True)
class DMaskingSpace:
    """A DMaskingNAS space (see the module docstring for the file format)."""

    name: str
    stages: tuple[MaskedStage, ...]
    resolutions: tuple[int, ...]
    width_divisor: int = 8
    resolution_blocks: int | None = None
    description: str = ""
    dim_in: int = 3

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "space") -> DMaskingSpace:
        """The space of plain data; errors name ``source`` and the stage."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a space is a mapping, got {type(data).__name__}")
        _reject(data, ("name", "description", "resolutions", "width_divisor",
                                   "resolution_blocks", "stages", "dim_in"), source)
        divisor = data.get("width_divisor", 8)
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
            raise ConfigError(f"{source}.width_divisor: an int >= 1, got {divisor!r}")
        raw = data.get("stages")
        if not isinstance(raw, Sequence) or not raw:
            raise ConfigError(f"{source}.stages: a non-empty list of stages is needed")
        stages = tuple(MaskedStage.from_dict(s, divisor, f"{source}: stage {i}")
                       for i, s in enumerate(raw))
        if "resolutions" not in data:
            raise ConfigError(f"{source}.resolutions: the input resolution options are "
                              f"missing")
        resolutions = _range(data["resolutions"], f"{source}.resolutions")
        n = data.get("resolution_blocks")
        total = sum(s.blocks for s in stages)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                              or not 1 <= n <= total):
            raise ConfigError(f"{source}.resolution_blocks: an int in [1, {total}] or null, "
                              f"got {n!r}")
        space = cls(str(data.get("name", "custom")), stages, resolutions, divisor, n,
                    str(data.get("description", "")), int(data.get("dim_in", 3)))
        space.check_resolutions(source)
        return space

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "resolutions": list(self.resolutions), "width_divisor": self.width_divisor,
                "resolution_blocks": self.resolution_blocks, "dim_in": self.dim_in,
                "stages": [s.to_dict() for s in self.stages]}

    @property
    def max_resolution(self) -> int:
        return max(self.resolutions)

    @property
    def num_blocks(self) -> int:
        return sum(s.blocks for s in self.stages)

    @property
    def resolved_blocks(self) -> int:
        """N: the blocks (from block 0, the stem) run at the searched resolution."""
        return self.num_blocks if self.resolution_blocks is None else self.resolution_blocks

    def blocks(self) -> list[BlockOptions]:
        """Every unified block with its options, in forward order."""
        out = []
        in_max = self.dim_in
        for s, stage in enumerate(self.stages):
            for b in range(stage.blocks):
                mids = None
                if stage.kind != "conv":
                    mids = tuple(sorted({round_channels(e * in_max, self.width_divisor)
                                         for e in stage.expansions}))
                out.append(BlockOptions(s, b, stage, in_max, stage.widths, mids,
                                        stage.kernels, stage.stride if b == 0 else 1,
                                        stage.skip and b > 0))
                in_max = stage.channels
        return out

    def stride_product(self, n: int | None = None) -> int:
        n = self.resolved_blocks if n is None else n
        return math.prod(b.stride for b in self.blocks()[:n])

    def valid_resolutions(self, up_to: int | None = None) -> list[int]:
        """Resolutions the strides of the first N blocks take (multiples of their product),
        up to the maximum."""
        step = self.stride_product()
        top = up_to or self.max_resolution
        return list(range(step, top + 1, step))

    def check_resolutions(self, source: str = "space") -> None:
        """Raises ConfigError for resolutions the strides cannot take, listing valid ones."""
        step = self.stride_product()
        bad = [r for r in self.resolutions if r % step]
        if bad:
            valid = [r for r in self.valid_resolutions() if r >= min(self.resolutions) // 2]
            raise ConfigError(f"{source}.resolutions: {bad} are not divisible by {step}, the "
                              f"product of the strides of the first {self.resolved_blocks} "
                              f"blocks (valid up to {self.max_resolution}: "
                              f"{', '.join(map(str, valid[-8:]))})")

    def max_arch_def(self) -> dict[str, Any]:
        """The supernet as a plain arch def: every block at its widest options."""
        stages = []
        for stage in self.stages:
            entries = []
            for b in range(stage.blocks):
                entry: list[Any] = [stage.op(max(stage.kernels)), stage.channels,
                                    stage.stride if b == 0 else 1, 1]
                if stage.kind != "conv":
                    kwargs: dict[str, Any] = {"expansion": max(stage.expansions)}
                    if stage.se:
                        kwargs["less_se_channels"] = False
                    if not stage.residual:
                        kwargs["res_conn_args"] = None
                    entry.append(kwargs)
                entries.append(entry)
            stages.append(entries)
        return {"input_size": self.max_resolution,
                "basic_args": {"width_divisor": self.width_divisor}, "blocks": stages}


SPACE_SUFFIXES = (".yaml", ".yml", ".json")


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped in ``fbnas/search/dmasking/spaces``."""
    folder = resources.files("fbnas.search.dmasking") / "spaces"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_dmasking_space(source: str | os.PathLike | DMaskingSpace | Mapping[str, Any]
                        ) -> DMaskingSpace:
    """A space from a built-in name (``fbnet_v2``, ``fbnet_v2_paper``, ``dmasking_digits``),
    a YAML/JSON file, a dict, or a space (returned as is).

    Raises:
        ConfigError: neither a file nor a built-in name (with the closest), invalid YAML,
            or a bad space (naming the file, the stage and the key).
    """
    if isinstance(source, DMaskingSpace):
        return source
    if isinstance(source, Mapping):
        return DMaskingSpace.from_dict(source)
    path = Path(source)
    if path.is_file():
        text, label = path.read_text(encoding="utf-8"), str(path)
    elif str(source) in builtin_spaces():
        folder = resources.files("fbnas.search.dmasking") / "spaces"
        text, label = (folder / f"{source}.yaml").read_text(encoding="utf-8"), str(source)
    else:
        known = builtin_spaces()
        raise ConfigError(f"DMasking space {str(source)!r}: neither a file nor a built-in "
                          f"space (built-in: {', '.join(known)})"
                          f"{did_you_mean(str(source), known)}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {exc}") from None
    return DMaskingSpace.from_dict(data or {}, label)


__all__ = ["BlockOptions", "DMaskingSpace", "MaskedStage", "builtin_spaces",
           "load_dmasking_space"]
