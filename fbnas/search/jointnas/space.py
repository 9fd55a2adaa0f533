"""The joint architecture + training-recipe space of FBNetV3's JointNAS, as data.

A :class:`JointSpace` is read from a space file (YAML, ``spaces/fbnet_v3.yaml``): the
macro-architecture (input resolution, stem width, per stage its channels, kernel,
expansion, depth and SE) and the recipe (optimizer, lr, weight decay, mixup, dropout,
drop path, EMA, epochs; any :class:`~fbnas.train.config.TrainConfig` field). Every
property is a finite list of values (``[3, 5]``, or ``{range: [a, b, step]}`` as in
FBNetV3's Table 1, or ``{range: [a, b], count: n, log: true}`` for rates); a property with
one value is fixed and not a dimension.

A sample is a tuple of value indices, one per dimension (``len == dims``), hashable and
JSON-able. The space implements :class:`fbnas.search.protocols.Space` and, for the
population-speed paths of JointNAS (Sobol pools, the predictor, the vectorised cost of
:mod:`fbnas.search.jointnas.cost`), the same operations on whole ``(N, dims)`` integer
matrices: :meth:`JointSpace.decode_batch`, :meth:`JointSpace.features`.

Encoding: coordinate ``d`` is ``(index + 0.5) / n_d`` in ``[0, 1]`` (decode: ``floor(u *
n_d)``), so a uniform or Sobol point of the unit cube is a uniform sample. The predictor
reads :meth:`JointSpace.features` instead (ALGORITHMS.md §3.3): numbers normalised to
``[0, 1]`` by value, categories (the optimizer) one-hot.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from fbnas.arch.errors import ArchDefError
from fbnas.errors import ConfigError, FbnasError, did_you_mean
from fbnas.search.protocols import Frozen, clamp_to_box
from fbnas.train.config import RecipeError, TrainConfig

Part = Literal["arch", "recipe"]

SPACE_KEYS = ("name", "description", "num_classes", "basic_args", "block_options", "act",
              "resolution", "stem", "stages", "head", "recipe")
STEM_KEYS = ("channels", "stride", "kernel")
STAGE_KEYS = ("channels", "kernel", "expansion", "depth", "stride", "se")
HEAD_KEYS = ("channels", "expansion")
RECIPE_META_KEYS = ("fixed", "ema_decay_on")
RECIPE_SPECIAL = ("ema",)

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
"""The space files shipped with fbnas (``fbnet_v3``, ``jointnas_digits``)."""

DEFAULT_EMA_DECAY = 0.9998
"""``ema_decay`` of a recipe with EMA on, unless the space's ``recipe.ema_decay_on`` says."""


class JointSpaceError(ConfigError):
    """A space file or a sample that is not valid; the message names the file and key."""


# --------------------------------------------------------------------------- properties


@dataclass(frozen=True)
class Prop:
    """One property of the space: its name, where it goes, its values.

    Attributes:
        name: ``resolution``, ``stem.channels``, ``stage3.kernel``, ``recipe.lr``...
        part: ``arch`` or ``recipe`` (the predictor feeds them in different places).
        values: the choices (numbers, bools or names), in order.
    """

    name: str
    part: Part
    values: tuple[Any, ...]

    @property
    def categorical(self) -> bool:
        """Names (an optimizer) are one-hot in the predictor's features; numbers are not."""
        return any(isinstance(v, str) for v in self.values)

    def feature_table(self) -> np.ndarray:
        """``(len(values), width)``: the feature columns of each value."""
        n = len(self.values)
        if self.categorical:
            return np.eye(n, dtype=np.float32)
        numbers = np.array([float(v) for v in self.values], dtype=np.float64)
        if all(isinstance(v, float) and v > 0 for v in self.values) and \
                numbers.max() / numbers.min() > 4:
            numbers = np.log(numbers)  # rates spanning decades: equal steps in log
        span = numbers.max() - numbers.min()
        return ((numbers - numbers.min()) / span).astype(np.float32)[:, None]


def _parse_values(raw: Any, where: str) -> tuple[Any, ...]:
    """A property's values: a scalar (fixed), a list, or ``{range: [a, b(, step)], ...}``."""
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - {"range", "count", "log"})
        if unknown:
            raise JointSpaceError(f"{where}: unknown key {unknown[0]!r} (a range takes "
                                  f"'range', 'count', 'log')")
        if "range" not in raw:
            raise JointSpaceError(f"{where}: a mapping must give 'range: [low, high, step]'")
        bounds = raw["range"]
        if not isinstance(bounds, list) or len(bounds) not in (2, 3) or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
            raise JointSpaceError(f"{where}: range must be [low, high] or [low, high, step] "
                                  f"numbers, got {bounds!r}")
        low, high = bounds[0], bounds[1]
        if high < low:
            raise JointSpaceError(f"{where}: range [{low}, {high}] has high < low")
        if "count" in raw:
            count = raw["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise JointSpaceError(f"{where}: count must be an int >= 1, got {count!r}")
            if len(bounds) == 3:
                raise JointSpaceError(f"{where}: give either a step or a count, not both")
            if raw.get("log"):
                if low <= 0:
                    raise JointSpaceError(f"{where}: a log range needs low > 0, got {low}")
                grid = np.geomspace(low, high, count) if count > 1 else np.array([low])
            else:
                grid = np.linspace(low, high, count) if count > 1 else np.array([low])
            return tuple(float(f"{v:.6g}") for v in grid)
        step = bounds[2] if len(bounds) == 3 else 1
        if not step > 0:
            raise JointSpaceError(f"{where}: the step must be > 0, got {step}")
        count = int(math.floor((high - low) / step + 1e-9)) + 1
        values = [low + i * step for i in range(count)]
        if all(isinstance(b, int) for b in bounds):
            return tuple(int(v) for v in values)
        return tuple(float(f"{v:.6g}") for v in values)
    if isinstance(raw, list):
        if not raw:
            raise JointSpaceError(f"{where}: an empty list of values")
        if len(set(map(repr, raw))) != len(raw):
            raise JointSpaceError(f"{where}: repeated values in {raw!r}")
        return tuple(raw)
    return (raw,)


def _check_kind(values: Sequence[Any], kind: type | tuple[type, ...], where: str,
                what: str) -> None:
    for value in values:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple)
                                                    else (kind,)):
            raise JointSpaceError(f"{where}: {what}, got {value!r}")
        if not isinstance(value, kind):
            raise JointSpaceError(f"{where}: {what}, got {value!r}")


def _mapping(raw: Any, where: str, keys: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise JointSpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in keys:
            raise JointSpaceError(f"{where}: unknown key {key!r}{did_you_mean(key, keys)}")
    return raw


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class StageLayout:
    """Where a stage's properties sit in the property list (and its fixed stride)."""

    channels: int
    kernel: int
    expansion: int
    depth: int
    se: int
    stride: int


class JointSpace:
    """An architecture + recipe space (the :class:`~fbnas.search.protocols.Space` of
    JointNAS); build it with :func:`load_joint_space` or :meth:`from_dict`.

    Attributes:
        name: the space's name.
        props: every property, fixed ones included, in file order (resolution, stem,
            stages, head, recipe).
        variable: indices into ``props`` of the properties that are dimensions.
        stages: per stage, the positions of its properties in ``props``.
        num_classes: classifier outputs the cost of a candidate counts.
    """

    def __init__(self, data: Mapping[str, Any], source: str = "space") -> None:
        data = _mapping(data, source, SPACE_KEYS)
        self.source = source
        self.name = str(data.get("name", Path(source).stem))
        self.description = str(data.get("description", ""))
        self.num_classes = int(data.get("num_classes", 1000))
        self.basic_args = dict(data.get("basic_args") or {"width_divisor": 8})
        self.block_options = dict(data.get("block_options") or {})
        self.act = str(data.get("act", "hs"))
        props: list[Prop] = []

        def add(name: str, part: Part, raw: Any, kind: type | tuple[type, ...],
                what: str) -> int:
            values = _parse_values(raw, f"{source}: {name}")
            _check_kind(values, kind, f"{source}: {name}", what)
            props.append(Prop(name, part, values))
            return len(props) - 1

        if "resolution" not in data or "stages" not in data:
            raise JointSpaceError(f"{source}: a space needs 'resolution' and 'stages'")
        self.res_pos = add("resolution", "arch", data["resolution"], int,
                           "resolutions are ints")
        stem = _mapping(data.get("stem") or {"channels": 16}, f"{source}: stem", STEM_KEYS)
        self.stem_pos = add("stem.channels", "arch", stem.get("channels", 16), int,
                            "channels are ints")
        self.stem_stride = int(stem.get("stride", 2))
        self.stem_kernel = int(stem.get("kernel", 3))
        stages = data["stages"]
        if not isinstance(stages, list) or not stages:
            raise JointSpaceError(f"{source}: stages must be a non-empty list")
        self.stages: list[StageLayout] = []
        for i, raw in enumerate(stages, start=1):
            where = f"{source}: stages[{i - 1}]"
            raw = _mapping(raw, where, STAGE_KEYS)
            if "channels" not in raw:
                raise JointSpaceError(f"{where}: a stage needs 'channels'")
            stride = raw.get("stride", 1)
            if stride not in (1, 2):
                raise JointSpaceError(f"{where}: stride must be 1 or 2, got {stride!r}")
            self.stages.append(StageLayout(
                channels=add(f"stage{i}.channels", "arch", raw["channels"], int,
                             "channels are ints"),
                kernel=add(f"stage{i}.kernel", "arch", raw.get("kernel", 3), int,
                           "kernels are ints"),
                expansion=add(f"stage{i}.expansion", "arch", raw.get("expansion", 1),
                              (int, float), "expansions are numbers"),
                depth=add(f"stage{i}.depth", "arch", raw.get("depth", 1), int,
                          "depths are ints"),
                se=add(f"stage{i}.se", "arch", raw.get("se", False), bool,
                       "se is true or false"),
                stride=int(stride)))
        head = _mapping(data.get("head") or {}, f"{source}: head", HEAD_KEYS)
        self.head_channels = head.get("channels")
        self.head_expansion = head.get("expansion", 6)
        recipe = _mapping(data.get("recipe") or {}, f"{source}: recipe",
                          [*RECIPE_META_KEYS, *RECIPE_SPECIAL,
                           *TrainConfig.__dataclass_fields__])
        self.recipe_fixed = dict(recipe.get("fixed") or {})
        self.ema_decay_on = float(recipe.get("ema_decay_on", DEFAULT_EMA_DECAY))
        self.recipe_pos: dict[str, int] = {}
        for key, raw in recipe.items():
            if key in RECIPE_META_KEYS:
                continue
            if key in ("resolution",):
                raise JointSpaceError(f"{source}: recipe.resolution: the input resolution "
                                      f"is the space's top-level 'resolution'")
            kind: type | tuple[type, ...] = bool if key == "ema" else (int, float, str, bool)
            self.recipe_pos[key] = add(f"recipe.{key}", "recipe", raw, kind,
                                       "ema is true or false")
        self.props = tuple(props)
        self.variable = tuple(i for i, p in enumerate(props) if len(p.values) > 1)
        self._sizes = np.array([len(self.props[i].values) for i in self.variable],
                               dtype=np.int64)
        self._tables = [self.props[i].feature_table() for i in self.variable]
        self._arch_dims = [d for d, i in enumerate(self.variable)
                           if self.props[i].part == "arch"]
        self._recipe_dims = [d for d, i in enumerate(self.variable)
                             if self.props[i].part == "recipe"]
        self._check_values()

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "space") -> JointSpace:
        return cls(data, source)

    def _check_values(self) -> None:
        """Every value of every property must be accepted by the builder or the recipe:
        each is tried in the smallest candidate, so a bad range names its dimension now,
        not in the middle of a search."""
        from fbnas.cost.analytic import arch_cost

        base = [0] * len(self.props)
        try:
            self.recipe_of_full(base)
            arch_cost(self.arch_def_of_full(base), num_classes=self.num_classes)
        except (FbnasError, ValueError) as exc:
            raise JointSpaceError(f"{self.source}: the space's first candidate is not "
                                  f"valid: {exc}") from None
        for pos, prop in enumerate(self.props):
            for index, value in enumerate(prop.values):
                full = list(base)
                full[pos] = index
                try:
                    if prop.part == "recipe":
                        self.recipe_of_full(full)
                    else:
                        arch_cost(self.arch_def_of_full(full), num_classes=self.num_classes)
                except (FbnasError, ValueError) as exc:
                    reason = exc.args[0] if exc.args else exc
                    raise JointSpaceError(f"{self.source}: {prop.name}: value {value!r} is "
                                          f"not accepted: {reason}") from None

    # ----------------------------------------------------------------- protocol

    @property
    def dims(self) -> int:
        return len(self.variable)

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        return ((0.0, 1.0),) * self.dims

    @property
    def dim_names(self) -> tuple[str, ...]:
        return tuple(self.props[i].name for i in self.variable)

    @property
    def sizes(self) -> np.ndarray:
        """Values per dimension, ``(dims,)``."""
        return self._sizes

    def size(self) -> int:
        """Number of distinct (architecture, recipe) pairs."""
        return int(np.prod(self._sizes.astype(object))) if self.dims else 1

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randrange(int(n)) for n in self._sizes)

    def mutate(self, sample: tuple[int, ...], rng: random.Random,
               prob: float) -> tuple[int, ...]:
        """Each dimension redrawn with probability ``prob`` (to a different value)."""
        out = list(sample)
        for d, n in enumerate(self._sizes):
            if rng.random() < prob:
                new = rng.randrange(int(n) - 1)
                out[d] = new + (new >= out[d])
        return tuple(out)

    def crossover(self, a: tuple[int, ...], b: tuple[int, ...],
                  rng: random.Random) -> tuple[int, ...]:
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))

    def check(self, sample: Sequence[int]) -> None:
        if len(sample) != self.dims:
            raise JointSpaceError(f"space {self.name!r}: a sample has {self.dims} "
                                  f"dimensions, got {len(sample)}")
        for d, (index, n) in enumerate(zip(sample, self._sizes, strict=True)):
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                    or not 0 <= index < n:
                raise JointSpaceError(f"space {self.name!r}: {self.dim_names[d]}: index "
                                      f"{index!r} is not in [0, {n})")

    def key(self, sample: Sequence[int]) -> Hashable:
        return tuple(int(i) for i in sample)

    def encode(self, sample: Sequence[int]) -> list[float]:
        return [(int(i) + 0.5) / int(n) for i, n in zip(sample, self._sizes, strict=True)]

    def decode(self, vector: Sequence[float]) -> tuple[int, ...]:
        values = clamp_to_box(vector, self.bounds, f"space {self.name!r}")
        return tuple(int(i) for i in self.decode_batch(np.array([values]))[0])

    def freeze(self, sample: Sequence[int]) -> Frozen:
        self.check(sample)
        full = self.full_indices(sample)
        return Frozen(self.arch_def_of_full(full), self.recipe_of_full(full))

    # ----------------------------------------------------------------- populations

    def decode_batch(self, points: np.ndarray) -> np.ndarray:
        """``(N, dims)`` points of the unit cube -> ``(N, dims)`` int64 samples."""
        points = np.clip(np.asarray(points, dtype=np.float64), 0.0, 1.0)
        return np.minimum((points * self._sizes).astype(np.int64), self._sizes - 1)

    def sample_batch(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform samples as an ``(n, dims)`` int64 matrix."""
        return rng.integers(0, self._sizes, size=(n, self.dims), dtype=np.int64)

    def features(self, samples: np.ndarray, part: Part | None = None) -> np.ndarray:
        """The predictor's input of ``(N, dims)`` samples: ``(N, F)`` float32.

        Args:
            part: ``"arch"`` or ``"recipe"`` columns only (None: both, arch first).
        """
        samples = np.asarray(samples, dtype=np.int64).reshape(-1, self.dims)
        dims = (self._arch_dims + self._recipe_dims if part is None else
                self._arch_dims if part == "arch" else self._recipe_dims)
        if not dims:
            return np.zeros((len(samples), 0), dtype=np.float32)
        return np.concatenate([self._tables[d][samples[:, d]] for d in dims], axis=1)

    def feature_width(self, part: Part) -> int:
        dims = self._arch_dims if part == "arch" else self._recipe_dims
        return int(sum(self._tables[d].shape[1] for d in dims))

    def full_indices(self, sample: Sequence[int]) -> list[int]:
        """Index of every property (fixed ones 0) of a sample."""
        full = [0] * len(self.props)
        for pos, index in zip(self.variable, sample, strict=True):
            full[pos] = int(index)
        return full

    def full_batch(self, samples: np.ndarray) -> np.ndarray:
        """``(N, len(props))``: :meth:`full_indices` of a whole population."""
        samples = np.asarray(samples, dtype=np.int64).reshape(-1, self.dims)
        full = np.zeros((len(samples), len(self.props)), dtype=np.int64)
        if self.dims:
            full[:, list(self.variable)] = samples
        return full

    def values(self, sample: Sequence[int]) -> dict[str, Any]:
        """Every property's value, by name (for reports)."""
        full = self.full_indices(sample)
        return {p.name: p.values[i] for p, i in zip(self.props, full, strict=True)}

    def arch_dims(self) -> list[int]:
        """Positions (in a sample) of the architecture dimensions."""
        return list(self._arch_dims)

    def recipe_dims(self) -> list[int]:
        return list(self._recipe_dims)

    # ----------------------------------------------------------------- freezing

    def _value(self, full: Sequence[int], pos: int) -> Any:
        return self.props[pos].values[full[pos]]

    def block_op(self, kernel: int, se: bool) -> str:
        """The registry op of an inverted-residual block (``ir_k5_sehsig_hs``)."""
        return f"ir_k{kernel}{'_sehsig' if se else ''}{'_' + self.act if self.act else ''}"

    def arch_def_of_full(self, full: Sequence[int]) -> dict[str, Any]:
        """The arch def of a full index list (see :meth:`full_indices`)."""
        act = f"_{self.act}" if self.act else ""
        blocks: list[list[list[Any]]] = [[[f"conv_k{self.stem_kernel}{act}",
                                           self._value(full, self.stem_pos),
                                           self.stem_stride, 1]]]
        for stage in self.stages:
            channels = self._value(full, stage.channels)
            depth = self._value(full, stage.depth)
            op = self.block_op(self._value(full, stage.kernel), self._value(full, stage.se))
            options = {"expansion": self._value(full, stage.expansion)}
            first: list[Any] = [op, channels, stage.stride, 1, options]
            if self.block_options:
                first.append(dict(self.block_options))
            rows = [first]
            if depth > 1:
                rows.append([op, channels, 1, depth - 1, *first[4:]])
            blocks.append(rows)
        if self.head_channels is not None:
            blocks.append([[f"ir_pool{act}", self.head_channels, 1, 1,
                            {"expansion": self.head_expansion}]])
        return {"input_size": self._value(full, self.res_pos),
                "basic_args": dict(self.basic_args), "blocks": blocks}

    def recipe_of_full(self, full: Sequence[int]) -> TrainConfig:
        """The training recipe of a full index list: the fixed part, then the searched
        values (``ema`` sets ``ema_decay``), then the resolution."""
        data = {**self.recipe_fixed}
        for key, pos in self.recipe_pos.items():
            value = self._value(full, pos)
            if key == "ema":
                data["ema_decay"] = self.ema_decay_on if value else 0.0
            else:
                data[key] = value
        data["resolution"] = self._value(full, self.res_pos)
        try:
            return TrainConfig.from_dict(data, f"{self.source}: recipe")
        except RecipeError as exc:
            raise JointSpaceError(str(exc)) from None

    def sample_of(self, arch_def: Mapping[str, Any], recipe: Mapping[str, Any]
                  ) -> tuple[int, ...]:
        """The sample that freezes to ``arch_def`` and ``recipe`` (a stored candidate's
        job read back into the space), so results trained elsewhere can fit a predictor.

        Raises:
            JointSpaceError: the pair is not a candidate of this space (naming the first
                dimension whose value is not among its values).
        """
        full = [0] * len(self.props)

        def put(pos: int, value: Any) -> None:
            prop = self.props[pos]
            for index, option in enumerate(prop.values):
                if option == value or (isinstance(option, float) and isinstance(value, float)
                                       and math.isclose(option, value, rel_tol=1e-9)):
                    full[pos] = index
                    return
            raise JointSpaceError(f"space {self.name!r}: {prop.name} {value!r} is not one of "
                                  f"{list(prop.values)}")

        try:
            blocks = arch_def["blocks"]
            put(self.res_pos, arch_def["input_size"])
            put(self.stem_pos, blocks[0][0][1])
            for i, stage in enumerate(self.stages, start=1):
                rows = blocks[i]
                op = rows[0][0]
                put(stage.channels, rows[0][1])
                put(stage.kernel, int(op.split("_")[1][1:]))
                put(stage.se, "_sehsig" in op)
                put(stage.expansion, rows[0][4]["expansion"])
                put(stage.depth, sum(int(row[3]) for row in rows))
            for key, pos in self.recipe_pos.items():
                put(pos, recipe["ema_decay"] > 0 if key == "ema" else recipe[key])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise JointSpaceError(f"space {self.name!r}: not a candidate of this space "
                                  f"({type(exc).__name__}: {exc})") from None
        sample = tuple(full[pos] for pos in self.variable)
        frozen = self.freeze(sample)
        if frozen.arch_def != dict(arch_def):
            raise JointSpaceError(f"space {self.name!r}: the arch def is not one this space "
                                  f"makes")
        return sample

    def with_fixed_arch(self, arch_def: Mapping[str, Any]) -> FixedArchSpace:
        """The recipe-only space of ``arch_def`` (``--arch FILE``)."""
        return FixedArchSpace(self, arch_def)


class FixedArchSpace(JointSpace):
    """A :class:`JointSpace` with the architecture fixed to one arch def: the recipe is
    searched, and the resolution if the space has more than one (it is the recipe's)."""

    def __init__(self, space: JointSpace, arch_def: Mapping[str, Any]) -> None:  # noqa: D107
        self.__dict__.update(space.__dict__)
        self.fixed_arch = dict(arch_def)
        keep = {self.res_pos, *self.recipe_pos.values()}
        resolution = arch_def.get("input_size")
        if resolution is not None:
            keep.discard(self.res_pos)
        self.variable = tuple(i for i in space.variable if i in keep)
        self._fixed_resolution = resolution
        self._sizes = np.array([len(self.props[i].values) for i in self.variable],
                               dtype=np.int64)
        self._tables = [self.props[i].feature_table() for i in self.variable]
        self._arch_dims = [d for d, i in enumerate(self.variable)
                           if self.props[i].part == "arch"]
        self._recipe_dims = [d for d, i in enumerate(self.variable)
                             if self.props[i].part == "recipe"]

    def arch_def_of_full(self, full: Sequence[int]) -> dict[str, Any]:
        arch = dict(self.fixed_arch)
        if self._fixed_resolution is None:
            arch["input_size"] = self._value(full, self.res_pos)
        return arch

    def recipe_of_full(self, full: Sequence[int]) -> TrainConfig:
        recipe = super().recipe_of_full(full)
        if self._fixed_resolution is not None:
            recipe = recipe.replace(resolution=int(self._fixed_resolution))
        return recipe


def load_joint_space(source: str | Path) -> JointSpace:
    """Reads a space file (YAML or JSON), or a space shipped in ``spaces/`` by name.

    Raises:
        JointSpaceError: not a file nor a shipped name, invalid YAML, an unknown key
            (naming its path) or a value the builder or the recipe refuses (naming the
            dimension).
    """
    path = Path(source)
    if not path.is_file():
        shipped = SPACES_DIR / f"{source}.yaml"
        if shipped.is_file():
            path = shipped
        else:
            raise JointSpaceError(f"space {str(source)!r} is neither a file nor a space of "
                                  f"fbnas/search/jointnas/spaces/ ({', '.join(shipped_spaces())})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise JointSpaceError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise JointSpaceError(f"{path}: a space file must be a mapping")
    try:
        return JointSpace(data, str(path))
    except ArchDefError as exc:
        raise JointSpaceError(f"{path}: {exc}") from None


def shipped_spaces() -> list[str]:
    """Names of the space files shipped in ``fbnas/search/jointnas/spaces/``."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


__all__ = ["FixedArchSpace", "JointSpace", "JointSpaceError", "Prop", "load_joint_space",
           "shipped_spaces"]
