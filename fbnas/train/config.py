"""The training recipe: one frozen dataclass, read from YAML, overridden by ``key=value``.

It holds everything FBNetV3's joint search varies (optimizer, lr, weight decay, EMA,
label smoothing, mixup/cutmix, dropout, drop path, input resolution, epochs) and the rest
of a modern ImageNet recipe. A recipe is plain data: it is saved with every run
(``RUN/config.yaml``) and inside every checkpoint, and a run is resumed from it.

Built-in recipes (``--config NAME``) live in ``fbnas/train/recipes/*.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from fbnas.data.transforms import AugmentConfig
from fbnas.errors import FbnasError, parse_assignments, reject_unknown_keys

OptimizerName = Literal["sgd", "rmsproptf", "adamw"]
ScheduleName = Literal["cosine", "step", "constant"]


class RecipeError(FbnasError, ValueError):
    """A recipe with an unknown key or a bad value; the message names the key (and file)."""


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe.

    Learning rates are for the *global* batch ``batch_size`` (summed over all processes);
    nothing is rescaled behind the user's back. Epoch counts may be fractional where it
    makes sense (warm-up, step decay), as in the EfficientNet/FBNetV3 recipes (2.4 epochs).

    Attributes:
        epochs: training epochs.
        batch_size: global batch (each of N processes takes batch_size / N).
        optimizer: ``sgd`` (torch SGD), ``rmsproptf`` (timm's TensorFlow-style RMSprop, as
            EfficientNet/FBNetV3 use) or ``adamw``.
        lr: peak learning rate, after warm-up.
        momentum: SGD/RMSprop momentum (ignored by AdamW).
        nesterov: Nesterov momentum for SGD.
        opt_eps: optimizer epsilon (``None``: the optimizer's default; FBNetV3 uses 1e-3
            for RMSprop).
        weight_decay: L2/decoupled decay; never applied to BN parameters or biases.
        warmup_epochs: linear warm-up from ``warmup_lr`` to ``lr``, before the schedule.
        warmup_lr: learning rate at step 0.
        schedule: ``cosine`` (to ``min_lr`` at the end), ``step`` (times ``decay_rate``
            every ``decay_epochs``) or ``constant``; updated every step.
        min_lr: cosine floor.
        decay_epochs: step-schedule period.
        decay_rate: step-schedule factor.
        label_smoothing: epsilon of the smoothed targets q = (1-e)·onehot + e/K.
        mixup: Beta(a, a) parameter of mixup (0: off).
        cutmix: Beta(a, a) parameter of CutMix (0: off); with both on, each batch uses one,
            chosen with equal probability.
        randaugment: a timm RandAugment string (``rand-m9-mstd0.5``) or ``None``.
        random_crop: pad-and-crop (digits, CIFAR) or random-resized-crop (image folders).
        hflip: horizontal flip probability.
        dropout: dropout before the classifier.
        drop_path: stochastic depth of the last residual block; block j of B (counted over
            all blocks of the backbone from 0) gets ``drop_path·(j+1)/B``.
        ema_decay: per-step decay of the weight EMA (0: no EMA).
        grad_clip: clip the global gradient norm to this (0: off).
        resolution: input side (``None``: the dataset's default: 32 for digits and CIFAR,
            224 for image folders).
        seed: seeds initialisation, data order, augmentation and dropout.
        workers: data-loading worker processes per training process.
        sync_bn: SyncBatchNorm across processes (CUDA only: PyTorch's SyncBatchNorm has no
            CPU implementation).
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        channels_last: channels-last memory format on CUDA (ignored on CPU).
    """

    epochs: int = 90
    batch_size: int = 256
    optimizer: OptimizerName = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    opt_eps: float | None = None
    weight_decay: float = 4e-5
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0
    schedule: ScheduleName = "cosine"
    min_lr: float = 0.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    randaugment: str | None = None
    random_crop: bool = True
    hflip: float = 0.0
    dropout: float = 0.0
    drop_path: float = 0.0
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    resolution: int | None = None
    seed: int = 0
    workers: int = 2
    sync_bn: bool = False
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        hints = get_type_hints(TrainConfig)
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "decay_epochs": self.decay_epochs}
        for name, value in positive.items():
            if not value > 0:
                raise RecipeError(f"{name} must be > 0, got {value}")
        non_negative = {"momentum": self.momentum, "weight_decay": self.weight_decay,
                        "warmup_epochs": self.warmup_epochs, "warmup_lr": self.warmup_lr,
                        "min_lr": self.min_lr, "mixup": self.mixup, "cutmix": self.cutmix,
                        "grad_clip": self.grad_clip, "workers": self.workers,
                        "seed": self.seed, "decay_rate": self.decay_rate}
        for name, value in non_negative.items():
            if value < 0:
                raise RecipeError(f"{name} must be >= 0, got {value}")
        unit = {"label_smoothing": self.label_smoothing, "dropout": self.dropout,
                "drop_path": self.drop_path, "ema_decay": self.ema_decay,
                "hflip": self.hflip}
        for name, value in unit.items():
            if not 0 <= value < 1 and not (name == "hflip" and value == 1):
                raise RecipeError(f"{name} must be in [0, 1), got {value}")
        if self.warmup_epochs >= self.epochs:
            raise RecipeError(f"warmup_epochs ({self.warmup_epochs}) must be shorter than "
                              f"epochs ({self.epochs})")
        if self.opt_eps is not None and self.opt_eps <= 0:
            raise RecipeError(f"opt_eps must be > 0, got {self.opt_eps}")
        if self.resolution is not None and self.resolution < 8:
            raise RecipeError(f"resolution must be >= 8, got {self.resolution}")
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise RecipeError(f"mixup/cutmix pair images within a batch: batch_size must be "
                              f"even, got {self.batch_size}")

    # ----------------------------------------------------------------- conversion

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "recipe") -> TrainConfig:
        """Builds a recipe from plain data; unknown keys are refused, naming ``source``.

        Raises:
            RecipeError: unknown key (with the closest names) or a bad value.
        """
        if not isinstance(data, Mapping):
            raise RecipeError(f"{source}: a recipe must be a mapping of keys to values, got "
                              f"{type(data).__name__}")
        reject_unknown_keys(data, cls, source, RecipeError)
        try:
            return cls(**data)
        except RecipeError as exc:
            raise RecipeError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (YAML- and ``weights_only``-safe)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated."""
        return self.from_dict({**self.to_dict(), **changes}, "override")

    def with_overrides(self, assignments: Sequence[str]) -> TrainConfig:
        """Applies ``key=value`` strings; values are parsed as YAML scalars (``lr=0.1``,
        ``randaugment=null``, ``optimizer=adamw``).

        Raises:
            RecipeError: a string without ``=``, an unknown key, or a bad value.
        """
        changes = parse_assignments(assignments, "--set", RecipeError)
        data = {**self.to_dict(), **changes}
        return self.from_dict(data, "--set")

    # ----------------------------------------------------------------- derived

    @property
    def augment(self) -> AugmentConfig:
        """The data augmentation part of the recipe."""
        return AugmentConfig(random_crop=self.random_crop, hflip=self.hflip,
                             randaugment=self.randaugment)

    def diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Keys whose values differ: ``{key: (self's, other's)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Checks a recipe value against its annotation (``int``, ``float``, ``Literal``, ...)."""
    options = get_args(hint) if getattr(hint, "__origin__", None) is not Literal else (hint,)
    if not options:
        options = (hint,)
    for option in options:
        if option is type(None) and value is None:
            return
        if getattr(option, "__origin__", None) is Literal:
            if value in get_args(option):
                return
            continue
        if option is bool and isinstance(value, bool):
            return
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            return
        if option is str and isinstance(value, str):
            return
    literal = next((get_args(o) for o in options if getattr(o, "__origin__", None) is Literal),
                   None)
    expected = (f"one of {', '.join(map(repr, literal))}" if literal else
                " or ".join("null" if o is type(None) else o.__name__ for o in options))
    raise RecipeError(f"{name} must be {expected}, got {value!r}")


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped in ``fbnas/train/recipes``."""
    folder = resources.files("fbnas.train") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(source: str | Path | None) -> TrainConfig:
    """Reads a recipe from a YAML file or a built-in name; ``None`` gives the defaults.

    Raises:
        RecipeError: not a file nor a built-in name (listing them), invalid YAML, or a bad
            recipe (naming the file and key).
    """
    if source is None:
        return TrainConfig()
    path = Path(source)
    if path.is_file():
        text, label = path.read_text(encoding="utf-8"), str(path)
    elif str(source) in builtin_recipes():
        folder = resources.files("fbnas.train") / "recipes"
        text, label = (folder / f"{source}.yaml").read_text(encoding="utf-8"), f"{source}.yaml"
    else:
        raise RecipeError(f"recipe {str(source)!r} is neither a file nor a built-in recipe "
                          f"({', '.join(builtin_recipes())})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{label}: invalid YAML: {exc}") from None
    return TrainConfig.from_dict(data or {}, label)
