"""Opening a dataset spec as train/val ``torch.utils.data.Dataset`` pairs with transforms.

Small datasets (digits, CIFAR) live in memory as uint8 tensors ``(N, 3, H, W)``; an image
folder stays on disk and is decoded by torchvision. Both go through the same torchvision
``transforms.v2`` pipeline (RandAugment is timm's), so a recipe means the same thing on
every dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fbnas.data.cifar import read_cifar
from fbnas.data.spec import DatasetError, DataSpec, parse_data_spec
from fbnas.data.transforms import AugmentConfig, build_transform

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
"""The fixed stratified split of the 1797 digits: 1437 train / 360 val images."""

DEFAULT_RESOLUTION = {"digits": 32, "cifar10": 32, "cifar100": 32, "imagefolder": 224}
CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

Transform = Callable[[Any], torch.Tensor]


class TensorImageDataset(Dataset):
    """In-memory uint8 images ``(N, 3, H, W)`` and int64 labels ``(N,)``, transformed on read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Transform | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class FileImageDataset(Dataset):
    """Images on disk (``(path, label)`` pairs), decoded to RGB PIL images and transformed."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Transform | None = None,
                 ) -> None:
        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from torchvision.datasets.folder import pil_loader

        path, label = self.samples[index]
        image = pil_loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


@dataclass
class ImageDatasets:
    """A train/val pair with what a model and a recipe need to know about it.

    Attributes:
        spec: the parsed spec string it was opened from.
        train: yields ``(image (3, R, R) float, label)`` with the training augmentation.
        val: the same without augmentation.
        num_classes: after any proxy class subset.
        class_names: one per label.
        resolution: R, the side of the images the datasets yield.
        mean: per-channel normalisation mean (of images scaled to [0, 1]).
        std: per-channel normalisation std.
    """

    spec: DataSpec
    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def select_subset(labels: np.ndarray, chosen: np.ndarray, per_class: int | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns (indices, new labels): images of the ``chosen`` classes, at most ``per_class`` each.

    Labels are renumbered to positions in ``chosen`` (sorted), indices kept in file order.
    """
    keep: list[np.ndarray] = []
    for cls in chosen:
        idx = np.flatnonzero(labels == cls)
        if per_class is not None and idx.size > per_class:
            idx = np.sort(rng.permutation(idx)[:per_class])
        keep.append(idx)
    indices = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    remap = np.full(max(int(labels.max(initial=0)), int(chosen.max(initial=0))) + 1, -1,
                    dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    return indices, remap[labels[indices]]


def _choose_classes(spec: DataSpec, num_classes: int) -> np.ndarray:
    if spec.classes is None:
        return np.arange(num_classes)
    if spec.classes > num_classes:
        raise DatasetError(f"dataset spec {str(spec)!r}: classes={spec.classes} but the "
                           f"dataset has only {num_classes}")
    rng = np.random.default_rng([spec.seed, 0])
    return np.sort(rng.choice(num_classes, size=spec.classes, replace=False))


def _subsets(spec: DataSpec, train_labels: np.ndarray, val_labels: np.ndarray,
             num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray]:
    chosen = _choose_classes(spec, num_classes)
    train_idx, train_y = select_subset(train_labels, chosen, spec.per_class,
                                       np.random.default_rng([spec.seed, 1]))
    val_idx, val_y = select_subset(val_labels, chosen, spec.val_per_class,
                                   np.random.default_rng([spec.seed, 2]))
    return chosen, train_idx, train_y, val_idx, val_y


def _digits(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 (N, 3, R, R), bilinearly upscaled, split 80/20."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DatasetError("the 'digits' dataset needs scikit-learn (pip install "
                           "scikit-learn)") from exc
    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    if resolution != 8:
        pixels = torch.nn.functional.interpolate(pixels, size=(resolution, resolution),
                                                 mode="bilinear", align_corners=False)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    images = images.contiguous().numpy()
    labels = bunch.target.astype(np.int64)
    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=DIGITS_VAL_FRACTION,
                                          stratify=labels, random_state=DIGITS_SPLIT_SEED)
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def _mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scaled = images.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2, 3))
    std = scaled.std(axis=(0, 2, 3))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


def _image_folder_samples(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"imagefolder: {str(folder)!r} does not exist (expected "
                           f"{root}/train/CLASS/*.jpg and {root}/val/CLASS/*.jpg)")
    try:
        found = ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"imagefolder: {str(folder)!r}: {exc} (expected one sub-folder "
                           f"per class holding .jpg/.png/... images)") from None
    return found.classes, found.samples


def open_datasets(spec: str | DataSpec, resolution: int | None = None,
                  augment: AugmentConfig | None = None) -> ImageDatasets:
    """Opens a dataset spec as train/val datasets at ``resolution`` (default: the dataset's).

    Args:
        spec: ``digits``, ``cifar10:PATH``, ``cifar100:PATH`` or ``imagefolder:PATH``, with an
            optional proxy query (see :mod:`fbnas.data.spec`).
        resolution: side of the square images yielded; digits are upscaled to it, CIFAR
            resized, image folders random-resized-cropped (train) or center-cropped (val).
            Defaults: digits 32, CIFAR 32, image folders 224.
        augment: the training augmentation (default: none beyond resizing).

    Raises:
        DatasetError: a bad spec, missing files (naming the path and the expected layout),
            malformed files, or a proxy asking for more classes than there are.

    Example:
        >>> data = open_datasets("digits?per_class=5", resolution=16)
        >>> len(data.train), data.num_classes, data.train[0][0].shape
        (50, 10, torch.Size([3, 16, 16]))
    """
    spec = parse_data_spec(spec)
    resolution = resolution or DEFAULT_RESOLUTION[spec.kind]
    augment = augment or AugmentConfig()
    if resolution < 8:
        raise DatasetError(f"resolution must be >= 8, got {resolution}")
    if spec.kind == "imagefolder":
        assert spec.path is not None
        classes, train_samples = _image_folder_samples(spec.path, "train")
        val_classes, val_samples = _image_folder_samples(spec.path, "val")
        if classes != val_classes:
            extra = sorted(set(classes) ^ set(val_classes))
            raise DatasetError(f"imagefolder {str(spec.path)!r}: train/ and val/ must hold the "
                               f"same class folders; they differ in: {', '.join(extra[:8])}")
        train_labels = np.array([label for _, label in train_samples], dtype=np.int64)
        val_labels = np.array([label for _, label in val_samples], dtype=np.int64)
        chosen, train_idx, train_y, val_idx, val_y = _subsets(spec, train_labels, val_labels,
                                                              len(classes))
        mean, std = IMAGENET_MEAN_STD
        train_tf = build_transform("file", resolution, mean, std, augment)
        val_tf = build_transform("file", resolution, mean, std, None)
        train: Dataset = FileImageDataset(
            [(train_samples[i][0], int(y))
             for i, y in zip(train_idx, train_y, strict=True)], train_tf)
        val: Dataset = FileImageDataset(
            [(val_samples[i][0], int(y)) for i, y in zip(val_idx, val_y, strict=True)], val_tf)
        names = [classes[c] for c in chosen]
    else:
        if spec.kind == "digits":
            train_x, train_l, val_x, val_l = _digits(resolution)
            num_classes, mean, std = 10, *_mean_std(train_x)
            all_names = [str(d) for d in range(10)]
        else:
            assert spec.path is not None
            (train_x, train_l), (val_x, val_l) = read_cifar(spec.kind, spec.path)
            num_classes = 10 if spec.kind == "cifar10" else 100
            mean, std = CIFAR_MEAN_STD[spec.kind]
            all_names = [str(c) for c in range(num_classes)]
        chosen, train_idx, train_y, val_idx, val_y = _subsets(spec, train_l, val_l, num_classes)
        train_tf = build_transform("tensor", resolution, mean, std, augment)
        val_tf = build_transform("tensor", resolution, mean, std, None)
        train = TensorImageDataset(torch.from_numpy(np.ascontiguousarray(train_x[train_idx])),
                                   torch.from_numpy(train_y), train_tf)
        val = TensorImageDataset(torch.from_numpy(np.ascontiguousarray(val_x[val_idx])),
                                 torch.from_numpy(val_y), val_tf)
        names = [all_names[c] for c in chosen]
    if len(train) == 0 or len(val) == 0:
        raise DatasetError(f"dataset {str(spec)!r} has an empty "
                           f"{'train' if len(train) == 0 else 'val'} split")
    return ImageDatasets(spec=spec, train=train, val=val, num_classes=len(names),
                         class_names=names, resolution=resolution,
                         mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]
