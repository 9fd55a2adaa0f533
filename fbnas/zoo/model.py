"""The network: an FBNet backbone (the arch def's blocks) + a head described as data.

The head is a :class:`fbnas.arch.HeadSpec` built by the builder; ``num_classes`` is the
shorthand for the classifier (global pool, 1x1 conv, flatten). Module names match the
reference (``backbone.stages.xif{s}_{b}``, ``head.conv``) so that mobile-vision checkpoints
load by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import ArchSpec, HeadSpec
from fbnas.arch.unify import unify_arch_def
from fbnas.blocks.heads import ClsConvHead, head_classes, head_spec_for
from fbnas.builder import FBNetBuilder
from fbnas.zoo.catalog import get_entry, has_arch

DEFAULT_RESOLUTION = 224

ArchSource = str | Path | Mapping[str, Any] | ArchSpec


class FBNetBackbone(nn.Module):
    """The arch def's blocks in order, as ``stages`` (an ``nn.Sequential``)."""

    def __init__(self, arch: ArchSpec, builder: FBNetBuilder, dim_in: int = 3) -> None:
        super().__init__()
        self.stages = builder.build_blocks(arch, dim_in=dim_in)
        self.out_channels = self.stages.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class FBNet(nn.Module):
    """An arch def built as a network: the backbone's blocks, then the head.

    Attributes:
        arch_spec: the unified architecture it was built from.
        head_spec: the head's description (None: the output is the backbone's features).
        num_classes: the classifier's classes (None for another head, or no head).
        resolution: the native input resolution (arch def ``input_size``, else 224).
        name: the zoo name, or ``"custom"``.
    """

    def __init__(
        self,
        arch: ArchSpec,
        num_classes: int | None = 1000,
        width_ratio: float = 1.0,
        dim_in: int = 3,
        name: str = "custom",
        resolution: int | None = None,
        *,
        head: HeadSpec | None = None,
    ) -> None:
        super().__init__()
        builder = FBNetBuilder(width_ratio=width_ratio)
        builder.add_basic_args(arch.basic_args)
        self.arch_spec = arch
        self.width_ratio = width_ratio
        self.name = name
        self.resolution = resolution or arch.input_size or DEFAULT_RESOLUTION
        self.backbone = FBNetBackbone(arch, builder, dim_in)
        self.head_spec = head_spec_for(num_classes, head)
        self.num_classes = head_classes(self.head_spec)
        self.head = (builder.build_head(self.head_spec, self.backbone.out_channels)
                     if self.head_spec is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return self.head(features) if self.head is not None else features


def resolve_arch(source: ArchSource) -> tuple[ArchSpec, str, int]:
    """Returns (spec, name, native resolution) for a zoo name, a dict, a file or a spec."""
    if isinstance(source, str) and has_arch(source):
        entry = get_entry(source)
        spec = unify_arch_def(entry.arch_def)
        return spec, entry.name, spec.input_size or entry.resolution
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            if isinstance(source, str) and path.suffix.lower() not in (".json", ".yaml", ".yml"):
                get_entry(source)  # raises with the closest zoo names
            raise ArchDefError(f"arch def file {str(path)!r} does not exist")
        spec = unify_arch_def(path)
        return spec, path.stem, spec.input_size or DEFAULT_RESOLUTION
    spec = unify_arch_def(source)
    return spec, "custom", spec.input_size or DEFAULT_RESOLUTION


def build_model(
    source: ArchSource,
    num_classes: int | None = 1000,
    width_ratio: float = 1.0,
    dim_in: int = 3,
    *,
    head: HeadSpec | None = None,
) -> FBNet:
    """Builds a network from a zoo name, an arch-def dict, a JSON/YAML file or an ArchSpec.

    Args:
        source: ``"fbnet_a"``, ``{"blocks": [...]}``, ``"my_arch.yaml"`` or an ArchSpec.
        num_classes: classifier outputs (the shorthand for the classification head);
            ``None`` returns the backbone features.
        width_ratio: scales every block's width (rounded by the reference rule).
        dim_in: input channels.
        head: the head as data (a task's ``head_spec``); replaces the classifier of
            ``num_classes`` (leave that at its default).

    Raises:
        ArchDefError: for an unknown name or a malformed arch def, naming where.
        ConfigError: ``num_classes`` and ``head`` disagree.

    Example:
        >>> model = build_model("fbnet_a", num_classes=10)
        >>> model(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    spec, name, resolution = resolve_arch(source)
    return FBNet(spec, num_classes=num_classes, width_ratio=width_ratio, dim_in=dim_in,
                 name=name, resolution=resolution, head=head)


__all__ = ["DEFAULT_RESOLUTION", "ArchSource", "ClsConvHead", "FBNet", "FBNetBackbone",
           "build_model", "resolve_arch"]
