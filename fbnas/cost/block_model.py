"""A block latency model per device: the latency of blocks no table holds, from their features.

FBNetV2's width options and FBNetV3's per-stage channels, expansions and depths make far
more distinct blocks than anyone can time one by one. Like nn-Meter (kernel-level
regressors trained per device on sampled kernels; 99 % of networks within ±10 % on mobile
CPUs), the model learns ``features of a block -> latency`` from a sample of measured
blocks of one device and backend, and answers the blocks a table lacks.

Features come from the block itself, built on PyTorch's ``meta`` device and run once with
hooks on its leaf modules (no memory, no compute): op family, kernel, stride, input,
hidden and output channels, spatial sizes, groups, SE, activations, MACs split by conv
kind (dense, pointwise, depthwise), bytes moved (inputs + outputs of every layer, weights)
and the number of layers (each one a framework dispatch: the fixed cost that dominates
small blocks). A table key names everything that decides a block's cost, so the features
of any table entry are computed from its key alone. A network's head (``cls_head|CxHxW|
classes``) is described the same way: built from its key via the head registry, it is a
family of its own (``head:cls_head``), and checked for extrapolation against the heads
the model was trained on (a model trained without heads refuses head keys).

The regressor is chosen by measured accuracy: every candidate of :data:`CANDIDATES` is
cross-validated on the training blocks (k-fold, fixed seed) and the one with the lowest
mean relative error is fitted on all of them. Files are JSON: the regressor's name and
hyperparameters, the training set (features and latency of every block) and the library
versions; loading refits deterministically (fixed seeds), so loading runs no code —
scikit-learn's own model files are pickles.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fbnas.arch.spec import FrozenKwargs
from fbnas.blocks import BLOCKS, HEADS
from fbnas.cost.latency import DeviceInfo
from fbnas.errors import FbnasError
from fbnas.io import atomic_write_text, read_json_file
from fbnas.version import __version__

logger = logging.getLogger(__name__)

MODEL_FORMAT = "fbnas-block-latency-model"
MODEL_VERSION = 1
FEATURES_VERSION = 1
"""Bumped whenever a feature's definition changes: a file of another one is refused."""

NUMERIC_FEATURES: tuple[str, ...] = (
    "batch", "in_channels", "hidden_channels", "out_channels", "in_h", "in_w", "out_h",
    "out_w", "stride", "kernel", "groups", "depthwise", "se", "residual", "act_relu",
    "act_hswish", "act_swish", "act_other", "macs", "macs_dense", "macs_pointwise",
    "macs_depthwise", "params", "bytes", "layers", "convs",
)
"""The numeric features of a block, in the order the regressors see them."""

COST_FEATURES: tuple[str, ...] = ("layers", "macs_dense", "macs_pointwise", "macs_depthwise",
                                  "bytes", "se")
"""What the linear part of a model reads: time = sum of per-unit costs (per layer, per
MAC of each conv kind, per byte moved, per SE), all non-negative."""

MIN_TRAINING_BLOCKS = 8
HEAD_FAMILY_PREFIX = "head:"
"""Family of a head's features: ``head:<op>`` (``head:cls_head``)."""


class BlockModelError(FbnasError, ValueError):
    """A block latency model file that cannot be used, or a block it cannot describe."""


# --------------------------------------------------------------------------- features


def op_family(op: str) -> str:
    """The block family of a registered op (``ir_k5_se`` -> ``irf``): the function that
    resolves it, so every named variant of a family shares one; users' own ops (registered
    with a factory) are a family each."""
    resolve = BLOCKS.get(op).resolve
    name = getattr(resolve, "__qualname__", type(resolve).__name__).split(".")[0].lstrip("_")
    if name.startswith("register_block"):
        return op
    return name.removeprefix("resolve_")


def parse_block_key(key: str) -> tuple[str, int, tuple[int, int], int, int, dict[str, Any]]:
    """``op|CxHxW|out|s<stride>|options`` -> (op, in_channels, (h, w), out, stride, options).

    Options are ``k=v`` pairs with JSON values (which may hold commas themselves).

    Raises:
        BlockModelError: not a block key of a registered op (the classifier head's key,
            for one, is not: the model answers blocks).
    """
    parts = key.split("|", 4)
    if len(parts) != 5:
        raise BlockModelError(f"{key!r} is not a block key (op|CxHxW|out|s<stride>|options)")
    op, shape, out, stride, text = parts
    try:
        c, h, w = (int(v) for v in shape.split("x"))
        out_channels = int(out)
        if not stride.startswith("s"):
            raise ValueError(stride)
        stride_value = int(stride[1:])
        options = _parse_options(text)
    except ValueError as exc:
        raise BlockModelError(f"{key!r} is not a block key ({exc})") from None
    if op not in BLOCKS:
        raise BlockModelError(f"{key!r}: op {op!r} is not registered here")
    return op, c, (h, w), out_channels, stride_value, options


def _parse_options(text: str) -> dict[str, Any]:
    decoder = json.JSONDecoder()
    options: dict[str, Any] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        value, end = decoder.raw_decode(text, eq + 1)
        options[text[i:eq]] = value
        if end < len(text) and text[end] != ",":
            raise ValueError(f"unexpected {text[end]!r} in options {text!r}")
        i = end + 1
    return options


def is_head_key(key: str) -> bool:
    """Whether ``key`` names a head (its op is a registered head op, not a block op)."""
    op = key.split("|", 1)[0]
    return op in HEADS and op not in BLOCKS


def parse_head_key(key: str) -> tuple[str, int, tuple[int, int], dict[str, Any]]:
    """``op|CxHxW|required values[|other options]`` -> (op, in_channels, (h, w), options).

    The inverse of :func:`fbnas.cost.lut.head_key`: the required options are bare JSON
    values in the op's declared order (``cls_head|1984x7x7|1000``), the others ``k=v``.

    Raises:
        BlockModelError: not the key of a registered head op.
    """
    parts = key.split("|", 3)
    if len(parts) not in (3, 4) or parts[0] not in HEADS:
        raise BlockModelError(f"{key!r} is not a head key (op|CxHxW|values[|options] of a "
                              f"registered head op)")
    op, shape, values = parts[:3]
    required = HEADS.get(op).schema.required()
    try:
        c, h, w = (int(v) for v in shape.split("x"))
        decoded = _parse_values(values)
        if len(decoded) != len(required):
            raise ValueError(f"{len(decoded)} values for the required options {required}")
        options = {**dict(zip(required, decoded, strict=True)),
                   **(_parse_options(parts[3]) if len(parts) == 4 else {})}
    except ValueError as exc:
        raise BlockModelError(f"{key!r} is not a head key ({exc})") from None
    return op, c, (h, w), options


def _parse_values(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    values, i = [], 0
    while i < len(text):
        value, end = decoder.raw_decode(text, i)
        values.append(value)
        if end < len(text) and text[end] != ",":
            raise ValueError(f"unexpected {text[end]!r} in values {text!r}")
        i = end + 1
    return values


def key_module(key: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """The block or head a key names, built on the ``meta`` device, and its ``(C, H, W)``
    input."""
    if is_head_key(key):
        op, c, hw, options = parse_head_key(key)
        what = "head"
        build = HEADS.get(op).plan
        args: tuple = (c, options)
    else:
        op, c, hw, out, stride, options = parse_block_key(key)
        what = "block"
        build = BLOCKS.get(op).plan
        args = (c, out, stride, options)
    try:
        plan = build(*args)
        with torch.device("meta"):
            module = plan.build()
    except (FbnasError, TypeError, ValueError, RuntimeError) as exc:
        raise BlockModelError(f"{key!r}: the {what} cannot be built ({exc})") from None
    return module.eval(), (c, *hw)


_ACTIVATIONS = {"ReLU": "act_relu", "ReLU6": "act_relu", "HSwish": "act_hswish",
                "Hardswish": "act_hswish", "Swish": "act_swish", "SiLU": "act_swish",
                "Sigmoid": "act_other", "HSigmoid": "act_other", "Hardsigmoid": "act_other",
                "GELU": "act_other", "LeakyReLU": "act_other", "PReLU": "act_other",
                "Tanh": "act_other", "Mish": "act_other"}
"""Activation classes by name (fbnas's own ``HSwish``, ``Swish``, ``HSigmoid`` and torch's)."""
_EXTRA_OPS = {"HSwish": 3, "HSigmoid": 2, "Swish": 1}
"""Element-wise ops a composite activation runs besides its child (``x * relu6(x + 3) / 6``:
add, mul, div): each one a dispatch and a pass over the tensor."""


def block_features(module: nn.Module, input_shape: Sequence[int], op: str,
                   family: str | None = None) -> dict[str, Any]:
    """The features of a block (``family`` and :data:`NUMERIC_FEATURES`) on an
    ``(N, C, H, W)`` input, from one forward pass on the ``meta`` device.

    ``family`` defaults to the block op's (:func:`op_family`); a head passes its own
    (``head:cls_head``). An output without spatial dims (a head's ``(N, K)``) counts as
    1x1 and stride 1: the head's pooling is in its MACs and bytes, not in a stride.
    """
    inside_activation = {id(m) for a in module.modules() if type(a).__name__ in _EXTRA_OPS
                         for m in a.modules() if m is not a}
    calls: list[tuple[nn.Module, int, int]] = []
    handles = [m.register_forward_hook(
        lambda mod, args, output: calls.append(
            (mod, _numel(args[0]) if args else 0, _numel(output))))
        for m in module.modules()
        if not list(m.children()) or type(m).__name__ in _EXTRA_OPS]
    meta = module.to("meta") if any(p.device.type != "meta" for p in module.parameters()) \
        else module
    # Leaf activations keep their input's shape, and only shapes are read: they pass it
    # through (their hooks still see the same numel). Why: on the meta device clamp & co.
    # run as Python decompositions, ~45 % of a block's feature time (DMasking prices
    # tens of thousands of blocks); the features are the same (test_block_model).
    passed = [m for m in meta.modules() if type(m).__name__ in _ACTIVATIONS
              and not list(m.children()) and "forward" not in m.__dict__]
    for m in passed:
        m.forward = _pass_through
    try:
        with torch.inference_mode():
            output = meta(torch.zeros(*input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
        for m in passed:
            del m.forward
    n, c, h, w = (int(v) for v in input_shape)
    f: dict[str, Any] = dict.fromkeys(NUMERIC_FEATURES, 0.0)
    f.update(batch=n, in_channels=c, in_h=h, in_w=w, groups=1, kernel=0)
    out_shape = tuple(output.shape)
    f.update(out_channels=out_shape[1], out_h=out_shape[2] if len(out_shape) > 2 else 1,
             out_w=out_shape[3] if len(out_shape) > 3 else 1)
    f["stride"] = max(1, round(h / f["out_h"])) if f["out_h"] and len(out_shape) > 2 else 1
    f["residual"] = float(out_shape == tuple(input_shape))
    hidden = max(c, out_shape[1])
    for mod, n_in, n_out in calls:
        name = type(mod).__name__
        if name in _EXTRA_OPS:  # the composite's own element-wise ops (its child is a leaf)
            f["layers"] += _EXTRA_OPS[name]
            f["bytes"] += 4 * 2 * n_out * _EXTRA_OPS[name]
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        if name not in _EXTRA_OPS:
            f["layers"] += 1
            f["params"] += params
            f["bytes"] += 4 * (n_in + n_out + params)
        if name in _ACTIVATIONS and id(mod) not in inside_activation:
            f[_ACTIVATIONS[name]] += 1
        if isinstance(mod, nn.modules.conv._ConvNd):
            k = math.prod(mod.kernel_size)
            macs = n_out * (mod.in_channels // mod.groups) * k
            f["convs"] += 1
            f["macs"] += macs
            f["kernel"] = max(f["kernel"], mod.kernel_size[0])
            hidden = max(hidden, mod.out_channels)
            if mod.groups > 1 and mod.groups == mod.in_channels:
                f["depthwise"] = 1.0
                f["macs_depthwise"] += macs
            elif k == 1:
                f["macs_pointwise"] += macs
                f["groups"] = max(f["groups"], mod.groups)
            else:
                f["macs_dense"] += macs
                f["groups"] = max(f["groups"], mod.groups)
        elif isinstance(mod, nn.Linear):
            f["macs"] += n_out * mod.in_features
            f["macs_pointwise"] += n_out * mod.in_features
    f["hidden_channels"] = hidden
    f["se"] = float(sum(1 for m in module.modules()
                        if "SE" in type(m).__name__ or "Squeeze" in type(m).__name__))
    f = {k: float(v) for k, v in f.items()}
    f["family"] = family if family is not None else op_family(op)
    return f


def _pass_through(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


def _numel(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else 0


@functools.lru_cache(maxsize=65536)
def _cached_key_features(key: str, batch: int, registry_versions: tuple[int, int]
                         ) -> FrozenKwargs:
    module, chw = key_module(key)
    op = key.split("|", 1)[0]
    family = HEAD_FAMILY_PREFIX + op if is_head_key(key) else None
    return FrozenKwargs(block_features(module, (batch, *chw), op, family))


def key_features(key: str, batch: int = 1) -> dict[str, Any]:
    """The features of the block or head a table key names (memoised per registry state)."""
    return dict(_cached_key_features(key, batch, (BLOCKS.version, HEADS.version)))


def is_head_family(family: str) -> bool:
    """Whether a features' ``family`` is a head's (``head:cls_head``)."""
    return family.startswith(HEAD_FAMILY_PREFIX)


# --------------------------------------------------------------------------- regressors


@dataclass(frozen=True)
class Candidate:
    """A regressor the model may use: a name, its scikit-learn hyperparameters, and whether
    it predicts on top of the linear cost model (the ratio to it) or alone."""

    name: str
    estimator: str
    params: Mapping[str, Any]
    on_linear: bool = False


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("linear", "linear", {}),
    Candidate("forest", "RandomForestRegressor",
              {"n_estimators": 300, "max_features": 0.5, "min_samples_leaf": 1,
               "random_state": 0, "n_jobs": 1}),
    Candidate("boosting", "GradientBoostingRegressor",
              {"n_estimators": 400, "learning_rate": 0.05, "max_depth": 3, "subsample": 1.0,
               "random_state": 0}),
    Candidate("linear+boosting", "GradientBoostingRegressor",
              {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "subsample": 1.0,
               "random_state": 0}, on_linear=True),
)
"""What :meth:`BlockLatencyModel.fit` cross-validates. Trees alone cannot extrapolate
(a block twice as wide as any seen gets the widest one's time), the linear cost model
alone misses the non-linear effects (caches, vector widths); the residual ratio on top of
the linear model keeps the linear model's trend with the trees' corrections."""


def _estimator(candidate: Candidate) -> Any:
    from sklearn import ensemble

    return getattr(ensemble, candidate.estimator)(**candidate.params)


class _Fitted:
    """One candidate fitted on a design: predicts ms for feature rows."""

    def __init__(self, candidate: Candidate, families: Sequence[str]) -> None:
        self.candidate = candidate
        self.families = list(families)
        self.linear: Any = None
        self.trees: Any = None

    def _matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        numeric = np.log1p(np.array([[r[k] for k in NUMERIC_FEATURES] for r in rows], float))
        onehot = np.array([[float(r["family"] == f) for f in self.families] for r in rows],
                          float).reshape(len(rows), len(self.families))
        return np.hstack([numeric, onehot])

    @staticmethod
    def _costs(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array([[r[k] for k in COST_FEATURES] for r in rows], float)

    def _linear_ms(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.maximum(self.linear.predict(self._costs(rows)), 1e-6)

    def fit(self, rows: Sequence[Mapping[str, Any]], ms: np.ndarray) -> _Fitted:
        from sklearn.linear_model import LinearRegression

        if self.candidate.estimator == "linear" or self.candidate.on_linear:
            # relative error: weight 1/ms^2, so small blocks count as much as large ones
            self.linear = LinearRegression(positive=True).fit(self._costs(rows), ms,
                                                              sample_weight=1.0 / ms ** 2)
        if self.candidate.estimator == "linear":
            return self
        target = np.log(ms)
        if self.candidate.on_linear:
            target = target - np.log(self._linear_ms(rows))
        self.trees = _estimator(self.candidate).fit(self._matrix(rows), target)
        return self

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.candidate.estimator == "linear":
            return self._linear_ms(rows)
        out = np.exp(self.trees.predict(self._matrix(rows)))
        if self.candidate.on_linear:
            out = out * self._linear_ms(rows)
        return out


def _cv_error(candidate: Candidate, rows: Sequence[Mapping[str, Any]], ms: np.ndarray,
              folds: int, seed: int) -> float:
    """Mean relative error of ``candidate`` over ``folds``-fold cross-validation."""
    from sklearn.model_selection import KFold

    errors = np.zeros(len(rows))
    splitter = KFold(n_splits=min(folds, len(rows)), shuffle=True, random_state=seed)
    families = sorted({r["family"] for r in rows})
    for train, test in splitter.split(np.arange(len(rows))):
        fitted = _Fitted(candidate, families).fit([rows[i] for i in train], ms[train])
        predicted = fitted.predict([rows[i] for i in test])
        errors[test] = np.abs(predicted - ms[test]) / ms[test]
    return float(errors.mean())


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class BlockPrediction:
    """A block's predicted latency and the features that lie outside the training ranges
    (``in_h=448 (trained 7-224)``): there the model extrapolates and is not to be trusted."""

    ms: float
    extrapolated: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingBlock:
    """One measured block the model learns from."""

    key: str
    features: Mapping[str, Any]
    ms: float


def library_versions() -> dict[str, str]:
    """The versions a model's refit depends on."""
    import scipy
    import sklearn

    return {"fbnas": __version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


@dataclass
class BlockLatencyModel:
    """``features of a block -> latency (ms)`` for one device, backend and batch size.

    Attributes:
        device: where the training blocks were measured (the table's device).
        batch: the batch size of the training blocks.
        candidate: the chosen regressor (name, hyperparameters).
        blocks: the training set.
        cv_errors: the cross-validated mean relative error of every candidate tried.
        versions: the library versions at fit time (:func:`library_versions`).
        reference_ms: the table's reference speed the latencies are expressed at.
        check_ms: predictions on the first training blocks at fit time; a refit that does
            not reproduce them warns (another scikit-learn may fit differently).
    """

    device: DeviceInfo
    batch: int
    candidate: Candidate
    blocks: tuple[TrainingBlock, ...]
    cv_errors: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    reference_ms: float | None = None
    check_ms: tuple[float, ...] = ()
    _fitted: _Fitted | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, blocks: Sequence[TrainingBlock], device: DeviceInfo, batch: int = 1,
            candidates: Sequence[Candidate] = CANDIDATES, folds: int = 5, seed: int = 0,
            reference_ms: float | None = None) -> BlockLatencyModel:
        """Cross-validates ``candidates`` on ``blocks`` and fits the most accurate one.

        Raises:
            BlockModelError: fewer than ``MIN_TRAINING_BLOCKS`` blocks.
        """
        if len(blocks) < MIN_TRAINING_BLOCKS:
            raise BlockModelError(f"a block latency model needs at least "
                                  f"{MIN_TRAINING_BLOCKS} measured blocks, got {len(blocks)}")
        rows = [b.features for b in blocks]
        ms = np.array([b.ms for b in blocks], float)
        errors = {c.name: _cv_error(c, rows, ms, folds, seed) for c in candidates}
        best = min(candidates, key=lambda c: errors[c.name])
        logger.info("block latency model: %s chosen (cross-validated mean error %s)",
                    best.name, ", ".join(f"{k} {v:.1%}" for k, v in errors.items()))
        model = cls(device, batch, best, tuple(blocks), errors, reference_ms=reference_ms)
        model._refit()
        model.check_ms = tuple(float(v) for v in model._fitted.predict(rows[:8]))
        return model

    def _refit(self) -> None:
        rows = [b.features for b in self.blocks]
        ms = np.array([b.ms for b in self.blocks], float)
        self._fitted = _Fitted(self.candidate, sorted({r["family"] for r in rows})).fit(rows, ms)

    # ------------------------------------------------------------------ predicting

    @functools.cached_property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """The training range (min, max) of every numeric feature over the training blocks
        (heads left out when there are blocks: they are checked against
        :attr:`head_ranges`)."""
        blocks = [b for b in self.blocks if not is_head_family(b.features["family"])]
        return _feature_ranges(blocks or self.blocks)

    @functools.cached_property
    def head_ranges(self) -> dict[str, tuple[float, float]] | None:
        """The training range of every numeric feature over the training heads; ``None``
        for a model trained without heads (one that then answers no head key)."""
        heads = [b for b in self.blocks if is_head_family(b.features["family"])]
        return _feature_ranges(heads) if heads else None

    @functools.cached_property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted({b.features["family"] for b in self.blocks}))

    @property
    def has_heads(self) -> bool:
        """Whether the training set holds heads (models fitted before heads were sampled
        do not, and answer no head key)."""
        return self.head_ranges is not None

    def extrapolation(self, features: Mapping[str, Any]) -> tuple[str, ...]:
        """The features of a block (or head) outside the training ranges of its kind,
        described."""
        out = []
        if features["family"] not in self.families:
            out.append(f"family {features['family']!r} (trained: {', '.join(self.families)})")
        ranges = self.ranges
        if is_head_family(features["family"]) and self.head_ranges is not None:
            ranges = self.head_ranges
        for name, (low, high) in ranges.items():
            value = features[name]
            if not low - 1e-9 * abs(low) <= value <= high + 1e-9 * abs(high):
                out.append(f"{name}={value:g} (trained {low:g}-{high:g})")
        return tuple(out)

    def predict_features(self, features: Mapping[str, Any]) -> BlockPrediction:
        """The latency (ms) of a block with these features.

        Raises:
            BlockModelError: a head's features, and the model was trained without heads.
        """
        if is_head_family(features["family"]) and not self.has_heads:
            op = features["family"].removeprefix(HEAD_FAMILY_PREFIX)
            raise BlockModelError(f"the block latency model was fitted without heads, so it "
                                  f"does not answer the {op!r} head (rebuild its sample with "
                                  f"--model-sample, which now draws heads, and refit)")
        if self._fitted is None:
            self._refit()
        ms = float(self._fitted.predict([features])[0])
        return BlockPrediction(ms, self.extrapolation(features))

    def predict_many(self, features: Sequence[Mapping[str, Any]]
                     ) -> list[BlockPrediction | None]:
        """:meth:`predict_features` of many blocks in one batch through the regressor.

        Why: a regressor call costs far more than a row (a tree ensemble's ``predict``
        has a fixed overhead of ~1 ms), and pricing a DMasking supernet asks for tens of
        thousands of blocks at once. A head's row, when the model was trained without
        heads, answers ``None`` instead of raising.
        """
        answerable = [i for i, f in enumerate(features)
                      if not is_head_family(f["family"]) or self.has_heads]
        out: list[BlockPrediction | None] = [None] * len(features)
        if not answerable:
            return out
        if self._fitted is None:
            self._refit()
        rows = [features[i] for i in answerable]
        for i, ms in zip(answerable, self._fitted.predict(rows), strict=True):
            out[i] = BlockPrediction(float(ms), self.extrapolation(features[i]))
        return out

    def predict_key(self, key: str) -> BlockPrediction:
        """The latency (ms) of the block a table key names, at the model's batch size.

        Raises:
            BlockModelError: the key is no block or head of a registered op (a removed op),
                or a head's and the model was trained without heads.
        """
        return self.predict_features(key_features(key, self.batch))

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT, "version": MODEL_VERSION,
            "features_version": FEATURES_VERSION, "unit": "ms",
            "device": self.device.to_dict(), "batch": self.batch,
            "regressor": {"name": self.candidate.name, "estimator": self.candidate.estimator,
                          "params": dict(self.candidate.params),
                          "on_linear": self.candidate.on_linear},
            "cv_errors": self.cv_errors, "versions": self.versions,
            "reference_ms": self.reference_ms, "check_ms": list(self.check_ms),
            "features": ["family", *NUMERIC_FEATURES],
            "blocks": [{"key": b.key, "ms": b.ms,
                        "features": [b.features["family"],
                                     *(b.features[k] for k in NUMERIC_FEATURES)]}
                       for b in self.blocks],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Writes the model as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, expect: DeviceInfo | None = None,
             batch: int | None = None) -> BlockLatencyModel:
        """Reads and refits a model; warns naming what differs from ``expect`` (the table's
        device: cpu, backend, threads, library versions), from this machine's libraries,
        and if the refit does not reproduce the saved predictions.

        Raises:
            BlockModelError: missing, corrupted, not a model file, another features
                version, or another batch size than ``batch``.
        """
        path = Path(path)
        data = read_json_file(path, "block latency model", BlockModelError,
                              "refit it (fbnas lut fit-model)")
        model = cls.from_dict(data, str(path))
        if batch is not None and model.batch != batch:
            raise BlockModelError(f"block latency model {str(path)!r} was fitted on batch "
                                  f"{model.batch} blocks, the table holds batch {batch}")
        differences = model.device.differences(expect) if expect is not None else []
        ours = library_versions()
        differences += [f"{name} {theirs} when fitted != {ours[name]} here"
                        for name, theirs in model.versions.items()
                        if name in ("fbnas", "scikit-learn") and ours.get(name) != theirs]
        if differences:
            logger.warning("block latency model %s comes from another setup: %s", path,
                           "; ".join(differences))
        model._refit()
        if model.check_ms:
            again = model._fitted.predict([b.features for b in model.blocks[:8]])
            if not np.allclose(again, model.check_ms, rtol=1e-6, atol=0):
                logger.warning("block latency model %s: the refit here does not reproduce "
                               "the saved predictions (max difference %.2g %%); refit it with "
                               "fbnas lut fit-model", path,
                               100 * float(np.max(np.abs(again / np.array(model.check_ms)
                                                         - 1))))
        return model

    @classmethod
    def from_dict(cls, data: Any, source: str = "model") -> BlockLatencyModel:
        if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
            raise BlockModelError(f"{source} is not an fbnas block latency model")
        if data.get("version") != MODEL_VERSION:
            raise BlockModelError(f"{source} has model version {data.get('version')!r}; this "
                                  f"fbnas reads version {MODEL_VERSION}")
        if (data.get("features_version") != FEATURES_VERSION
                or data.get("features") != ["family", *NUMERIC_FEATURES]):
            raise BlockModelError(f"{source} was fitted on other block features (version "
                                  f"{data.get('features_version')!r}, this fbnas computes "
                                  f"version {FEATURES_VERSION}); refit it (fbnas lut "
                                  f"fit-model)")
        try:
            reg = data["regressor"]
            known = {c.name: c for c in CANDIDATES}
            if reg["name"] not in known or known[reg["name"]].estimator != reg["estimator"]:
                raise ValueError(f"unknown regressor {reg['name']!r}")
            candidate = Candidate(reg["name"], reg["estimator"], dict(reg["params"]),
                                  bool(reg["on_linear"]))
            blocks = tuple(_training_block(raw) for raw in data["blocks"])
            model = cls(DeviceInfo(**data["device"]), int(data["batch"]), candidate, blocks,
                        {str(k): float(v) for k, v in (data.get("cv_errors") or {}).items()},
                        {str(k): str(v) for k, v in (data.get("versions") or {}).items()},
                        positive_or_none(data.get("reference_ms"), "reference_ms"),
                        tuple(float(v) for v in data.get("check_ms") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise BlockModelError(f"{source} is malformed: {exc}") from None
        if len(blocks) < MIN_TRAINING_BLOCKS:
            raise BlockModelError(f"{source} holds {len(blocks)} training blocks; a model "
                                  f"needs at least {MIN_TRAINING_BLOCKS}")
        return model


def _feature_ranges(blocks: Sequence[TrainingBlock]) -> dict[str, tuple[float, float]]:
    return {k: (min(b.features[k] for b in blocks), max(b.features[k] for b in blocks))
            for k in NUMERIC_FEATURES}


def _training_block(raw: Mapping[str, Any]) -> TrainingBlock:
    values = raw["features"]
    if len(values) != 1 + len(NUMERIC_FEATURES) or not isinstance(values[0], str):
        raise ValueError(f"block {raw.get('key')!r} has {len(values)} features, expected "
                         f"{1 + len(NUMERIC_FEATURES)}")
    numbers = [float(v) for v in values[1:]]
    ms = float(raw["ms"])
    if not all(math.isfinite(v) for v in numbers) or not (math.isfinite(ms) and ms > 0):
        raise ValueError(f"block {raw.get('key')!r} has a non-finite feature or latency")
    return TrainingBlock(str(raw["key"]), {"family": values[0],
                                           **dict(zip(NUMERIC_FEATURES, numbers, strict=True))},
                         ms)


def positive_or_none(value: Any, name: str) -> float | None:
    """``value`` as a float when it is a positive finite number, ``None`` for ``None``;
    anything else raises ``ValueError`` naming ``name`` (for the file readers)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def model_path(table_path: str | os.PathLike) -> Path:
    """Where a table's block latency model lies: ``lut.json`` -> ``lut.model.json``."""
    path = Path(table_path)
    return path.with_name(path.stem + ".model.json")
