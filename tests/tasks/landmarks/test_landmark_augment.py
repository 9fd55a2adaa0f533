"""Augmentation moves the points with the image: a flip mirrors and re-indexes them with the
layout's permutation, an affine keeps them on the drawn features (torchvision's geometry)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fbnas.errors import ConfigError
from fbnas.tasks.landmarks.augment import LandmarkAugment, affine_sample, flip_sample
from fbnas.tasks.landmarks.data import LandmarkDataset
from fbnas.tasks.landmarks.layout import load_layout

SIZE = 48
DOTS = torch.tensor([[16.5, 18.5], [30.5, 14.5], [22.5, 32.5], [33.5, 28.5]]) / SIZE
"""Dot centres as fractions (pixel (16, 18) has its centre at (16.5, 18.5) / SIZE), away
from the edges so that no warp clips a dot."""


def dotted_image(points: torch.Tensor) -> torch.Tensor:
    """A dark image with a bright 3 x 3 dot centred on each point, distinct per channel."""
    image = torch.zeros(3, SIZE, SIZE)
    for k, (x, y) in enumerate((points * SIZE - 0.5).round().long().tolist()):
        image[k % 3, y - 1: y + 2, x - 1: x + 2] = 1.0
    return image


def blob_centre(channel: torch.Tensor, near: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """The brightness-weighted centre (fractions) of the blob around ``near``."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    cx, cy = (near * SIZE).tolist()
    window = ((xs - cx).abs() <= radius) & ((ys - cy).abs() <= radius)
    w = channel * window
    return torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum() / SIZE


def test_flip_mirrors_and_permutes_the_points() -> None:
    layout = load_layout(106)
    points = torch.rand(106, 2)
    image = torch.rand(3, 20, 30)
    flipped_image, flipped = flip_sample(image, points, layout.flip_permutation)
    index = list(layout.flip_permutation)
    torch.testing.assert_close(flipped[:, 0], 1.0 - points[index, 0])
    torch.testing.assert_close(flipped[:, 1], points[index, 1])
    torch.testing.assert_close(flipped_image, image.flip(-1))
    # The left eye's outer corner of the flipped face is where the right one's was mirrored.
    left_outer, right_outer = layout.left_eye_corners[0], layout.right_eye_corners[0]
    assert flipped[left_outer, 0] == pytest.approx(1.0 - points[right_outer, 0].item())


def test_flip_keeps_points_on_the_dots() -> None:
    """torchvision flips keypoints as x -> W - 1 - x; fbnas's continuous fractions need
    x -> W - x. A one-pixel error would move every dot centre by 1/SIZE."""
    image = dotted_image(DOTS)
    flipped_image, flipped = flip_sample(image, DOTS, [0, 1, 2, 3])
    for k in range(4):
        centre = blob_centre(flipped_image[k % 3], flipped[k])
        torch.testing.assert_close(centre, flipped[k], atol=0.02 / SIZE, rtol=0)


@pytest.mark.parametrize("angle, scale, shift", [(30.0, 1.0, (0.0, 0.0)),
                                                 (-20.0, 1.25, (0.05, -0.04)),
                                                 (90.0, 0.8, (0.0, 0.1))])
def test_affine_keeps_points_on_the_dots(angle: float, scale: float, shift) -> None:
    image = dotted_image(DOTS)
    warped, moved = affine_sample(image, DOTS, angle, scale, shift)
    assert not torch.allclose(moved, DOTS)
    for k in range(4):
        centre = blob_centre(warped[k % 3], moved[k])
        torch.testing.assert_close(centre, moved[k], atol=0.3 / SIZE, rtol=0)


def test_random_augment_keeps_points_on_the_dots_and_follows_pose() -> None:
    augment = LandmarkAugment(rotation_deg=25.0, scale_min=0.9, scale_max=1.1, shift=0.05,
                              flip_prob=0.5, brightness=0.0, contrast=0.0, saturation=0.0)
    generator = torch.Generator().manual_seed(0)
    angles = torch.tensor([10.0, 5.0, 3.0])
    flips = 0
    for _ in range(6):
        image, points, new = augment(dotted_image(DOTS), DOTS, [0, 1, 2, 3], angles,
                                     generator=generator)
        flips += bool(new[0] < 0)
        assert new[1] == 5.0  # pitch never changes
        for k in range(4):
            torch.testing.assert_close(blob_centre(image[k % 3], points[k]), points[k],
                                       atol=0.35 / SIZE, rtol=0)
    assert 0 < flips < 6


def test_flip_negates_yaw_and_roll_and_rotation_moves_roll() -> None:
    flip = replace(LandmarkAugment.none(), flip_prob=1.0)
    _, _, angles = flip(torch.zeros(3, 8, 8), torch.full((4, 2), 0.5), [1, 0, 2, 3],
                        torch.tensor([10.0, 5.0, 3.0]))
    assert angles.tolist() == [-10.0, 5.0, -3.0]
    rotate = LandmarkAugment(rotation_deg=20.0, scale_min=1.0, scale_max=1.0, shift=0.0,
                             flip_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    generator = torch.Generator().manual_seed(1)
    image = dotted_image(DOTS)
    _, points, angles = rotate(image, DOTS, [0, 1, 2, 3], torch.zeros(3), generator=generator)
    # Points turned clockwise on screen by a: the roll (clockwise) grows by a.
    a = angles[2].item()
    assert a != 0.0
    centre = torch.tensor([0.5, 0.5])
    before, after = DOTS[1] - centre, points[1] - centre
    turned = torch.atan2(-after[1], after[0]) - torch.atan2(-before[1], before[0])
    assert torch.rad2deg(-turned).item() == pytest.approx(a, abs=1e-3)


def test_none_changes_nothing_and_colour_keeps_points() -> None:
    image, points = torch.rand(3, 16, 16), torch.rand(5, 2)
    out, same, _ = LandmarkAugment.none()(image, points, range(5))
    assert torch.equal(out, image) and torch.equal(same, points)
    colour = LandmarkAugment(rotation_deg=0.0, scale_min=1.0, scale_max=1.0, shift=0.0,
                             flip_prob=0.0, brightness=0.5, contrast=0.5, saturation=0.5)
    out, same, _ = colour(image, points, range(5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, points) and not torch.equal(out, image)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown key 'rotation'"):
        LandmarkAugment.from_dict({"rotation": 10})
    with pytest.raises(ConfigError, match="flip_prob must be in"):
        LandmarkAugment(flip_prob=1.5)
    with pytest.raises(ConfigError, match="scale_min <= scale_max"):
        LandmarkAugment(scale_min=1.2, scale_max=1.0)
    with pytest.raises(ConfigError, match="flip permutation has 3 entries"):
        flip_sample(torch.zeros(3, 8, 8), torch.zeros(4, 2), [0, 1, 2])


def test_dataset_applies_augment(landmark_set: Path) -> None:
    torch.manual_seed(0)
    plain = LandmarkDataset(landmark_set / "train_data")
    augmented = LandmarkDataset(landmark_set / "train_data", augment=LandmarkAugment())
    image, target = augmented[0]
    assert image.shape == (3, 112, 112)
    assert not torch.equal(target["points"], plain[0][1]["points"])


def test_flipping_twice_is_the_identity() -> None:
    layout = load_layout(106)
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        points = torch.rand(106, 2, generator=generator) * 1.2 - 0.1
        image = torch.rand(3, 17, 23, generator=generator)
        once = flip_sample(image, points, layout.flip_permutation)
        twice = flip_sample(*once, layout.flip_permutation)
        torch.testing.assert_close(twice[1], points)
        assert torch.equal(twice[0], image)
