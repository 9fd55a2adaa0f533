"""Slimmable networks built from arch defs: ``SlimFBNet`` and the named slim models.

A slimmable network is made from the very arch def its static counterpart is built from:
the builder resolves every block (options checked, widths rounded) and each resolved plan
becomes the slimmable block of its family. At full width the network therefore has the
static network's parts, parameter shapes, parameter count and MACs exactly (the tests check
it against the zoo), and :func:`fbnas.slim.extract_subnet` turns any width setting back
into a static arch def.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbnas.arch.spec import ArchSpec
from fbnas.arch.unify import unify_arch_def
from fbnas.builder import FBNetBuilder
from fbnas.errors import did_you_mean
from fbnas.slim.blocks import slim_block_from_spec
from fbnas.slim.channels import PartLayout, UnitLayout
from fbnas.slim.dyn_model import DynModel, SlimStage
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.ops import SlimConv2d
from fbnas.slim.soft import SoftWidth
from fbnas.zoo.catalog import get_arch_def, has_arch, list_archs
from fbnas.zoo.model import DEFAULT_RESOLUTION, resolve_arch

SLIM_MODELS: Mapping[str, str] = {
    "slim_resnet18": "ResNet18",
    "slim_resnet50": "ResNet50",
    "slim_mbv2": "mnv2",
    "slim_mbv3": "mnv3",
    "slim_effnet_b0": "eff_0",
}
"""Slim model name -> the zoo arch def it is made from."""


class SlimClsHead(nn.Module):
    """Global average pool -> 1x1 conv (bias) -> flatten, over a slimmable input width.

    The slimmable ``ClsConvHead`` (same child names); its output (the classes) is fixed.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = SlimConv2d(in_channels, num_classes, 1, bias=True, slim_out=False)
        self.slim_path = ""

    def part_layout(self) -> PartLayout:
        """No widths of its own; its output is the fixed number of classes."""
        label = self.slim_path or "head"
        unit = UnitLayout(label, (), None, fixed_output=self.conv.max_out_channels)
        return PartLayout(label, (unit,), scalar=True)

    def set_in_ch(self, channels: int) -> None:
        """Sets the classifier's input width (the last stage's output)."""
        self.conv.set_in_ch(channels)

    def set_soft(self, soft_in: SoftWidth | None, widths: Sequence[SoftWidth | None]) -> None:
        """Soft mode: the soft input width (masked zeros add nothing to the classes)."""
        self.conv.soft_in = soft_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.avg_pool(x)).flatten(1)


class SlimFBNet(DynModel):
    """A slimmable classifier built from an arch def: stages of slimmable blocks + a head.

    One :class:`SlimStage` per arch-def stage (so ``channel_space[s]`` lists the dimensions
    stage ``s`` owns) and a :class:`SlimClsHead` with fixed classes. Widths round to the
    arch def's ``width_divisor``.

    Attributes:
        arch_spec: the unified arch def (the full-width network).
        name: the slim model name, the zoo name, or ``"custom"``.
        resolution: the native input resolution.
        num_classes: classifier outputs (None: no head, the output is the features).
    """

    def __init__(
        self,
        arch: ArchSpec,
        num_classes: int | None = 1000,
        dim_in: int = 3,
        name: str = "custom",
        resolution: int | None = None,
    ) -> None:
        builder = FBNetBuilder(width_ratio=1.0)
        builder.add_basic_args(arch.basic_args)
        super().__init__(width_divisor=builder.width_divisor, in_channels=dim_in)
        self.arch_spec = arch
        self.name = name
        self.resolution = resolution or arch.input_size or DEFAULT_RESOLUTION
        self.num_classes = num_classes
        self.dim_in = dim_in
        traces = builder.trace(arch, dim_in=dim_in)
        stages: list[list[nn.Module]] = [[] for _ in range(arch.num_stages)]
        for trace in traces:
            spec = trace.spec
            try:
                block = slim_block_from_spec(spec, trace.in_channels, builder.basic_args)
            except SlimConfigError as exc:
                raise SlimConfigError(f"stage {spec.stage_idx}, block {spec.block_idx}: "
                                      f"{exc}") from None
            block.name = f"stage {spec.stage_idx}, block {spec.block_idx}"
            stages[spec.stage_idx].append(block)
        self.stages = nn.ModuleList(SlimStage(blocks, f"stage {s}")
                                    for s, blocks in enumerate(stages))
        out_channels = traces[-1].out_channels if traces else dim_in
        self.head = SlimClsHead(out_channels, num_classes) if num_classes else None

    def chain(self) -> list[nn.Module]:
        return [*self.stages, *([self.head] if self.head is not None else [])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x) if self.head is not None else x


ArchSource = str | Path | Mapping[str, Any] | ArchSpec


def _resolve(source: ArchSource) -> tuple[ArchSpec, str, int]:
    if isinstance(source, str) and source in SLIM_MODELS:
        zoo_name = SLIM_MODELS[source]
        spec = unify_arch_def(get_arch_def(zoo_name))
        return spec, source, spec.input_size or DEFAULT_RESOLUTION
    if isinstance(source, str) and not has_arch(source) and not Path(source).exists():
        candidates = list(SLIM_MODELS) + list_archs()
        hint = did_you_mean(source, candidates, n=4, cutoff=0.5)
        raise SlimConfigError(f"unknown slim model {source!r}{hint} (slim models: "
                              f"{', '.join(SLIM_MODELS)}; any zoo name or arch def works too)")
    return resolve_arch(source)


def build_slim_model(
    source: ArchSource,
    num_classes: int | None = 1000,
    dim_in: int = 3,
) -> SlimFBNet:
    """Builds a slimmable classifier, at full width.

    Args:
        source: a slim model name (``"slim_mbv2"``; see :data:`SLIM_MODELS`), or anything
            ``fbnas.build_model`` takes (a zoo name, an arch-def dict or file, an ArchSpec)
            whose ops have slimmable versions.
        num_classes: classifier outputs; None returns the backbone features.
        dim_in: input channels.

    Raises:
        SlimConfigError: for an unknown name (with close matches) or an op without a
            slimmable version (naming stage and block).
        ArchDefError: for a malformed arch def.

    Example:
        >>> model = build_slim_model("slim_mbv2", num_classes=10)
        >>> model.search_dim
        25
        >>> real_ch = model.decode_ch(model.decode_wm([0.5] * model.search_dim))
        >>> model.set_real_ch(real_ch)
        >>> model.eval()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    spec, name, resolution = _resolve(source)
    return SlimFBNet(spec, num_classes=num_classes, dim_in=dim_in, name=name,
                     resolution=resolution)


__all__ = ["SLIM_MODELS", "SlimClsHead", "SlimFBNet", "build_slim_model"]
