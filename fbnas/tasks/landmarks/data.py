"""Landmark data sets in the PFLD ``list.txt`` format, read and checked before training.

A set is a folder holding ``imgs/`` and ``list.txt``; a line of ``list.txt`` is, separated by
white space, the image path relative to the list, ``2P`` coordinates ``x0 y0 ... x(P-1)
y(P-1)`` and three Euler angles (yaw, pitch, roll, degrees): ``1 + 2P + 3`` fields. The
WFLW-style variant has six 0/1 attribute flags before the angles (``1 + 2P + 6 + 3``); the
two are told apart by the number of fields.

Coordinates are fractions of the crop (``x / W``, ``y / H``, origin at the top-left corner),
which is what NNI's PFLD example compares its raw network outputs with (ALGORITHMS.md §5.1:
the sources leave it undocumented). Contour points of a tight crop do fall slightly outside
it, so a coordinate is accepted within ``[-tolerance, 1 + tolerance]`` (``tolerance`` = 0.1
by default: a tenth of the crop); one further out is an error, since it almost always means
pixel coordinates or a shifted column. Every error names the file and the 1-based line; with
``skip_bad_lines`` the bad lines are left out and counted instead.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from fbnas.tasks.landmarks.layout import LandmarkDataError, load_layout

if TYPE_CHECKING:
    from fbnas.tasks.landmarks.augment import LandmarkAugment

logger = logging.getLogger(__name__)

NUM_ANGLES = 3
NUM_ATTRIBUTES = 6
DEFAULT_TOLERANCE = 0.1
"""Points may lie this far (a fraction of the crop) outside ``[0, 1]``."""


@dataclass(frozen=True)
class LandmarkRecord:
    """One checked line of a ``list.txt``."""

    image: Path
    points: np.ndarray  # (P, 2) float32, fractions of the crop (x/W, y/H)
    angles: np.ndarray  # (3,) float32: yaw, pitch, roll in degrees
    attributes: np.ndarray | None  # (6,) float32 0/1 flags (WFLW-style lines) or None
    line: int  # 1-based line number in list.txt


def field_counts(num_points: int) -> tuple[int, int]:
    """The two accepted field counts of a line: plain and WFLW-style (with attributes)."""
    plain = 1 + 2 * num_points + NUM_ANGLES
    return plain, plain + NUM_ATTRIBUTES


def parse_landmark_line(text: str, folder: Path, num_points: int = 106,
                        tolerance: float = DEFAULT_TOLERANCE, line: int = 0,
                        where: str = "list.txt", check_image: bool = True) -> LandmarkRecord:
    """One line of a ``list.txt`` as a record; ``folder`` is the list's folder.

    Raises:
        LandmarkDataError: ``"{where}, line {line}: ..."``: wrong number of fields, a value
            that is not a finite number, a point further than ``tolerance`` outside the crop,
            an attribute that is not 0/1, or (with ``check_image``) a missing image.
    """
    at = f"{where}, line {line}"
    fields = text.split()
    plain, wflw = field_counts(num_points)
    if len(fields) not in (plain, wflw):
        raise LandmarkDataError(
            f"{at}: {len(fields)} fields; a line of {num_points} points has {plain} (image, "
            f"{2 * num_points} coordinates, 3 angles) or {wflw} (with 6 attribute flags "
            f"before the angles)")
    try:
        values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
    except ValueError:
        bad = next(i for i, v in enumerate(fields[1:], start=2) if not _is_number(v))
        raise LandmarkDataError(f"{at}: field {bad} ({fields[bad - 1]!r}) is not a number"
                                ) from None
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0]) + 2
        raise LandmarkDataError(f"{at}: field {bad} ({fields[bad - 1]!r}) is not finite")
    points = values[: 2 * num_points].reshape(num_points, 2)
    _check_range(points, tolerance, at)
    attributes = None
    if len(fields) == wflw:
        attributes = values[2 * num_points: 2 * num_points + NUM_ATTRIBUTES]
        if not np.isin(attributes, (0.0, 1.0)).all():
            raise LandmarkDataError(f"{at}: the 6 attribute flags must be 0 or 1, got "
                                    f"{attributes.tolist()}")
        attributes = attributes.astype(np.float32)
    angles = values[-NUM_ANGLES:]
    image = folder / fields[0]
    if check_image and not image.is_file():
        raise LandmarkDataError(f"{at}: image {fields[0]!r} does not exist "
                                f"(looked for {str(image)!r})")
    return LandmarkRecord(image=image, points=points.astype(np.float32),
                          angles=angles.astype(np.float32), attributes=attributes, line=line)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_range(points: np.ndarray, tolerance: float, at: str) -> None:
    low, high = -tolerance, 1.0 + tolerance
    outside = (points < low) | (points > high)
    if not outside.any():
        return
    index, axis = (int(v) for v in np.argwhere(outside)[0])
    value = float(points[index, axis])
    hint = ""
    if np.abs(points).max() > 2.0:
        hint = ("; the values look like pixels, but list.txt holds fractions of the crop "
                "(x / W, y / H)")
    raise LandmarkDataError(
        f"{at}: point {index} {'xy'[axis]} = {value:g} is far outside the crop (allowed "
        f"{low:g}..{high:g}: fractions of the crop with a tolerance of {tolerance:g}){hint}")


def read_landmark_list(path: str | os.PathLike, num_points: int = 106,
                       skip_bad_lines: bool = False, tolerance: float = DEFAULT_TOLERANCE,
                       check_images: bool = True) -> tuple[list[LandmarkRecord], int]:
    """The checked records of a ``list.txt`` and how many bad lines were skipped.

    Empty lines are ignored. A bad line raises :class:`LandmarkDataError` naming the file
    and line; with ``skip_bad_lines`` it is logged, left out and counted. A list with no
    usable line is an error either way: training on nothing is never what was meant.
    """
    path = Path(path)
    if tolerance < 0 or not math.isfinite(tolerance):
        raise LandmarkDataError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if not path.is_file():
        raise LandmarkDataError(f"landmark list {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LandmarkDataError(f"{path}: not a text file ({exc})") from None
    records: list[LandmarkRecord] = []
    skipped = 0
    first_error: str | None = None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            records.append(parse_landmark_line(text, path.parent, num_points, tolerance,
                                               number, str(path), check_images))
        except LandmarkDataError as exc:
            if not skip_bad_lines:
                raise
            skipped += 1
            first_error = first_error or str(exc)
            logger.debug("skipped %s", exc)
    if skipped:
        logger.warning("%s: skipped %d bad line(s); the first: %s", path, skipped, first_error)
    if not records:
        detail = f" ({skipped} bad line(s) skipped; the first: {first_error})" if skipped else ""
        raise LandmarkDataError(f"{path}: no usable landmark line{detail}")
    return records, skipped


def load_image(path: Path, resolution: int, where: str = "") -> torch.Tensor:
    """An image file as float32 ``(3, R, R)`` RGB in [0, 1], resized to ``resolution``.

    NNI's example reads BGR with OpenCV; fbnas reads RGB with PIL, as the rest of fbnas does
    (the order matters only for weights trained elsewhere, which fbnas never loads).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise LandmarkDataError(f"{where}image {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise LandmarkDataError(f"{where}image {str(path)!r} cannot be read ({exc})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class LandmarkDataset(Dataset):
    """A landmark set folder (``imgs/`` and ``list.txt``), checked when it is opened.

    Items are ``(image, target)``: the image float32 ``(3, R, R)`` in [0, 1] and the target
    ``{"points": (P, 2), "angles": (3,), "attributes": (6,)}`` float32 (attributes are zeros
    when the list has none). Points stay fractions of the crop, so resizing never changes
    them. ``augment`` (training only) moves image and points together.

    ``cache_images`` keeps each decoded, resized image (uint8, ``3 R R`` bytes: 37 KB at
    112) after its first read, for small sets read for many epochs (the demo, tests); each
    DataLoader worker holds its own cache.
    """

    def __init__(self, root: str | os.PathLike, num_points: int = 106, resolution: int = 112,
                 augment: LandmarkAugment | None = None, skip_bad_lines: bool = False,
                 tolerance: float = DEFAULT_TOLERANCE, cache_images: bool = False) -> None:
        self.root = Path(root)
        if not isinstance(resolution, int) or resolution < 8:
            raise LandmarkDataError(f"resolution must be an integer >= 8, got {resolution!r}")
        if not self.root.is_dir():
            raise LandmarkDataError(f"landmark set folder {str(self.root)!r} does not exist")
        self.num_points = num_points
        self.resolution = resolution
        self.augment = augment
        self.layout = load_layout(num_points) if augment is not None else None
        self.records, self.skipped = read_landmark_list(
            self.root / "list.txt", num_points, skip_bad_lines, tolerance)
        self.has_attributes = any(r.attributes is not None for r in self.records)
        self.cache: dict[int, torch.Tensor] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[index]
        image = self.cache.get(index) if self.cache is not None else None
        if image is None:
            image = load_image(record.image, self.resolution,
                               f"{self.root / 'list.txt'}, line {record.line}: ")
            if self.cache is not None:
                self.cache[index] = image.mul(255.0).round_().to(torch.uint8)
        else:
            image = image.float().div_(255.0)
        points = torch.from_numpy(record.points.copy())
        angles = torch.from_numpy(record.angles.copy())
        if self.augment is not None:
            image, points, angles = self.augment(image, points, self.layout.flip_permutation,
                                                 angles)
        attributes = (torch.from_numpy(record.attributes.copy()) if record.attributes
                      is not None else torch.zeros(NUM_ATTRIBUTES))
        return image, {"points": points, "angles": angles, "attributes": attributes}


def open_landmark_datasets(root: str | os.PathLike, num_points: int = 106,
                           resolution: int = 112, augment: LandmarkAugment | None = None,
                           skip_bad_lines: bool = False,
                           tolerance: float = DEFAULT_TOLERANCE, cache_images: bool = False
                           ) -> tuple[LandmarkDataset, LandmarkDataset]:
    """The training and test sets of ``root`` (``train_data/`` and ``test_data/``), both
    checked before anything trains; ``augment`` applies to the training set only."""
    root = Path(root)
    if not root.is_dir():
        raise LandmarkDataError(f"landmark data folder {str(root)!r} does not exist")
    missing = [n for n in ("train_data", "test_data") if not (root / n).is_dir()]
    if missing:
        raise LandmarkDataError(f"landmark data folder {str(root)!r} has no "
                                f"{' or '.join(missing)}/ (expected train_data/ and "
                                f"test_data/, each with imgs/ and list.txt)")
    train = LandmarkDataset(root / "train_data", num_points, resolution, augment,
                            skip_bad_lines, tolerance, cache_images)
    test = LandmarkDataset(root / "test_data", num_points, resolution, None, skip_bad_lines,
                           tolerance, cache_images)
    return train, test


@dataclass(frozen=True)
class LandmarkSetReport:
    """What :func:`check_landmark_set` found in one set folder."""

    folder: Path
    lines: int  # non-empty lines of list.txt
    records: int
    skipped: int
    with_attributes: int
    point_min: tuple[float, float]  # smallest x, y over all points
    point_max: tuple[float, float]
    outside_share: float  # share of coordinates outside [0, 1] (within the tolerance)
    angle_min: tuple[float, float, float]
    angle_max: tuple[float, float, float]


def check_landmark_set(folder: str | os.PathLike, num_points: int = 106,
                       skip_bad_lines: bool = False, tolerance: float = DEFAULT_TOLERANCE
                       ) -> LandmarkSetReport:
    """Reads and checks the set in ``folder`` (``imgs/`` and ``list.txt``) as training would
    and returns counts and ranges; errors as :func:`read_landmark_list`."""
    folder = Path(folder)
    records, skipped = read_landmark_list(folder / "list.txt", num_points, skip_bad_lines,
                                          tolerance)
    points = np.stack([r.points for r in records])  # (N, P, 2)
    angles = np.stack([r.angles for r in records])  # (N, 3)
    return LandmarkSetReport(
        folder=folder, lines=len(records) + skipped, records=len(records), skipped=skipped,
        with_attributes=sum(r.attributes is not None for r in records),
        point_min=tuple(float(v) for v in points.min(axis=(0, 1))),
        point_max=tuple(float(v) for v in points.max(axis=(0, 1))),
        outside_share=float(((points < 0) | (points > 1)).mean()),
        angle_min=tuple(float(v) for v in angles.min(axis=0)),
        angle_max=tuple(float(v) for v in angles.max(axis=0)))


def landmark_set_folders(root: str | os.PathLike) -> list[Path]:
    """The set folders under ``root``: ``train_data`` and ``test_data`` where they exist,
    else ``root`` itself when it holds a ``list.txt``."""
    root = Path(root)
    if not root.is_dir():
        raise LandmarkDataError(f"landmark data folder {str(root)!r} does not exist")
    parts = [root / n for n in ("train_data", "test_data") if (root / n).is_dir()]
    if parts:
        return parts
    if (root / "list.txt").is_file():
        return [root]
    raise LandmarkDataError(f"{str(root)!r} holds neither train_data/ and test_data/ nor a "
                            f"list.txt")
