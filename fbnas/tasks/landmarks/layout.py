"""Landmark layouts as data: which index is which point, and how points swap under a flip.

A layout is what a horizontal flip, the NME normalisation and the synthetic renderer need to
know about a P-point mark-up. It ships as a JSON file per P (``layouts/106.json``), so that a
data set in another order is a new file, not new code; ``load_layout_file`` reads a user's own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fbnas.errors import FbnasError

LAYOUT_PACKAGE = "fbnas.tasks.landmarks"
LAYOUT_FOLDER = "layouts"


class LandmarkDataError(FbnasError, ValueError):
    """Bad landmark input: a layout, a ``list.txt`` line, an image. The message names the
    file (and line)."""


@dataclass(frozen=True)
class LandmarkLayout:
    """The meaning of the indices of a P-point landmark mark-up.

    ``flip_permutation[i]`` is the index of the original point whose mirror image becomes
    point ``i`` of the horizontally flipped image (the left eye's outer corner of a flipped
    face is the mirrored right eye's outer corner). Mirroring twice is the identity, so the
    permutation must be an involution. Eye corners are ``(outer, inner)``; "left" is the
    image's left (smaller x), as the viewer sees it.
    """

    num_points: int
    flip_permutation: tuple[int, ...]
    left_eye_corners: tuple[int, int]
    right_eye_corners: tuple[int, int]
    left_pupil: int
    right_pupil: int
    nme_pair: tuple[int, int]
    name: str = ""
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or f"{self.num_points}-point layout"
        if not isinstance(self.num_points, int) or self.num_points < 2:
            raise LandmarkDataError(f"{where}: num_points must be an integer >= 2, "
                                    f"got {self.num_points!r}")
        check_flip_permutation(self.flip_permutation, self.num_points, where)
        for key in ("left_eye_corners", "right_eye_corners", "nme_pair"):
            value = getattr(self, key)
            if len(value) != 2:
                raise LandmarkDataError(f"{where}: {key} must be 2 indices, got {list(value)}")
            for index in value:
                self._check_index(index, key, where)
        for key in ("left_pupil", "right_pupil"):
            self._check_index(getattr(self, key), key, where)
        for group, indices in self.groups.items():
            for index in indices:
                self._check_index(index, f"groups.{group}", where)

    def _check_index(self, index: Any, key: str, where: str) -> None:
        if not isinstance(index, int) or not 0 <= index < self.num_points:
            raise LandmarkDataError(f"{where}: {key}: index {index!r} is not in "
                                    f"0..{self.num_points - 1}")


def check_flip_permutation(flip: tuple[int, ...] | list[int], num_points: int,
                           where: str = "flip permutation") -> None:
    """Raises :class:`LandmarkDataError` unless ``flip`` is an involutive permutation of
    ``range(num_points)``: a wrong length, a repeated index or a pair that does not swap
    back would put points on the wrong features after a flip, silently."""
    flip = list(flip)
    if len(flip) != num_points:
        raise LandmarkDataError(f"{where}: flip_permutation has {len(flip)} entries, the "
                                f"layout has {num_points} points")
    if sorted(flip) != list(range(num_points)):
        bad = sorted(set(range(num_points)) - set(flip))
        raise LandmarkDataError(f"{where}: flip_permutation is not a permutation of "
                                f"0..{num_points - 1} (missing {bad[:5]})")
    for i, j in enumerate(flip):
        if flip[j] != i:
            raise LandmarkDataError(f"{where}: flip_permutation is not an involution: point "
                                    f"{i} goes to {j}, but {j} goes to {flip[j]}")


def shipped_layouts() -> list[int]:
    """The point counts that have a layout file in the package."""
    folder = resources.files(LAYOUT_PACKAGE).joinpath(LAYOUT_FOLDER)
    return sorted(int(p.name[:-5]) for p in folder.iterdir()
                  if p.name.endswith(".json") and p.name[:-5].isdigit())


def load_layout(num_points: int = 106) -> LandmarkLayout:
    """The shipped layout for ``num_points`` points (``layouts/{P}.json``).

    Raises:
        LandmarkDataError: no layout ships for ``num_points`` (naming the ones that do and
            :func:`load_layout_file` for a user's own), or the file is malformed.
    """
    resource = resources.files(LAYOUT_PACKAGE).joinpath(LAYOUT_FOLDER, f"{num_points}.json")
    if not resource.is_file():
        raise LandmarkDataError(
            f"no landmark layout ships for {num_points} points (shipped: "
            f"{', '.join(map(str, shipped_layouts()))}); write one as JSON (see "
            f"fbnas/tasks/landmarks/layouts/106.json) and load it with load_layout_file")
    with resources.as_file(resource) as path:
        return load_layout_file(path)


def load_layout_file(path: str | os.PathLike) -> LandmarkLayout:
    """A layout from a JSON file of the form of ``layouts/106.json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LandmarkDataError(f"landmark layout {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LandmarkDataError(f"landmark layout {str(path)!r}: not JSON ({exc})") from None
    return layout_from_dict(data, str(path))


LAYOUT_KEYS = ("num_points", "flip_permutation", "left_eye_corners", "right_eye_corners",
               "left_pupil", "right_pupil", "nme_pair")
INFO_KEYS = ("name", "description", "groups", "flip_permutation_meaning", "eye_corners_order")


def layout_from_dict(data: dict[str, Any], source: str = "layout") -> LandmarkLayout:
    """A :class:`LandmarkLayout` from its JSON form; unknown and missing keys are errors
    naming ``source``."""
    if not isinstance(data, dict):
        raise LandmarkDataError(f"{source}: a layout is a JSON object")
    for key in data:
        if key not in LAYOUT_KEYS + INFO_KEYS:
            raise LandmarkDataError(f"{source}: unknown key {key!r}")
    missing = [k for k in LAYOUT_KEYS if k not in data]
    if missing:
        raise LandmarkDataError(f"{source}: missing {', '.join(missing)}")
    return LandmarkLayout(
        num_points=data["num_points"],
        flip_permutation=tuple(data["flip_permutation"]),
        left_eye_corners=tuple(data["left_eye_corners"]),
        right_eye_corners=tuple(data["right_eye_corners"]),
        left_pupil=data["left_pupil"],
        right_pupil=data["right_pupil"],
        nme_pair=tuple(data["nme_pair"]),
        name=str(data.get("name", "")),
        groups={k: tuple(v) for k, v in data.get("groups", {}).items()},
        source=source,
    )
