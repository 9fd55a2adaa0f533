"""CIFAR binary and python batches, image folders: real small files written here."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbnas.data import DatasetError, open_datasets, read_cifar


def _write_cifar10_binary(root: Path, per_batch: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    first = None
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, per_batch, dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        (root / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        if first is None:
            first = pixels[0].reshape(3, 32, 32)
    assert first is not None
    return first


def test_cifar10_binary_batches_are_read(tmp_path: Path) -> None:
    first = _write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
    (train_x, train_y), (test_x, test_y) = read_cifar("cifar10", tmp_path)  # parent folder
    assert train_x.shape == (30, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)
    assert np.array_equal(train_x[0], first)  # R, G, B planes in record order
    data = open_datasets(f"cifar10:{tmp_path}")
    assert len(data.train) == 30 and data.num_classes == 10
    assert data.train[0][0].shape == (3, 32, 32)


def test_cifar100_binary_uses_the_fine_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name, n in (("train.bin", 8), ("test.bin", 4)):
        coarse = np.full((n, 1), 3, np.uint8)
        fine = np.arange(n, dtype=np.uint8)[:, None] + 90
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (tmp_path / name).write_bytes(np.concatenate([coarse, fine, pixels], 1).tobytes())
    (_, train_y), _ = read_cifar("cifar100", tmp_path)
    assert train_y.tolist() == list(range(90, 98))


def test_truncated_binary_batch_is_a_clear_error(tmp_path: Path) -> None:
    _write_cifar10_binary(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="data_batch_3.bin.*truncated"):
        read_cifar("cifar10", tmp_path)


def _write_python_batches(root: Path, kind: str) -> None:
    rng = np.random.default_rng(2)
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if kind == "cifar10"
             else ["train", "test"])
    key = b"labels" if kind == "cifar10" else b"fine_labels"
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 key: [int(v) for v in rng.integers(0, 10, 4)], b"batch_label": b"x"}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("kind, folder", [("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python")])
def test_python_batches_go_through_the_restricted_unpickler(tmp_path: Path, kind: str,
                                                            folder: str) -> None:
    _write_python_batches(tmp_path / folder, kind)
    (train_x, train_y), (test_x, _) = read_cifar(kind, tmp_path)
    assert train_x.dtype == np.uint8 and train_x.shape[1:] == (3, 32, 32)
    assert len(train_y) == train_x.shape[0] and test_x.shape[0] == 4


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_naming_any_other_global_is_refused_not_run(tmp_path: Path,
                                                             monkeypatch) -> None:
    _write_python_batches(tmp_path, "cifar10")
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"refusing to unpickle global '(posix|os)\.system'"):
        read_cifar("cifar10", tmp_path)
    assert not (tmp_path / "pwned.txt").exists()


def test_missing_cifar_names_the_path_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_datasets(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(DatasetError, match=r"neither the binary batches \(data_batch_1.bin"):
        open_datasets(f"cifar10:{tmp_path}")


def _write_image_folder(root: Path, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_reads_train_and_val(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, ["cat", "dog", "eel"], 3)
    data = open_datasets(f"imagefolder:{tmp_path}?classes=2&per_class=2", resolution=16)
    assert data.num_classes == 2 and len(data.train) == 4 and len(data.val) == 6
    assert set(data.class_names) <= {"cat", "dog", "eel"}
    image, label = data.val[0]
    assert image.shape == (3, 16, 16) and label in (0, 1)


def test_image_folder_layout_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(DatasetError, match=r"val' does not exist \(expected .*/train/CLASS"):
        open_datasets(f"imagefolder:{tmp_path}")
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="val'.*Found no valid file.*one sub-folder per class"):
        open_datasets(f"imagefolder:{tmp_path}")
