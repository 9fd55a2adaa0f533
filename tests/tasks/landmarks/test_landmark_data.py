"""list.txt parsing and checks: every bad line is an error naming the file and line, before
anything trains; --skip-bad-lines keeps the rest usable and counts what it left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fbnas.tasks.landmarks.data import (
    LandmarkDataset,
    check_landmark_set,
    open_landmark_datasets,
    read_landmark_list,
)
from fbnas.tasks.landmarks.layout import LandmarkDataError
from fbnas.tasks.landmarks.synthetic import make_landmark_set


def lines_of(folder: Path) -> list[str]:
    return (folder / "list.txt").read_text().splitlines()


def write_lines(folder: Path, lines: list[str]) -> None:
    (folder / "list.txt").write_text("\n".join(lines) + "\n")


def set_field(line: str, index: int, value: str) -> str:
    fields = line.split()
    fields[index] = value
    return " ".join(fields)


def test_reads_synthetic_set(landmark_set: Path) -> None:
    records, skipped = read_landmark_list(landmark_set / "train_data" / "list.txt")
    assert (len(records), skipped) == (8, 0)
    r = records[0]
    assert r.points.shape == (106, 2) and r.points.dtype == np.float32
    assert r.angles.shape == (3,) and r.attributes is None and r.line == 1
    assert r.image.is_file()


def test_wflw_style_line_has_attributes(landmark_copy: Path) -> None:
    folder = landmark_copy / "train_data"
    lines = lines_of(folder)
    fields = lines[1].split()
    lines[1] = " ".join(fields[:-3] + ["1", "0", "0", "1", "0", "0"] + fields[-3:])
    write_lines(folder, lines)
    records, _ = read_landmark_list(folder / "list.txt")
    assert records[0].attributes is None
    assert records[1].attributes.tolist() == [1, 0, 0, 1, 0, 0]
    angles = [float(v) for v in fields[-3:]]
    np.testing.assert_allclose(records[1].angles, angles, rtol=1e-6)
    image, target = LandmarkDataset(folder)[1]
    assert target["attributes"].tolist() == [1, 0, 0, 1, 0, 0]
    assert LandmarkDataset(folder)[0][1]["attributes"].tolist() == [0] * 6


@pytest.mark.parametrize("breakage, message", [
    (lambda line: line + " 0.5", r"line 3: 217 fields; a line of 106 points has 216 .* or "
                                 r"222"),
    (lambda line: set_field(line, 5, "abc"), r"line 3: field 6 \('abc'\) is not a number"),
    (lambda line: set_field(line, 7, "nan"), r"line 3: field 8 \('nan'\) is not finite"),
    (lambda line: set_field(line, 1, "1.5"), r"line 3: point 0 x = 1.5 is far outside the crop "
                                             r"\(allowed -0.1..1.1"),
    (lambda line: set_field(line, 2, "57"), r"point 0 y = 57 .*look like pixels"),
    (lambda line: set_field(line, 0, "imgs/gone.png"), r"line 3: image 'imgs/gone.png' does "
                                                       r"not exist"),
])
def test_bad_line_names_file_and_line(landmark_copy: Path, breakage, message: str) -> None:
    folder = landmark_copy / "train_data"
    lines = lines_of(folder)
    lines[2] = breakage(lines[2])
    write_lines(folder, lines)
    list_txt = str(folder / "list.txt")
    with pytest.raises(LandmarkDataError, match=message) as info:
        read_landmark_list(folder / "list.txt")
    assert str(info.value).startswith(f"{list_txt}, line 3: ")
    with pytest.raises(LandmarkDataError, match=message):  # the datasets stop before training
        open_landmark_datasets(landmark_copy)
    records, skipped = read_landmark_list(folder / "list.txt", skip_bad_lines=True)
    assert (len(records), skipped) == (7, 1)
    assert [r.line for r in records] == [1, 2, 4, 5, 6, 7, 8]


def test_points_slightly_outside_are_allowed(landmark_copy: Path) -> None:
    folder = landmark_copy / "train_data"
    lines = lines_of(folder)
    lines[0] = set_field(set_field(lines[0], 1, "-0.08"), 2, "1.09")
    write_lines(folder, lines)
    records, _ = read_landmark_list(folder / "list.txt")
    assert records[0].points[0].tolist() == pytest.approx([-0.08, 1.09])
    with pytest.raises(LandmarkDataError, match="allowed -0.05..1.05"):
        read_landmark_list(folder / "list.txt", tolerance=0.05)


def test_all_lines_bad_is_an_error_even_when_skipping(landmark_copy: Path) -> None:
    folder = landmark_copy / "test_data"
    write_lines(folder, ["imgs/000000.png 0.5 0.5", "", "x"])
    with pytest.raises(LandmarkDataError, match=r"no usable landmark line \(2 bad line\(s\) "
                       r"skipped; the first: .*line 1: 3 fields"):
        read_landmark_list(folder / "list.txt", skip_bad_lines=True)


def test_dataset_items_and_resize(landmark_set: Path) -> None:
    train, test = open_landmark_datasets(landmark_set, resolution=64)
    assert (len(train), len(test)) == (8, 2)
    image, target = train[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["points"].shape == (106, 2) and target["angles"].shape == (3,)
    np.testing.assert_array_equal(target["points"].numpy(), train.records[0].points)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch[0].shape == (4, 3, 64, 64) and batch[1]["points"].shape == (4, 106, 2)


def test_cached_images_equal_read_ones(landmark_copy: Path) -> None:
    plain = LandmarkDataset(landmark_copy / "test_data")
    cached = LandmarkDataset(landmark_copy / "test_data", cache_images=True)
    read = plain[0][0]
    assert torch.equal(cached[0][0], read)
    (landmark_copy / "test_data" / "imgs" / "000000.png").unlink()
    assert torch.equal(cached[0][0], read)  # from the cache, bit for bit
    with pytest.raises(LandmarkDataError, match="line 1: image .* does not exist"):
        plain[0]


def test_missing_parts_are_errors(tmp_path: Path, landmark_copy: Path) -> None:
    with pytest.raises(LandmarkDataError, match="does not exist"):
        open_landmark_datasets(tmp_path / "nowhere")
    (landmark_copy / "test_data" / "list.txt").rename(landmark_copy / "test_data" / "x.txt")
    with pytest.raises(LandmarkDataError, match=r"test_data/list.txt' does not exist"):
        open_landmark_datasets(landmark_copy)
    (landmark_copy / "test_data").rename(landmark_copy / "elsewhere")
    with pytest.raises(LandmarkDataError, match="has no test_data/"):
        open_landmark_datasets(landmark_copy)


def test_unreadable_image_names_line(landmark_copy: Path) -> None:
    folder = landmark_copy / "test_data"
    (folder / "imgs" / "000001.png").write_bytes(b"not a png")
    dataset = LandmarkDataset(folder)
    with pytest.raises(LandmarkDataError, match=r"list.txt, line 2: image .*000001.png' cannot "
                       r"be read"):
        dataset[1]


def test_make_set_refuses_to_overwrite(landmark_copy: Path) -> None:
    before = (landmark_copy / "train_data" / "list.txt").read_text()
    with pytest.raises(LandmarkDataError, match="already holds a landmark set"):
        make_landmark_set(landmark_copy, 4, seed=9)
    assert (landmark_copy / "train_data" / "list.txt").read_text() == before


def test_check_reports_ranges(landmark_set: Path) -> None:
    report = check_landmark_set(landmark_set / "train_data")
    assert (report.records, report.skipped, report.with_attributes) == (8, 0, 0)
    assert -0.1 <= report.point_min[0] < report.point_max[0] <= 1.1
    assert all(abs(a) <= 30 for a in report.angle_min + report.angle_max)
