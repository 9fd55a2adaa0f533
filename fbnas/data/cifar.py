"""CIFAR-10/100 from the files the dataset's authors distribute, read without ``pickle``.

The *binary* version is a flat record format, read with numpy::

    cifar10:   data_batch_1.bin .. data_batch_5.bin, test_batch.bin
               records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32)
    cifar100:  train.bin, test.bin
               records of 1 coarse-label byte + 1 fine-label byte + 3072 pixel bytes

The *python* version is pickled. Unpickling runs code named in the file, so it goes
through :class:`ArrayUnpickler`, which admits the numpy array types and nothing else: a
crafted file naming ``os.system`` is refused, not run. PATH may be the folder holding the
files or its parent (``cifar-10-batches-bin/``, ``cifar-10-batches-py/``, ``cifar-100-binary/``,
``cifar-100-python/``). Nothing is downloaded.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fbnas.data.spec import DatasetError

IMAGE_BYTES = 3 * 32 * 32

_BINARY = {
    "cifar10": (["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                 "data_batch_4.bin", "data_batch_5.bin"], ["test_batch.bin"], 1,
                ("", "cifar-10-batches-bin")),
    "cifar100": (["train.bin"], ["test.bin"], 2, ("", "cifar-100-binary")),
}
_PYTHON = {
    "cifar10": (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5"], ["test_batch"], b"labels", ("", "cifar-10-batches-py")),
    "cifar100": (["train"], ["test"], b"fine_labels", ("", "cifar-100-python")),
}


def _array_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The only globals a CIFAR pickle may name: numpy's array reconstructors."""
    from numpy._core import multiarray, numeric  # numpy >= 2; ``numpy.core`` is its old name

    allowed: dict[tuple[str, str], Callable[..., Any]] = {}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Protocol-2 pickles of bytes written by Python 3 spell them as _codecs.encode(str, 'latin1').
    import _codecs
    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, numbers, bytes and numpy arrays, nothing else.

    Raises:
        pickle.UnpicklingError: the stream names any other global (class or function).
    """

    _allowed = _array_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global '{module}.{name}': only numpy arrays are "
                f"admitted in a dataset file") from None


def restricted_load(path: Path) -> Any:
    """Unpickles ``path`` with :class:`ArrayUnpickler` (Python-2 pickles read as bytes)."""
    data = path.read_bytes()
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many kinds
        raise DatasetError(f"{path}: not a readable CIFAR python batch "
                           f"({type(exc).__name__}: {exc})") from None


def _find_dir(root: Path, names: list[str], subdirs: tuple[str, ...]) -> Path | None:
    for sub in subdirs:
        folder = root / sub if sub else root
        if all((folder / name).is_file() for name in names):
            return folder
    return None


def _read_binary(files: list[Path], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + IMAGE_BYTES
    images, labels = [], []
    for path in files:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DatasetError(f"{path}: {raw.size} bytes is not a whole number of "
                               f"{record}-byte CIFAR records ({label_bytes} label byte"
                               f"{'s' if label_bytes > 1 else ''} + {IMAGE_BYTES} pixels); "
                               f"truncated or not a CIFAR binary batch")
        raw = raw.reshape(-1, record)
        labels.append(raw[:, label_bytes - 1].astype(np.int64))  # the fine label is last
        images.append(raw[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _read_python(files: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in files:
        batch = restricted_load(path)
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise DatasetError(f"{path}: expected a dict with b'data' and {label_key!r}")
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
            raise DatasetError(f"{path}: b'data' must be uint8 of shape (N, {IMAGE_BYTES}), "
                               f"got {data.dtype} {data.shape}")
        target = np.asarray(batch[label_key], dtype=np.int64)
        if target.shape != (data.shape[0],):
            raise DatasetError(f"{path}: {len(target)} labels for {data.shape[0]} images")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(target)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar(kind: str, root: Path) -> tuple[tuple[np.ndarray, np.ndarray],
                                              tuple[np.ndarray, np.ndarray]]:
    """Returns ((train_images, train_labels), (test_images, test_labels)), images (N, 3, 32, 32).

    Raises:
        DatasetError: the folder is missing, holds neither layout, or a file is malformed;
            the message lists the files expected.
    """
    if not root.is_dir():
        raise DatasetError(f"{kind}: dataset folder {str(root)!r} does not exist (expected "
                           f"the extracted CIFAR binary or python batches there)")
    train_names, test_names, label_bytes, subdirs = _BINARY[kind]
    num_classes = 10 if kind == "cifar10" else 100
    folder = _find_dir(root, train_names + test_names, subdirs)
    if folder is not None:
        train = _read_binary([folder / n for n in train_names], label_bytes)
        test = _read_binary([folder / n for n in test_names], label_bytes)
    else:
        py_train, py_test, label_key, py_subdirs = _PYTHON[kind]
        folder = _find_dir(root, py_train + py_test, py_subdirs)
        if folder is None:
            raise DatasetError(
                f"{kind}: {str(root)!r} holds neither the binary batches "
                f"({', '.join(train_names + test_names)}) nor the python batches "
                f"({', '.join(py_train + py_test)}), directly or in "
                f"{' or '.join(s for s in subdirs + py_subdirs if s)}/; extract the "
                f"archive from the CIFAR site there (nothing is downloaded)")
        train = _read_python([folder / n for n in py_train], label_key)
        test = _read_python([folder / n for n in py_test], label_key)
    for labels, split in ((train[1], "train"), (test[1], "test")):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(f"{kind} at {str(folder)!r}: {split} labels must lie in "
                               f"0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return train, test
