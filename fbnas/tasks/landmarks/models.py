"""Landmark networks: PFLD as NNI's FBNet example builds it, and the MobileNetV3-PFLD baseline.

* :class:`PFLDNet` — the simplified PFLD of ALGORITHMS.md §5.2: a PeleeNet-style stem, an
  inverted residual, five layers whose ops an architecture names (the searched part), a
  multi-scale fusion of the stem's first map, the second layer's output and the last
  layer's, then an eSE block, a separable conv, a depthwise 7x7 and a 1x1 conv to 2P
  outputs. The fixed parts live in :class:`PFLDFrame`, which the supernet
  (:mod:`fbnas.search.landmarks`) shares, so a derived subnet inherits its weights by name.
* The MobileNetV3-PFLD baseline of seed 004's table (``Hsintao/pfld_106_face_landmarks``,
  ``models/mobilev3_pfld.py``): a plain fbnas arch def (:data:`MBV3_PFLD_ARCH`) with the
  multi-scale landmark head :func:`landmark_ms_head`, built by the builder, without weights.

Both carry PFLD's auxiliary angle net (:class:`AuxNet`): in training mode a network returns
:class:`LandmarkOutputs`, whose angles are computed only when a loss asks for them (the
weight step's PFLD loss does, the architecture step's L2 loss does not); in eval mode it
returns the ``(N, 2P)`` landmarks alone, which is what is exported.

A landmark architecture is plain data (what checkpoints and ``arch.json`` record):
``{"family": "pfld", "layers": [5 op names of the pfld space]}`` or ``{"family": "fbnet",
"arch_def": {...}, "aux_after": k, "aux_widths": [...]}``; :func:`build_landmark_model`
builds either, or the names ``pfld`` (the seed's searched subnet is not published: the
space's first candidates) and ``mbv3_pfld``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import FrozenKwargs, HeadSpec
from fbnas.blocks import BLOCKS, register_head
from fbnas.blocks.layers import ActSpec, ConvNormAct, ConvSpec, Cost, NormSpec
from fbnas.blocks.registry import BlockPlan
from fbnas.errors import ConfigError
from fbnas.io import read_json_file
from fbnas.zoo.model import FBNet, resolve_arch

LANDMARK_HEAD = "landmark_ms_head"
PFLD_FAMILY, FBNET_FAMILY = "pfld", "fbnet"
PFLD_FM_SIZES = (14, 14, 7, 7, 7)
"""The feature size each searched layer of PFLD outputs (NNI's ``fm_size``)."""


# --------------------------------------------------------------------------- outputs


@dataclass
class LandmarkOutputs:
    """A landmark network's training-mode output.

    Attributes:
        points: ``(N, 2P)`` landmarks, ``x0 y0 x1 y1 ...`` as fractions of the crop.
        features: the map the auxiliary net reads.
        aux: the auxiliary angle net.
    """

    points: torch.Tensor
    features: torch.Tensor
    aux: nn.Module

    def angles(self) -> torch.Tensor:
        """``(N, 3)`` predicted yaw, pitch, roll (degrees): runs the auxiliary net now."""
        return self.aux(self.features)


def landmark_points(outputs: Any) -> torch.Tensor:
    """The ``(N, 2P)`` landmarks of a network's output (either mode)."""
    return outputs.points if isinstance(outputs, LandmarkOutputs) else outputs


# --------------------------------------------------------------------------- parts


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int | None = None,
                 groups: int = 1) -> ConvNormAct:
    """conv (no bias) -> BN -> ReLU, as a spec (built and costed alike)."""
    pad = kernel // 2 if padding is None else padding
    return ConvNormAct(ConvSpec(cin, cout, kernel, stride, pad, 1, groups),
                       NormSpec("bn", cout), ActSpec("relu"))


class AuxNet(nn.Module):
    """PFLD's auxiliary angle net: 4 convs (s2, s1, s2, then an unpadded ``last_kernel``),
    a global max pool, FC -> 32 -> FC -> 3 (yaw, pitch, roll).

    NNI's net reads PFLD's 16@56 stem map (widths 64, 64, 32, 64, a 7x7 last conv; its
    "maxpool 3" leaves a 3x3 map that its 64-input FC cannot read, so the pool here is a
    global max pool); the MobileNetV3 baseline's reads its 40@28 map (128, 128, 32, 128,
    a 3x3 last conv, max pool 5 = global).
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 64, 32, 64),
                 last_kernel: int = 7) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ConfigError(f"the auxiliary net has 4 convs, got widths {list(widths)}")
        w1, w2, w3, w4 = widths
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels, w1, 3, 2).build(), conv_bn_relu(w1, w2, 3).build(),
            conv_bn_relu(w2, w3, 3, 2).build(),
            conv_bn_relu(w3, w4, last_kernel, padding=0).build())
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Linear(w4, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.pool(self.convs(x)).flatten(1)))


class LandmarkMSHead(nn.Module):
    """The MobileNetV3-PFLD multi-scale head: ``(N, C, F, F) -> (N, 2P)``.

    s1 = avgpool(x); s2 = avgpool(conv3x3 s2 (bias) -> ``mid``); s3 = conv ⌈F/2⌉ x ⌈F/2⌉
    unpadded (bias) on that map -> ``top`` at 1x1; FC over ``[s1, s2, s3]``.
    """

    def __init__(self, in_channels: int, num_points: int, mid: int, top: int,
                 fm_size: int) -> None:
        super().__init__()
        self.conv7 = nn.Conv2d(in_channels, mid, 3, 2, 1)
        self.conv8 = nn.Conv2d(mid, top, (fm_size + 1) // 2, 1, 0)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels + mid + top, 2 * num_points)
        nn.init.constant_(self.fc.bias, 0.5)  # points start at the crop's centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.pool(x).flatten(1)
        y = self.conv7(x)
        s2 = self.pool(y).flatten(1)
        s3 = self.conv8(y).flatten(1)
        return self.fc(torch.cat([s1, s2, s3], dim=1))


@register_head(LANDMARK_HEAD, description="multi-scale landmark regressor (MobileNetV3-PFLD)")
def landmark_ms_head(in_channels: int, *, num_points: int = 106, mid_channels: int = 32,
                     top_channels: int = 128, fm_size: int = 14) -> nn.Module:
    """The MobileNetV3-PFLD head of ``num_points`` landmarks on an ``fm_size`` map."""
    if num_points < 1 or fm_size < 2:
        raise ArchDefError(f"need num_points >= 1 and fm_size >= 2, got {num_points}, "
                           f"{fm_size}", key="num_points")
    return LandmarkMSHead(in_channels, num_points, mid_channels, top_channels, fm_size)


def landmark_head(num_points: int = 106) -> HeadSpec:
    """The head spec of the task's builder-made networks."""
    return HeadSpec(LANDMARK_HEAD, FrozenKwargs({"num_points": num_points}))


# --------------------------------------------------------------------------- the pfld space


@dataclass(frozen=True)
class PFLDLayer:
    """One searched PFLD layer: width, stride, output size and its candidates (seed name ->
    registry op and options)."""

    out_channels: int
    stride: int
    fm_size: int
    candidates: tuple[tuple[str, str, FrozenKwargs], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.candidates]

    def index(self, name: str, where: str) -> int:
        names = self.names
        if name not in names:
            from fbnas.errors import did_you_mean

            raise ArchDefError(f"{where}: {name!r} is not a candidate of this layer"
                               f"{did_you_mean(name, names)} (candidates: {', '.join(names)})")
        return names.index(name)


def _space_file() -> Path:
    return Path(str(resources.files("fbnas.tasks.landmarks") / "spaces" / "pfld.json"))


def pfld_layers(path: str | Path | None = None) -> tuple[PFLDLayer, ...]:
    """The searched layers of the ``pfld`` space file (``spaces/pfld.json``, seed 004's
    candidates by their seed names), with the eSE's pooling size filled in per layer."""
    source = Path(path) if path is not None else _space_file()
    data = read_json_file(source, "the pfld search space", ArchDefError)
    layers = []
    for i, row in enumerate(data["layers"]):
        fm = PFLD_FM_SIZES[i] if i < len(PFLD_FM_SIZES) else row.get("fm_size")
        candidates = []
        for cand in row.get("candidates", data.get("candidates", [])):
            kwargs = copy.deepcopy(cand.get("kwargs", {}))
            se = kwargs.get("se_args")
            if isinstance(se, Mapping) and se.get("name") == "ese" and "fm_size" not in se:
                kwargs["se_args"] = {**se, "fm_size": int(row.get("fm_size", fm))}
            candidates.append((cand["name"], cand["op"], FrozenKwargs(kwargs)))
        for r in range(int(row.get("repeats", 1))):
            layers.append(PFLDLayer(int(row["out_channels"]), int(row["stride"]) if r == 0
                                    else 1, int(row.get("fm_size", fm)), tuple(candidates)))
    if len(layers) != len(PFLD_FM_SIZES):
        raise ArchDefError(f"{source}: the PFLD frame has {len(PFLD_FM_SIZES)} searched "
                           f"layers, the file {len(layers)}")
    return tuple(layers)


def candidate_plans(layers: Sequence[PFLDLayer], in_channels: int = 32
                    ) -> list[list[BlockPlan]]:
    """Every layer's candidate plans (registry-resolved, so built and costed alike)."""
    plans, cin = [], in_channels
    for i, layer in enumerate(layers):
        row = []
        for name, op, kwargs in layer.candidates:
            try:
                row.append(BLOCKS.get(op).plan(cin, layer.out_channels, layer.stride, kwargs,
                                               {"width_divisor": 1}))
            except ArchDefError as exc:
                raise ArchDefError(f"pfld layer {i}, candidate {name!r}: {exc}") from None
        plans.append(row)
        cin = layer.out_channels
    return plans


# --------------------------------------------------------------------------- PFLD


def fixed_parts(num_points: int = 106) -> dict[str, tuple[Any, int, tuple[int, int]]]:
    """name -> (plan or spec, input channels, input size) of PFLD's fixed parts at 112."""

    def block(op: str, cin: int, cout: int, stride: int, **kwargs: Any) -> BlockPlan:
        return BLOCKS.get(op).plan(cin, cout, stride, kwargs, {"width_divisor": 1})

    head_conv = ConvNormAct(ConvSpec(128, 2 * num_points, 1, bias=True))
    return {
        "stem_conv": (conv_bn_relu(3, 16, 3, 2), 3, (112, 112)),
        "stem_branch1": (conv_bn_relu(16, 16, 1), 16, (56, 56)),
        "stem_branch2": (block("sep_k3", 16, 16, 2), 16, (56, 56)),
        "stem_fuse": (conv_bn_relu(32, 16, 1), 32, (28, 28)),
        "block4_1": (block("ir_k3", 16, 32, 2, expansion=2), 16, (28, 28)),
        "fuse_stem": (conv_bn_relu(16, 16, 9, 8, 1, groups=16), 16, (56, 56)),
        "fuse_mid": (conv_bn_relu(32, 32, 3, 2, groups=32), 32, (14, 14)),
        "fuse": (conv_bn_relu(112, 64, 1), 112, (7, 7)),
        "block_tail": (block("ir_k3_ese", 64, 64, 1, expansion=2,
                             se_args={"name": "ese", "fm_size": 7}), 64, (7, 7)),
        "sep_tail": (block("sep_k3", 64, 128, 1), 64, (7, 7)),
        # No BN on the 1x1 map: over (N, 128, 1, 1) it normalises across the batch alone,
        # and the trained network then disagrees with itself in eval mode (measured: the
        # validation L2 rose while the training loss fell).
        "dw7": (ConvNormAct(ConvSpec(128, 128, 7, 1, 0, 1, 128, bias=True), None,
                            ActSpec("relu")), 128, (7, 7)),
        "head_conv": (head_conv, 128, (1, 1)),
    }


def pfld_fixed_cost(num_points: int = 106) -> Cost:
    """Params and MACs of PFLD's fixed parts (without the auxiliary net)."""
    total = Cost()
    for plan, _, hw in fixed_parts(num_points).values():
        total += plan.cost(hw)[0]
    return total


def aux_cost(aux: AuxNet, in_shape: tuple[int, int, int]) -> Cost:
    """Params and MACs of an auxiliary net on one ``(C, H, W)`` input."""
    from fbnas.blocks.counting import count_module

    params, macs, _ = count_module(copy.deepcopy(aux).to("meta"), (1, *in_shape))
    return Cost(params, macs)


class PFLDFrame(nn.Module):
    """PFLD's fixed parts around five searched layers (ALGORITHMS.md §5.2), for 112x112.

    Subclasses run the layers (:meth:`run_layer`): the network its chosen blocks, the
    supernet its mixed ops. Module names are shared, so weights move between them by name.
    """

    def __init__(self, num_points: int = 106) -> None:
        # nn.Module's, not super()'s: the supernet is also an FBNetV1 Supernet (for its θ
        # methods) and builds its own layers instead of that class's.
        nn.Module.__init__(self)
        self.num_points = num_points
        for name, (plan, _, _) in fixed_parts(num_points).items():
            setattr(self, name, plan.build())
        self.stem_pool = nn.MaxPool2d(2)
        self.aux = AuxNet(16)
        # Every point starts at the crop's centre, not at its corner (an fbnas choice: the
        # first epochs then learn the face, not the offset).
        nn.init.constant_(self.head_conv.conv.bias, 0.5)
        nn.init.normal_(self.head_conv.conv.weight, std=0.01)  # start near the centre

    def run_layer(self, i: int, x: torch.Tensor, sample: Any) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x: torch.Tensor, sample: Any = None) -> Any:
        """``x``: (N, 3, 112, 112) -> landmarks (eval) or :class:`LandmarkOutputs`."""
        if x.shape[-2:] != (112, 112):
            raise ConfigError(f"PFLD takes 112x112 crops, got {tuple(x.shape[-2:])}")
        first = self.stem_conv(x)                                   # (N, 16, 56, 56)
        branch = self.stem_branch2(self.stem_branch1(first))        # (N, 16, 28, 28)
        x = self.stem_fuse(torch.cat([branch, self.stem_pool(first)], dim=1))  # 16@28
        x = self.block4_1(x)                                        # (N, 32, 14, 14)
        mid = x
        for i in range(len(PFLD_FM_SIZES)):
            x = self.run_layer(i, x, sample)
            if i == 1:
                mid = x                                             # (N, 32, 14, 14)
        fused = torch.cat([self.fuse_stem(first), self.fuse_mid(mid), x], dim=1)  # 112@7
        y = self.dw7(self.sep_tail(self.block_tail(self.fuse(fused))))  # (N, 128, 1, 1)
        points = self.head_conv(y).flatten(1)                       # (N, 2P)
        if self.training:
            return LandmarkOutputs(points, first, self.aux)
        return points


class PFLDNet(PFLDFrame):
    """PFLD with one block per searched layer, named by the pfld space's candidates."""

    def __init__(self, layers: Sequence[str], num_points: int = 106,
                 space: Sequence[PFLDLayer] | None = None) -> None:
        super().__init__(num_points)
        space = tuple(space or pfld_layers())
        if len(layers) != len(space):
            raise ArchDefError(f"a PFLD architecture names {len(space)} layers, got "
                               f"{len(layers)}: {list(layers)}")
        plans = candidate_plans(space)
        chosen = [layer.index(name, f"pfld layer {i}")
                  for i, (layer, name) in enumerate(zip(space, layers, strict=True))]
        self.layers = nn.ModuleList(plans[i][c].build() for i, c in enumerate(chosen))
        self.choice = chosen
        self.layer_names = list(layers)
        self.arch_spec = LandmarkArch({"family": PFLD_FAMILY, "layers": list(layers),
                                       "num_points": num_points})
        self.name = "pfld"
        self.resolution = 112

    def run_layer(self, i: int, x: torch.Tensor, sample: Any) -> torch.Tensor:
        return self.layers[i](x)

    def forward(self, x: torch.Tensor) -> Any:
        return self.run(x)


# --------------------------------------------------------------------------- builder models


_SE = {"name": "se_hsig", "relu_args": "relu"}
"""The baseline's SE: reduction 4, ReLU inside, hard-sigmoid gate."""

MBV3_PFLD_ARCH: dict[str, Any] = {
    "input_size": 112,
    "basic_args": {"width_divisor": 1},
    "blocks": [
        # conv_bn1 (3x3 s1, h-swish) and conv_bn2 (its 1x1 expansion is kept at 16 -> 16)
        [["conv_k3_hs", 16, 1, 1, {"bias": False}]],
        [["ir_k3", 16, 1, 1, {"expansion": 1, "always_pw": True}]],
        # conv3_1, block3_2 .. block3_5 (the auxiliary net reads block3_5's 40@28)
        [["ir_k3", 24, 2, 1, {"expansion": 4}], ["ir_k3", 24, 1, 1, {"expansion": 3}],
         ["ir_k5_sehsig", 40, 2, 1, {"expansion": 3, "se_args": _SE}],
         ["ir_k5_sehsig", 40, 1, 2, {"expansion": 3, "se_args": _SE}]],
        # conv4_1, conv5_1, block5_2 .. block5_4, conv6_1 (16@14 to the head)
        [["ir_k3", 80, 2, 1, {"expansion": 6}], ["ir_k3_hs", 80, 1, 1, {"expansion": 2.5}],
         ["ir_k3_sehsig_hs", 112, 1, 1, {"expansion": 6, "se_args": _SE}],
         ["ir_k3_sehsig_hs", 112, 1, 1, {"expansion": 6, "se_args": _SE}],
         ["ir_k3_sehsig_hs", 160, 1, 1, {"expansion": 6, "se_args": _SE}],
         ["ir_k3_hs", 16, 1, 1, {"expansion": 2}]],
    ],
}
"""MobileNetV3-PFLD (``Hsintao/pfld_106_face_landmarks``, ``models/mobilev3_pfld.py``) as an
fbnas arch def, its blocks in order (conv_bn1 .. conv6_1), hidden widths ``in * expansion``
(16, 64, 72, 72, 120, 120, 240, 200, 480, 672, 672, 320) as there. Two differences of
fbnas's inverted residual, both small: the SE's convs have biases (the baseline's linears
have none) and the SE sits after the depthwise activation (the baseline's before it)."""

MBV3_AUX_AFTER = 6
"""The flat index of block3_5, whose 40@28 output the baseline's auxiliary net reads."""


@dataclass(frozen=True)
class LandmarkArch:
    """A landmark architecture as plain data; ``to_arch_def`` is what checkpoints record."""

    data: Mapping[str, Any]

    def to_arch_def(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.data))


class FBNetLandmarks(nn.Module):
    """A builder-made backbone with the landmark head, and PFLD's auxiliary net reading the
    output of block ``aux_after`` (flat index)."""

    def __init__(self, arch_def: Mapping[str, Any], num_points: int = 106,
                 aux_after: int = MBV3_AUX_AFTER,
                 aux_widths: Sequence[int] = (128, 128, 32, 128), aux_kernel: int = 3,
                 width_ratio: float = 1.0) -> None:
        super().__init__()
        spec, _, resolution = resolve_arch(dict(arch_def))
        self.net = FBNet(spec, width_ratio=width_ratio, resolution=resolution,
                         head=landmark_head(num_points))
        blocks = list(self.net.backbone.stages)
        if not 0 <= aux_after < len(blocks):
            raise ArchDefError(f"aux_after={aux_after} is not a block of the arch def "
                               f"(0..{len(blocks) - 1})", key="aux_after")
        self.aux_after = aux_after
        self.aux = AuxNet(blocks[aux_after].out_channels, aux_widths, aux_kernel)
        self.head_spec = self.net.head_spec
        self.resolution = self.net.resolution
        self.width_ratio = width_ratio
        self.name = "fbnet_landmarks"
        self.arch_spec = LandmarkArch({
            "family": FBNET_FAMILY, "arch_def": copy.deepcopy(dict(arch_def)),
            "aux_after": aux_after, "aux_widths": list(aux_widths), "aux_kernel": aux_kernel,
            "num_points": num_points})

    def forward(self, x: torch.Tensor) -> Any:
        features = x
        for i, block in enumerate(self.net.backbone.stages):
            x = block(x)
            if i == self.aux_after:
                features = x
        points = self.net.head(x)
        if self.training:
            return LandmarkOutputs(points, features, self.aux)
        return points


# --------------------------------------------------------------------------- building


NAMED_ARCHS: dict[str, dict[str, Any]] = {
    "mbv3_pfld": {"family": FBNET_FAMILY, "arch_def": MBV3_PFLD_ARCH,
                  "aux_after": MBV3_AUX_AFTER, "aux_widths": [128, 128, 32, 128],
                  "aux_kernel": 3},
}


def default_pfld_layers() -> list[str]:
    """The first candidate of every pfld layer (the seed publishes no searched subnet)."""
    return [layer.names[0] for layer in pfld_layers()]


def landmark_arch(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A landmark architecture as data from a name (``pfld``, ``mbv3_pfld``), a JSON file
    (an architecture, or a search's ``arch.json`` with its ``arch_def``) or a dict."""
    if isinstance(source, str) and source == "pfld":
        return {"family": PFLD_FAMILY, "layers": default_pfld_layers()}
    if isinstance(source, str) and source in NAMED_ARCHS:
        return copy.deepcopy(NAMED_ARCHS[source])
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ArchDefError(f"unknown landmark architecture {str(source)!r} (names: pfld, "
                               f"{', '.join(NAMED_ARCHS)}; or a .json file)")
        data = read_json_file(path, "landmark architecture", ArchDefError)
        if "family" not in data and isinstance(data.get("arch_def"), Mapping):
            data = data["arch_def"]  # a search's arch.json
        return dict(data)
    return copy.deepcopy(dict(source))


def build_landmark_model(source: str | Path | Mapping[str, Any], num_points: int = 106,
                         width_ratio: float = 1.0) -> nn.Module:
    """Builds a landmark network (see the module docstring for the forms of ``source``).

    Raises:
        ArchDefError: an unknown name or family, or a bad architecture, naming the part.
    """
    arch = landmark_arch(source)
    family = arch.get("family")
    points = int(arch.get("num_points", num_points))
    if points != num_points:
        raise ConfigError(f"the architecture predicts {points} landmarks, the task "
                          f"{num_points}")
    if family == PFLD_FAMILY:
        if width_ratio != 1.0:
            raise ConfigError("PFLD has fixed widths: --width-ratio is for builder models")
        unknown = sorted(set(arch) - {"family", "layers", "num_points"})
        if unknown:
            raise ArchDefError(f"a pfld architecture has no key {unknown[0]!r}", key=unknown[0])
        return PFLDNet(list(arch["layers"]), num_points)
    if family == FBNET_FAMILY:
        unknown = sorted(set(arch) - {"family", "arch_def", "aux_after", "aux_widths",
                                      "aux_kernel", "num_points"})
        if unknown:
            raise ArchDefError(f"an fbnet landmark architecture has no key {unknown[0]!r}",
                               key=unknown[0])
        return FBNetLandmarks(arch["arch_def"], num_points, int(arch.get("aux_after",
                                                                         MBV3_AUX_AFTER)),
                              tuple(arch.get("aux_widths", (128, 128, 32, 128))),
                              int(arch.get("aux_kernel", 3)), width_ratio)
    raise ArchDefError(f"unknown landmark model family {family!r} (known: pfld, fbnet)",
                       key="family")
