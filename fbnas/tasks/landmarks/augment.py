"""Keypoint-aware augmentation: the image and its landmarks move together.

The geometry is torchvision's (``transforms.v2.functional`` on ``tv_tensors.Image`` and
``tv_tensors.KeyPoints``), not ours: a random affine (rotation, scale, shift), a horizontal
flip and colour jitter. What torchvision cannot know is the layout: after a flip the left
eye's points are the mirrored right eye's, so the points are re-indexed with the layout's
flip permutation (``flipped[i] = mirrored[flip[i]]``).

Coordinates. fbnas's points are fractions of the crop, continuous: 0 is the left edge, 1 the
right edge, pixel ``i`` covers ``[i, i + 1) / W``. torchvision 0.29's keypoint *affine*
rotates about ``(W / 2, H / 2)``, which is the same continuous convention as its image
affine, so points are passed as ``fraction * size``. Its keypoint *flip*, however, maps
``x -> W - 1 - x`` (pixel-index convention, pixel centres on integers), which would put every
flipped point one pixel to the right of its feature; the flip is therefore applied to the
points shifted by half a pixel into that convention and shifted back. A test holds both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from fbnas.errors import ConfigError, check_field_types, reject_unknown_keys


@dataclass(frozen=True)
class LandmarkAugment:
    """Random training augmentation of a landmark sample; all parts optional.

    Attributes:
        rotation_deg: the rotation is uniform in ``[-rotation_deg, rotation_deg]``.
        scale_min, scale_max: the zoom factor is uniform in this range (1 = none).
        shift: the shift is uniform in ``[-shift, shift]`` times the crop size, per axis.
        flip_prob: chance of a horizontal flip (with the layout's permutation).
        brightness, contrast, saturation, hue: colour jitter as ``v2.ColorJitter`` takes it.
    """

    rotation_deg: float = 15.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    shift: float = 0.05
    flip_prob: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hue: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ConfigError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, "
                              f"{self.scale_max}")
        for name in ("rotation_deg", "shift", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5], got {self.hue}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "augment") -> LandmarkAugment:
        """Settings from a dict (a recipe's ``augment:`` part); unknown keys are errors."""
        reject_unknown_keys(data, cls, source)
        return cls(**data)

    @classmethod
    def none(cls) -> LandmarkAugment:
        """An augmentation that changes nothing (every part off)."""
        return cls(**{f.name: 0.0 for f in fields(cls)} | {"scale_min": 1.0, "scale_max": 1.0})

    def __call__(self, image: torch.Tensor, points: torch.Tensor,
                 flip_permutation: Sequence[int], angles: torch.Tensor | None = None,
                 generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The augmented ``(image (3, H, W), points (P, 2) fractions, angles (3,))``; draws
        from ``generator`` (torch's global stream when None, which DataLoader seeds per
        worker).

        The pose follows the geometry, as the angle-weighted PFLD loss needs it to: a flip
        negates yaw and roll, a rotation by ``a`` degrees clockwise on screen adds ``a`` to
        the roll (fbnas's roll is clockwise on screen too, see
        :mod:`fbnas.tasks.landmarks.synthetic`). ``angles`` None stays None.
        """

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator))

        flip = self.flip_prob > 0 and uniform(0.0, 1.0) < self.flip_prob
        angle = uniform(-self.rotation_deg, self.rotation_deg)
        scale = uniform(self.scale_min, self.scale_max)
        shift = (uniform(-self.shift, self.shift), uniform(-self.shift, self.shift))
        if flip:
            image, points = flip_sample(image, points, flip_permutation)
            if angles is not None:
                angles = angles * torch.tensor([-1.0, 1.0, -1.0], dtype=angles.dtype)
        image, points = affine_sample(image, points, angle, scale, shift)
        if angles is not None and angle != 0.0:
            angles = angles + torch.tensor([0.0, 0.0, angle], dtype=angles.dtype)
        if any((self.brightness, self.contrast, self.saturation, self.hue)):
            image = jitter_colour(image, self, generator)
        return image, points, angles


def _keypoints(points: torch.Tensor, image: torch.Tensor) -> Any:
    from torchvision import tv_tensors

    height, width = image.shape[-2:]
    scale = torch.tensor([width, height], dtype=points.dtype)
    return tv_tensors.KeyPoints(points * scale, canvas_size=(height, width)), scale


def flip_sample(image: torch.Tensor, points: torch.Tensor, flip_permutation: Sequence[int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The horizontally mirrored image and its points, re-indexed by ``flip_permutation``."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    if len(flip_permutation) != points.shape[0]:
        raise ConfigError(f"the flip permutation has {len(flip_permutation)} entries, the "
                          f"sample has {points.shape[0]} points")
    keypoints, scale = _keypoints(points, image)
    # torchvision flips keypoints as x -> W - 1 - x (pixel centres on integers): shift half
    # a pixel into that convention and back (module docstring).
    mirrored = F.horizontal_flip(tv_tensors.wrap(keypoints - 0.5, like=keypoints)) + 0.5
    flipped = mirrored.as_subclass(torch.Tensor) / scale
    index = torch.as_tensor(list(flip_permutation), dtype=torch.long)
    return F.horizontal_flip(tv_tensors.Image(image)).as_subclass(torch.Tensor), flipped[index]


def affine_sample(image: torch.Tensor, points: torch.Tensor, angle_deg: float, scale: float,
                  shift: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The image and points rotated by ``angle_deg`` clockwise on screen (the direction of
    torchvision's ``F.affine``; ``v2.RandomRotation`` turns the other way), zoomed by
    ``scale`` about the centre and shifted by ``shift`` (fractions of the crop)."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    if angle_deg == 0.0 and scale == 1.0 and shift == (0.0, 0.0):
        return image, points
    height, width = image.shape[-2:]
    translate = [shift[0] * width, shift[1] * height]
    keypoints, size = _keypoints(points, image)
    moved = F.affine(keypoints, angle=angle_deg, translate=translate, scale=scale,
                     shear=[0.0, 0.0])
    warped = F.affine(tv_tensors.Image(image), angle=angle_deg, translate=translate,
                      scale=scale, shear=[0.0, 0.0],
                      interpolation=F.InterpolationMode.BILINEAR)
    return warped.as_subclass(torch.Tensor), moved.as_subclass(torch.Tensor) / size


def jitter_colour(image: torch.Tensor, settings: LandmarkAugment,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Colour jitter with ``v2.ColorJitter``'s ranges; the points do not move."""
    from torchvision.transforms.v2 import ColorJitter

    jitter = ColorJitter(brightness=settings.brightness, contrast=settings.contrast,
                         saturation=settings.saturation, hue=settings.hue)
    if generator is None:
        return jitter(image).clamp_(0.0, 1.0)
    # ColorJitter draws from torch's global stream: fork it so the generator decides.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
        return jitter(image).clamp_(0.0, 1.0)
