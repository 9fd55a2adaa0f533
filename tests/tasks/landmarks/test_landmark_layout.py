"""The 106-point layout ships as data and holds together: its flip permutation is an
involution that maps the (symmetric) synthetic template onto its mirror image."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fbnas.tasks.landmarks.layout import (
    LandmarkDataError,
    check_flip_permutation,
    load_layout,
    load_layout_file,
)
from fbnas.tasks.landmarks.synthetic import FaceShape, template_106


def test_106_layout_loads_with_nni_pair() -> None:
    layout = load_layout(106)
    assert layout.num_points == 106
    assert layout.nme_pair == (35, 93)
    assert (layout.left_pupil, layout.right_pupil) == (104, 105)
    flip = layout.flip_permutation
    assert all(flip[flip[i]] == i for i in range(106))
    assert flip[layout.left_eye_corners[0]] == layout.right_eye_corners[0]
    assert flip[layout.left_eye_corners[1]] == layout.right_eye_corners[1]
    assert flip[16] == 16 and flip[0] == 32  # the chin stays, the ears swap
    covered = sorted(i for g in layout.groups.values() for i in g)
    assert covered == list(range(106))  # every index has exactly one meaning


def test_flip_permutation_maps_template_onto_its_mirror() -> None:
    """A frontal, symmetric face mirrored (x -> -x) and re-indexed is the same face: a
    wrong pair in layouts/106.json or in the template breaks this."""
    points = template_106(FaceShape())[:, :2]
    flip = list(load_layout(106).flip_permutation)
    mirrored = points[flip] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(mirrored, points, atol=1e-9)


def test_template_groups_sit_where_the_layout_says() -> None:
    layout = load_layout(106)
    p = template_106(FaceShape())
    g = {k: list(v) for k, v in layout.groups.items()}
    assert p[g["left_eye"], 0].max() < 0 < p[g["right_eye"], 0].min()  # image left/right
    assert p[g["left_brow_upper"], 1].max() < p[g["left_eye"], 1].min()  # brows above eyes
    assert p[g["nose_bottom"], 1].max() < p[g["outer_lip"], 1].min()  # nose above mouth
    assert p[16, 1] == p[g["contour"], 1].max()  # 16 is the chin
    outer, inner = layout.left_eye_corners
    assert p[outer, 0] < p[inner, 0]  # the left eye's outer corner is further left


@pytest.mark.parametrize("flip, message", [
    (list(range(105)), "105 entries, the layout has 106"),
    ([0] * 106, "not a permutation"),
    ([1, 2, 0] + list(range(3, 106)), "not an involution"),
])
def test_bad_flip_permutation_is_an_error(flip: list[int], message: str) -> None:
    with pytest.raises(LandmarkDataError, match=message):
        check_flip_permutation(flip, 106, "mine.json")
    with pytest.raises(LandmarkDataError, match=message):
        replace(load_layout(106), flip_permutation=tuple(flip))


def test_no_shipped_layout_names_what_ships(tmp_path) -> None:
    with pytest.raises(LandmarkDataError, match=r"no landmark layout ships for 68 points "
                       r"\(shipped: 106\).*load_layout_file"):
        load_layout(68)


def test_user_layout_file(tmp_path) -> None:
    data = {"num_points": 4, "flip_permutation": [1, 0, 2, 3], "left_eye_corners": [0, 0],
            "right_eye_corners": [1, 1], "left_pupil": 0, "right_pupil": 1,
            "nme_pair": [0, 1]}
    path = tmp_path / "4.json"
    path.write_text(json.dumps(data))
    assert load_layout_file(path).flip_permutation == (1, 0, 2, 3)
    path.write_text(json.dumps(data | {"flip_permutation": [1, 0, 2]}))
    with pytest.raises(LandmarkDataError, match=r"4\.json: flip_permutation has 3 entries"):
        load_layout_file(path)
    path.write_text(json.dumps(data | {"nme_par": [0, 1]}))
    with pytest.raises(LandmarkDataError, match="unknown key 'nme_par'"):
        load_layout_file(path)
    path.write_text(json.dumps(data | {"left_pupil": 9}))
    with pytest.raises(LandmarkDataError, match=r"left_pupil: index 9 is not in 0\.\.3"):
        load_layout_file(path)
