"""The synthetic set: deterministic, in the list.txt layout, points on the drawn features,
the written angles mean what the docs say; and the two CLI commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbnas.tasks.landmarks.data import read_landmark_list
from fbnas.tasks.landmarks.layout import LandmarkDataError
from fbnas.tasks.landmarks.synthetic import (
    FaceShape,
    make_landmark_set,
    render_face,
    rotation,
    template_106,
)


def test_same_seed_same_set(tmp_path: Path, landmark_set: Path) -> None:
    again = make_landmark_set(tmp_path / "again", 10, seed=3)
    for part in ("train_data", "test_data"):
        assert (again / part / "list.txt").read_text() == \
            (landmark_set / part / "list.txt").read_text()
    records, _ = read_landmark_list(landmark_set / "test_data" / "list.txt")
    assert len(records) == 2  # test_share 0.2 of 10


def test_points_sit_on_drawn_features(landmark_set: Path) -> None:
    """Pupils and brows are drawn much darker than the skin they sit in."""
    records, _ = read_landmark_list(landmark_set / "train_data" / "list.txt")
    for r in records:
        image = np.asarray(Image.open(r.image).convert("RGB"), dtype=np.float32)
        h, w = image.shape[:2]
        xy = np.minimum((r.points * (w, h)).astype(int), w - 1)
        brightness = image[xy[:, 1], xy[:, 0]].mean(axis=1)  # (106,) at each point
        cheek = ((r.points[4] + r.points[49]) / 2 * (w, h)).astype(int)  # contour to nose
        skin = image[cheek[1], cheek[0]].mean()
        assert brightness[[104, 105]].max() < 0.8 * skin  # pupils
        # Inside the left brow: between its upper edge's middle (35) and its lower edge.
        brow = ((r.points[35] + (r.points[65] + r.points[66]) / 2) / 2 * (w, h)).astype(int)
        assert image[brow[1], brow[0]].mean() < 0.8 * skin


def test_angles_follow_the_documented_convention() -> None:
    face = template_106(FaceShape())
    nose_tip = 46

    def project(yaw: float, pitch: float, roll: float) -> np.ndarray:
        return (face @ rotation(yaw, pitch, roll).T)[:, :2]

    assert project(20, 0, 0)[nose_tip, 0] > 0.1  # yaw > 0: the nose moves right
    assert project(0, 20, 0)[nose_tip, 1] < face[nose_tip, 1] - 0.05  # pitch > 0: up
    rolled = project(0, 0, 20)
    assert rolled[77, 1] > rolled[74, 1] + 0.1  # roll > 0 clockwise: the right eye drops


def test_render_is_fast_enough_to_look_at() -> None:
    rng = np.random.default_rng(0)
    image, points, angles = render_face(rng, 112)
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8
    assert points.shape == (106, 2) and angles.shape == (3,)
    assert (points > -0.1).all() and (points < 1.1).all()


def test_only_106_points() -> None:
    with pytest.raises(LandmarkDataError, match="106-point layout only"):
        make_landmark_set("unused", 4, num_points=68)


def test_cli_make_and_check(tmp_path: Path, run_cli) -> None:
    result = run_cli("data", "make-landmarks", "--out", tmp_path / "set", "-n", "6",
                     "--seed", "1", "--resolution", "64")
    assert result.returncode == 0, result.stderr
    assert "wrote 6 images" in result.stdout
    assert Image.open(tmp_path / "set" / "train_data" / "imgs" / "000000.png").size == (64, 64)
    result = run_cli("data", "check-landmarks", tmp_path / "set")
    assert result.returncode == 0, result.stderr
    train_row = next(line for line in result.stdout.splitlines()
                     if line.startswith("train_data"))
    assert train_row.split()[1:3] == ["5", "0"]  # 5 images, 0 skipped
    lines = (tmp_path / "set" / "test_data" / "list.txt").read_text().splitlines()
    (tmp_path / "set" / "test_data" / "list.txt").write_text(lines[0] + " 7\n" + lines[0])
    result = run_cli("data", "check-landmarks", tmp_path / "set")
    assert result.returncode == 2
    assert "test_data/list.txt, line 1: 217 fields" in result.stderr
    result = run_cli("data", "check-landmarks", tmp_path / "set", "--skip-bad-lines")
    assert result.returncode == 0, result.stderr
    test_row = next(line for line in result.stdout.splitlines() if line.startswith("test_data"))
    assert test_row.split()[1:3] == ["1", "1"]  # 1 image, 1 skipped
    assert "skipped 1 bad line(s)" in result.stderr
    result = run_cli("data", "make-landmarks", "--out", tmp_path / "set", "-n", "6")
    assert result.returncode == 2 and "already holds a landmark set" in result.stderr


def test_convex_hull_drops_inner_points() -> None:
    from fbnas.tasks.landmarks.synthetic import convex_hull

    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.7], [1, 0.5]])
    hull = convex_hull(square)
    assert sorted(map(tuple, hull.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
