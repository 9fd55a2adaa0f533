"""Dataset spec strings: ``digits``, ``cifar10:PATH``, ``cifar100:PATH``, ``imagefolder:PATH``.

One string names a dataset everywhere (CLI, recipes, checkpoints, search code), so a run's
data is recorded as plain text and can be re-opened from a checkpoint alone. A query
suffix takes a *proxy* subset, as FBNet searches on 100 ImageNet classes::

    digits                          # scikit-learn's bundled 8x8 digits (no download)
    digits?per_class=10             # few-shot proxy: 10 training images per class
    cifar100:/data/cifar?classes=20&per_class=100&seed=1
    imagefolder:/data/imagenet?classes=100

Query keys: ``classes`` (keep N classes, drawn with ``seed``; labels renumbered 0..N-1 in
the order of the original labels), ``per_class`` (keep at most M training images per class,
drawn with ``seed``), ``val_per_class`` (the same for the validation split; default: all),
``seed`` (default 0). The subsets are a function of the spec alone: every process and every
resumed run sees the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl

from fbnas.errors import FbnasError, did_you_mean

DatasetKind = Literal["digits", "cifar10", "cifar100", "imagefolder"]
DATASET_KINDS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "imagefolder")
NEEDS_PATH = ("cifar10", "cifar100", "imagefolder")
QUERY_KEYS = ("classes", "per_class", "val_per_class", "seed")


class DatasetError(FbnasError, ValueError):
    """A dataset spec that cannot be parsed, or files that are missing or malformed.

    The message names the spec or the path and, for files, the layout expected there.
    """


@dataclass(frozen=True)
class DataSpec:
    """A parsed dataset spec string.

    Attributes:
        kind: which reader opens it.
        path: the folder holding the files (``None`` for the embedded ``digits``).
        classes: keep this many classes (a proxy task), or all.
        per_class: keep at most this many training images per class, or all.
        val_per_class: the same for the validation split.
        seed: draws the class and image subsets.
    """

    kind: DatasetKind
    path: Path | None = None
    classes: int | None = None
    per_class: int | None = None
    val_per_class: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise DatasetError(f"unknown dataset {self.kind!r} (known: "
                               f"{', '.join(DATASET_KINDS)})")
        if self.kind in NEEDS_PATH and self.path is None:
            raise DatasetError(f"dataset {self.kind!r} needs a path: '{self.kind}:PATH'")
        if self.kind == "digits" and self.path is not None:
            raise DatasetError("'digits' is embedded in scikit-learn and takes no path")
        for key in ("classes", "per_class", "val_per_class"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise DatasetError(f"dataset spec: {key} must be >= 1, got {value}")

    @property
    def is_proxy(self) -> bool:
        """Whether the spec takes a subset of the classes or images."""
        return any(v is not None for v in (self.classes, self.per_class, self.val_per_class))

    def __str__(self) -> str:
        text = self.kind if self.path is None else f"{self.kind}:{self.path}"
        query = [f"{k}={getattr(self, k)}" for k in QUERY_KEYS[:3]
                 if getattr(self, k) is not None]
        if query and self.seed:
            query.append(f"seed={self.seed}")
        return text + ("?" + "&".join(query) if query else "")


def _query_int(key: str, value: str, spec: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"dataset spec {spec!r}: {key} must be an integer, got "
                           f"{value!r}") from None


def parse_data_spec(spec: str | DataSpec) -> DataSpec:
    """Parses ``KIND[:PATH][?key=value&...]`` into a :class:`DataSpec`.

    Raises:
        DatasetError: unknown kind (with the closest names), missing path, unknown or
            non-integer query keys.

    Example:
        >>> spec = parse_data_spec("cifar10:/data/c10?classes=5&per_class=50")
        >>> spec.kind, str(spec.path), spec.classes, spec.per_class
        ('cifar10', '/data/c10', 5, 50)
    """
    if isinstance(spec, DataSpec):
        return spec
    text = spec.strip()
    if not text:
        raise DatasetError(f"empty dataset spec (expected one of: {', '.join(DATASET_KINDS)})")
    base, _, query = text.partition("?")
    kind, sep, path = base.partition(":")
    kind = kind.strip().lower()
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset {kind!r} in spec {spec!r} (known: "
                           f"{', '.join(DATASET_KINDS)}){did_you_mean(kind, DATASET_KINDS)}")
    if sep and not path:
        raise DatasetError(f"dataset spec {spec!r}: empty path after ':'")
    options: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in QUERY_KEYS:
            raise DatasetError(f"dataset spec {spec!r}: unknown option {key!r} (known: "
                               f"{', '.join(QUERY_KEYS)}){did_you_mean(key, QUERY_KEYS, 1)}")
        options[key] = _query_int(key, value, spec)
    return DataSpec(kind=kind, path=Path(path).expanduser() if path else None,  # type: ignore[arg-type]
                    **options)
