"""Image transforms: torchvision ``transforms.v2`` plus timm's RandAugment.

Two sources: ``"tensor"`` (uint8 ``(3, H, W)`` tensors of in-memory datasets, already
close to the target size: pad-and-crop augmentation, as for CIFAR) and ``"file"`` (PIL
images of any size: random-resized-crop for training, resize to R/0.875 and center-crop
for evaluation, as for ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # imported when a transform is built: importing torchvision pulls its
    # models and torch._dynamo (seconds), which a process that never loads images (the
    # CLI, a search's main process, `fbnas --help`) need not pay
    from torchvision.transforms import v2

Source = Literal["tensor", "file"]
EVAL_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation.

    Attributes:
        random_crop: pad-and-crop (in-memory data) or random-resized-crop (image folders).
        crop_padding: padding of the pad-and-crop, as a fraction of the side (1/8 is CIFAR's
            classic 4 px of 32).
        min_crop_scale: smallest area fraction of random-resized-crop.
        hflip: probability of a horizontal flip (0 for digits and text).
        randaugment: a timm RandAugment string such as ``"rand-m9-mstd0.5"``, or ``None``.
    """

    random_crop: bool = False
    crop_padding: float = 0.125
    min_crop_scale: float = 0.08
    hflip: float = 0.0
    randaugment: str | None = None


def _randaugment(config: str, mean: tuple[float, float, float]) -> v2.Transform:
    from timm.data.auto_augment import rand_augment_transform
    from torchvision.transforms import v2

    fill = tuple(round(255 * m) for m in mean)
    try:
        timm_tf = rand_augment_transform(config, {"img_mean": fill})
    except Exception as exc:  # noqa: BLE001 - timm raises assorted errors for a bad string
        raise ValueError(f"randaugment: cannot parse {config!r} as a timm RandAugment string "
                         f"such as 'rand-m9-mstd0.5' ({exc})") from None
    return v2.Lambda(timm_tf)


def build_transform(source: Source, resolution: int, mean: tuple[float, ...],
                    std: tuple[float, ...], augment: AugmentConfig | None) -> v2.Compose:
    """Returns image -> normalised float tensor ``(3, R, R)``; ``augment=None`` is evaluation."""
    from torchvision.transforms import v2

    steps: list[v2.Transform] = []
    if source == "file":
        steps.append(v2.ToImage())  # PIL -> uint8 tensor, so crops run in torch
        if augment is not None and augment.random_crop:
            steps.append(v2.RandomResizedCrop(resolution, scale=(augment.min_crop_scale, 1.0),
                                              antialias=True))
        else:
            steps += [v2.Resize(round(resolution / EVAL_CROP_FRACTION), antialias=True),
                      v2.CenterCrop(resolution)]
    else:
        steps.append(v2.Resize(resolution, antialias=True))  # a no-op at the stored size
        if augment is not None and augment.random_crop:
            steps.append(v2.RandomCrop(resolution, padding=round(resolution
                                                                 * augment.crop_padding)))
    if augment is not None and augment.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(augment.hflip))
    if augment is not None and augment.randaugment:
        steps += [v2.ToPILImage(), _randaugment(augment.randaugment, mean),  # type: ignore[arg-type]
                  v2.PILToTensor()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)
