"""Search spaces as data: fixed blocks plus searchable layers with candidate blocks.

A space is a macro-architecture (stem, head, per-layer widths and strides) and, for each
searchable layer, a list of candidate blocks given as registry ops with options. Choosing
one candidate per layer yields an ordinary arch def, so everything downstream (builder,
cost, latency tables, training, export) treats a sampled or derived architecture like any
other. The DNAS supernet is built from the same definitions.

FBNetV1 (Wu et al. 2019, Table 1 and 2): 22 searchable layers, 9 candidates each
(``ir_k{3,5}`` with expansion 1/3/6, the grouped ``_g2`` shuffle variants at expansion 1,
and ``skip``), 9^22 ≈ 1e21 architectures. Every candidate but ``skip`` has its 1x1
expansion conv, as in the paper (:func:`_fbnet_v1_candidates`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import FrozenKwargs
from fbnas.arch.unify import unify_arch_def
from fbnas.blocks import BLOCKS
from fbnas.builder import BlockTrace, FBNetBuilder
from fbnas.cost.analytic import spec_cost
from fbnas.cost.lut import ArchItems, arch_items
from fbnas.errors import did_you_mean
from fbnas.io import YAML_SUFFIXES, read_json_or_yaml
from fbnas.search.protocols import Frozen, clamp_to_box


@dataclass(frozen=True)
class Candidate:
    """One candidate block of a searchable layer: a registry op with preset options."""

    name: str
    op: str
    kwargs: FrozenKwargs = field(default_factory=FrozenKwargs)

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, FrozenKwargs):
            object.__setattr__(self, "kwargs", FrozenKwargs(self.kwargs))

    def entry(self, out_channels: int, stride: int) -> list[Any]:
        """The arch-def block entry of this candidate."""
        block: list[Any] = [self.op, out_channels, stride, 1]
        if self.kwargs:
            block.append(self.kwargs.to_dict())
        return block

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op": self.op}
        if self.kwargs:
            out["kwargs"] = self.kwargs.to_dict()
        return out


@dataclass(frozen=True)
class LayerChoice:
    """A searchable layer: its stage, width, stride and candidates."""

    stage_idx: int
    out_channels: int
    stride: int
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class SearchSpace:
    """A macro-architecture with searchable layers.

    Attributes:
        name: registry name (``fbnet_v1``).
        input_size: the resolution the space is designed for.
        prefix: fixed stages before the searchable layers (arch-def stages).
        layers: the searchable layers in order; consecutive layers of one ``stage_idx``
            form one stage.
        suffix: fixed stages after them (the head).
        basic_args: network-wide defaults of every architecture of the space.
        description: one line for listings.
    """

    name: str
    input_size: int
    prefix: tuple[tuple[tuple[Any, ...], ...], ...]
    layers: tuple[LayerChoice, ...]
    suffix: tuple[tuple[tuple[Any, ...], ...], ...]
    basic_args: FrozenKwargs = field(default_factory=FrozenKwargs)
    description: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def size(self) -> int:
        """Number of distinct architectures (product of candidate counts)."""
        total = 1
        for layer in self.layers:
            total *= len(layer.candidates)
        return total

    def check_choices(self, choices: Sequence[int]) -> None:
        if len(choices) != self.num_layers:
            raise ArchDefError(f"space {self.name!r} has {self.num_layers} searchable layers, "
                               f"got {len(choices)} choices")
        for i, (choice, layer) in enumerate(zip(choices, self.layers, strict=True)):
            if not isinstance(choice, int) or not 0 <= choice < len(layer.candidates):
                raise ArchDefError(f"layer {i}: choice {choice!r} is not in "
                                   f"[0, {len(layer.candidates)})")

    def arch_def(self, choices: Sequence[int]) -> dict[str, Any]:
        """The arch def of one architecture (one candidate index per searchable layer)."""
        self.check_choices(choices)
        stages: list[list[list[Any]]] = [[list(b) for b in stage] for stage in self.prefix]
        current = None
        for layer, choice in zip(self.layers, choices, strict=True):
            if layer.stage_idx != current:
                stages.append([])
                current = layer.stage_idx
            stages[-1].append(layer.candidates[choice].entry(layer.out_channels, layer.stride))
        stages += [[list(b) for b in stage] for stage in self.suffix]
        arch: dict[str, Any] = {"input_size": self.input_size, "blocks": stages}
        if self.basic_args:
            arch["basic_args"] = self.basic_args.to_dict()
        return arch

    # ---------------------------------------------------------- the Space protocol
    # A sample is a tuple of candidate indices, one per searchable layer (hashable and
    # JSON-able); :meth:`freeze` turns it into the arch def. The encoding for Sobol pools
    # and predictors is the cell centre ``(index + 0.5) / K`` of each layer in [0, 1], so
    # a uniform point of the box decodes to uniformly drawn candidates.

    @property
    def dims(self) -> int:
        """Coordinates of an encoded sample: one per searchable layer."""
        return self.num_layers

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        return ((0.0, 1.0),) * self.num_layers

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        """Uniformly random choices, one per layer."""
        return tuple(rng.randrange(len(layer.candidates)) for layer in self.layers)

    def mutate(self, sample: Sequence[int], rng: random.Random, prob: float
               ) -> tuple[int, ...]:
        """Each layer's choice redrawn uniformly (possibly the same) with probability
        ``prob``."""
        return tuple(rng.randrange(len(layer.candidates)) if rng.random() < prob else choice
                     for layer, choice in zip(self.layers, sample, strict=True))

    def crossover(self, a: Sequence[int], b: Sequence[int], rng: random.Random
                  ) -> tuple[int, ...]:
        """Uniform crossover: each layer's choice from ``a`` or ``b`` with equal odds."""
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))

    def check(self, sample: Sequence[int]) -> None:
        """Raises :class:`ArchDefError` naming the layer whose choice is out of range."""
        self.check_choices(sample)

    def key(self, sample: Sequence[int]) -> tuple[int, ...]:
        """The choices themselves: distinct choices are distinct networks."""
        return tuple(sample)

    def encode(self, sample: Sequence[int]) -> list[float]:
        """Cell centres ``(choice + 0.5) / K`` in [0, 1], one per layer."""
        self.check_choices(sample)
        return [(choice + 0.5) / len(layer.candidates)
                for layer, choice in zip(self.layers, sample, strict=True)]

    def decode(self, vector: Sequence[float]) -> tuple[int, ...]:
        """Choices of a point of [0, 1]^layers: cell ``floor(u * K)`` of each layer
        (clamped, so u = 1 is the last candidate)."""
        box = clamp_to_box(vector, self.bounds, f"space {self.name!r}")
        return tuple(min(int(u * len(layer.candidates)), len(layer.candidates) - 1)
                     for u, layer in zip(box, self.layers, strict=True))

    def freeze(self, sample: Sequence[int]) -> Frozen:
        """The arch def of ``sample`` (:meth:`arch_def`), no recipe."""
        return Frozen(self.arch_def(sample))

    def choice_names(self, choices: Sequence[int]) -> list[str]:
        return [layer.candidates[c].name for layer, c in zip(self.layers, choices, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data (JSON/YAML-ready), the format :meth:`from_dict` reads.

        Candidates that every layer shares are written once, under ``candidates``, and a
        layer that repeats the one before it at stride 1 as ``repeats`` of that row.
        """
        shared = self.layers[0].candidates if self.layers else ()
        common = all(layer.candidates == shared for layer in self.layers)
        out: dict[str, Any] = {"name": self.name, "input_size": self.input_size}
        if self.description:
            out["description"] = self.description
        if self.basic_args:
            out["basic_args"] = self.basic_args.to_dict()
        out["prefix"] = _stages_to_data(self.prefix)
        if common:
            out["candidates"] = [c.to_dict() for c in shared]
        out["layers"] = []
        previous = None
        for layer in self.layers:
            if (previous is not None and layer.stride == 1 and layer.stage_idx
                    == previous.stage_idx and layer.out_channels == previous.out_channels
                    and layer.candidates == previous.candidates):
                row = out["layers"][-1]  # a repeat of the row above, as a table writes it
                row["repeats"] = row.get("repeats", 1) + 1
                continue
            row = {"stage": layer.stage_idx, "out_channels": layer.out_channels,
                   "stride": layer.stride}
            if not common:
                row["candidates"] = [c.to_dict() for c in layer.candidates]
            out["layers"].append(row)
            previous = layer
        out["suffix"] = _stages_to_data(self.suffix)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search space") -> SearchSpace:
        """Builds a space from plain data (:meth:`to_dict`'s format, or a hand-written file).

        Keys: ``name``, ``input_size``, ``layers`` (required); ``prefix``, ``suffix``
        (arch-def stages before and after the searchable layers), ``candidates`` (the
        default candidates of every layer), ``basic_args``, ``description``. A layer is
        ``{stage, out_channels, stride}`` with optional ``candidates`` (else the shared ones)
        and ``repeats`` (that many layers; the first has ``stride``, the others 1). A
        candidate is ``{name, op}`` with optional ``kwargs`` (block options).

        Raises:
            ArchDefError: naming ``source`` and the bad part (key, layer, candidate).
        """
        where = _Where(source)
        where.keys(data, "", {"name", "input_size", "layers"},
                   {"prefix", "suffix", "candidates", "basic_args", "description"})
        name = where.string(data["name"], "name")
        input_size = where.integer(data["input_size"], "input_size", 8)
        shared = None
        if "candidates" in data:
            shared = _candidates_from_data(data["candidates"], "candidates", where)
        rows = data["layers"]
        if not isinstance(rows, list) or not rows:
            where.fail("layers", "must be a non-empty list of searchable layers")
        layers: list[LayerChoice] = []
        last_stage = -1
        for i, row in enumerate(rows):
            at = f"layers[{i}]"
            where.keys(row, at, {"stage", "out_channels", "stride"}, {"candidates", "repeats"})
            stage = where.integer(row["stage"], f"{at}.stage", 0)
            if stage < last_stage:
                where.fail(f"{at}.stage", f"stages must not decrease ({stage} after "
                                          f"{last_stage})")
            last_stage = stage
            out_channels = where.integer(row["out_channels"], f"{at}.out_channels", 1)
            stride = where.integer(row["stride"], f"{at}.stride", 1)
            repeats = where.integer(row.get("repeats", 1), f"{at}.repeats", 1)
            if "candidates" in row:
                candidates = _candidates_from_data(row["candidates"], f"{at}.candidates", where)
            elif shared is not None:
                candidates = shared
            else:
                where.fail(at, "has no candidates (give them here or as the top-level "
                               "'candidates')")
            layers += [LayerChoice(stage, out_channels, stride if r == 0 else 1, candidates)
                       for r in range(repeats)]
        basic_args = data.get("basic_args") or {}
        if not isinstance(basic_args, Mapping):
            where.fail("basic_args", "must be a mapping of network-wide block options")
        description = data.get("description", "")
        if not isinstance(description, str):
            where.fail("description", "must be a string")
        return cls(name=name, input_size=input_size,
                   prefix=_stages_from_data(data.get("prefix") or [], "prefix", where),
                   layers=tuple(layers),
                   suffix=_stages_from_data(data.get("suffix") or [], "suffix", where),
                   basic_args=FrozenKwargs(basic_args), description=description)

    def all_candidate_archs(self) -> list[dict[str, Any]]:
        """Arch defs that together contain every (layer, candidate) pair exactly once.

        Architecture ``j`` takes candidate ``(j + l) mod n_l`` in layer ``l`` (a Latin
        square), so every network mixes candidates the way a real sample does — blocks timed
        inside these networks see realistic neighbours — and together they hold every
        distinct block of the space with its input shape.
        """
        most = max(len(layer.candidates) for layer in self.layers)
        return [self.arch_def([(j + i) % len(layer.candidates)
                               for i, layer in enumerate(self.layers)])
                for j in range(most)]


class _Where:
    """Error messages of :meth:`SearchSpace.from_dict` that name the source and the part."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, part: str, message: str) -> NoReturn:
        raise ArchDefError(f"{self.source}: {part} {message}")

    def keys(self, data: Any, part: str, required: set[str], optional: set[str]) -> None:
        label = part or "the space"
        if not isinstance(data, Mapping):
            self.fail(label, f"must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in required | optional:
                hint = did_you_mean(key, sorted(required | optional), n=2)
                self.fail(label, f"has an unknown key {key!r}{hint}")
        missing = sorted(required - set(data))
        if missing:
            self.fail(label, f"lacks {', '.join(map(repr, missing))}")

    def integer(self, value: Any, part: str, least: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            self.fail(part, f"must be an integer >= {least}, got {value!r}")
        return value

    def string(self, value: Any, part: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(part, f"must be a non-empty string, got {value!r}")
        return value


def _candidates_from_data(rows: Any, part: str, where: _Where) -> tuple[Candidate, ...]:
    if not isinstance(rows, list) or not rows:
        where.fail(part, "must be a non-empty list of {name, op, kwargs} candidates")
    out = []
    for j, row in enumerate(rows):
        at = f"{part}[{j}]"
        where.keys(row, at, {"name", "op"}, {"kwargs"})
        kwargs = row.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            where.fail(f"{at}.kwargs", "must be a mapping of block options")
        out.append(Candidate(where.string(row["name"], f"{at}.name"),
                             where.string(row["op"], f"{at}.op"), FrozenKwargs(kwargs)))
    names = [c.name for c in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        where.fail(part, f"repeats the candidate name(s) {duplicates}")
    return tuple(out)


def _stages_to_data(stages: Sequence[Sequence[Sequence[Any]]]) -> list[list[list[Any]]]:
    return [[[dict(v) if isinstance(v, Mapping) else v for v in block] for block in stage]
            for stage in stages]


def _stages_from_data(stages: Any, part: str, where: _Where
                      ) -> tuple[tuple[tuple[Any, ...], ...], ...]:
    """Arch-def stages as the space stores them; block entries are checked when the space
    is traced (by the arch-def parser, which names the stage and block)."""
    if not isinstance(stages, list) or not all(
            isinstance(stage, list) and all(isinstance(b, list) for b in stage)
            for stage in stages):
        where.fail(part, "must be a list of stages, each a list of [op, channels, stride, "
                         "repeats(, options)] blocks")
    return tuple(tuple(tuple(FrozenKwargs(v) if isinstance(v, Mapping) else v for v in block)
                       for block in stage) for stage in stages)


def _fbnet_v1_candidates() -> tuple[Candidate, ...]:
    """The 9 blocks of FBNet's Table 2, as the paper builds them.

    The paper's inverted residual (and the maskrcnn-benchmark code behind it) always has
    its 1x1 expansion conv, also at expansion 1 and in the group-2 blocks (grouped
    1x1 -> shuffle -> depthwise -> grouped 1x1). fbnas's builder follows the reference
    (mobile-vision) rule instead, which drops the expansion conv when the hidden width
    equals the input width, so the 4 expansion-1 candidates say ``always_pw``. The zoo's
    FBNet models keep the reference's blocks; expansion 3 and 6 are the same either way
    and keep their plain options (and so their latency-table keys).
    """
    candidates = []
    paper_e1 = {"expansion": 1, "always_pw": True}
    for k in (3, 5):
        candidates.append(Candidate(f"ir_k{k}_e1", f"ir_k{k}", FrozenKwargs(paper_e1)))
        candidates.append(Candidate(f"ir_k{k}_s2", f"ir_k{k}_g2",
                                    FrozenKwargs({**paper_e1, "pwl_groups": 2})))
        candidates.append(Candidate(f"ir_k{k}_e3", f"ir_k{k}", FrozenKwargs({"expansion": 3})))
        candidates.append(Candidate(f"ir_k{k}_e6", f"ir_k{k}", FrozenKwargs({"expansion": 6})))
    candidates.append(Candidate("skip", "skip"))
    return tuple(candidates)


# (stage, out_channels, repeats, first stride) of the 22 searchable layers, FBNet Table 1.
_FBNET_V1_GROUPS = ((1, 16, 1, 1), (2, 24, 4, 2), (3, 32, 4, 2), (4, 64, 4, 2),
                    (4, 112, 4, 1), (5, 184, 4, 2), (5, 352, 1, 1))


# A reduced table for 32x32 inputs (the demo, tests, quick studies): 7 searchable layers of
# the same 9 candidates, 9^7 ~ 4.8e6 architectures, every network well under 1 ms on a CPU.
_FBNET_V1_TINY_GROUPS = ((1, 16, 1, 1), (2, 24, 2, 2), (3, 32, 2, 2), (4, 64, 2, 2))


def fbnet_v1_space(name: str = "fbnet_v1", input_size: int = 224, stem_stride: int = 2,
                   first_group_stride: int = 2, head_channels: int = 1984,
                   groups: Sequence[tuple[int, int, int, int]] = _FBNET_V1_GROUPS,
                   description: str = "") -> SearchSpace:
    """The FBNetV1 space: conv 3x3 stem, 22 searchable layers of 9 candidates, 1x1 head.

    ``groups`` replaces the paper's table of (stage, width, repeats, first stride) rows.
    """
    candidates = _fbnet_v1_candidates()
    layers = []
    for stage, out, repeats, stride in groups:
        first = first_group_stride if out == 24 else stride
        for i in range(repeats):
            layers.append(LayerChoice(stage, out, first if i == 0 else 1, candidates))
    return SearchSpace(
        name=name, input_size=input_size,
        prefix=((("conv_k3", 16, stem_stride, 1),),),
        layers=tuple(layers),
        suffix=((("conv_k1", head_channels, 1, 1),),),
        description=description or (f"FBNetV1: {len(layers)} layers x 9 candidates at "
                                     f"{input_size}x{input_size}"),
    )


SPACES: dict[str, SearchSpace] = {
    "fbnet_v1": fbnet_v1_space(),
    # 32x32 input (CIFAR-10): stem and the first stride-2 group run at stride 1, so the
    # last stage works on a 4x4 map instead of collapsing to 1x1 (fbnas's own change; the
    # public CIFAR code keeps the ImageNet table).
    "fbnet_v1_cifar": fbnet_v1_space("fbnet_v1_cifar", 32, stem_stride=1, first_group_stride=1),
    "fbnet_v1_tiny": fbnet_v1_space(
        "fbnet_v1_tiny", 32, stem_stride=1, head_channels=256, groups=_FBNET_V1_TINY_GROUPS,
        description="reduced FBNetV1 (demo, quick studies): 7 layers x 9 candidates at 32x32"),
}


SPACE_FILE_SUFFIXES = (".json", *YAML_SUFFIXES)


# --------------------------------------------------------------------------- tracing


def candidate_traces(space: SearchSpace, resolution: int) -> tuple[list[list[BlockTrace]],
                                                                  list[BlockTrace],
                                                                  list[BlockTrace], int]:
    """Resolved blocks of a space: (traces per layer and candidate, prefix traces, suffix
    traces, number of prefix blocks).

    Uses the space's Latin-square candidate networks (network j holds candidate
    (j + l) mod K_l at layer l), so every candidate is traced with its real input width.
    """
    if not space.layers:
        raise ArchDefError(f"search space {space.name!r} has no searchable layers")
    for i, layer in enumerate(space.layers):
        if not layer.candidates:
            raise ArchDefError(f"search space {space.name!r}: layer {i} has no candidates")
        for candidate in layer.candidates:
            try:
                BLOCKS.get(candidate.op)
            except ArchDefError as exc:  # names the op and the closest registered ones
                raise ArchDefError(f"search space {space.name!r}, layer {i}, candidate "
                                   f"{candidate.name!r}: {exc}") from None
    archs = space.all_candidate_archs()
    n_prefix = sum(len(stage) for stage in space.prefix)
    per_arch = []
    for j, arch in enumerate(archs):
        try:
            spec = unify_arch_def(arch)
            builder = FBNetBuilder()
            builder.add_basic_args(spec.basic_args)
            per_arch.append(builder.trace(spec, resolution=resolution))
        except ArchDefError as exc:
            layer = _layer_at(space, exc.stage, exc.block)
            if layer is None:  # a fixed block: the arch def's stage and block say where
                raise
            candidates = space.layers[layer].candidates
            candidate = candidates[(j + layer) % len(candidates)]
            key = (f"option {exc.key!r}: " if exc.key is not None
                   and repr(exc.key) not in exc.reason else "")
            raise ArchDefError(f"search space {space.name!r}, layer {layer}, candidate "
                               f"{candidate.name!r} (op {candidate.op!r}): {key}"
                               f"{exc.reason}") from None
    layers = []
    for l_idx, layer in enumerate(space.layers):
        row = []
        for c_idx in range(len(layer.candidates)):
            j = (c_idx - l_idx) % len(layer.candidates)
            row.append(per_arch[j][n_prefix + l_idx])
        outs = {t.out_channels for t in row}
        if len(outs) != 1:
            raise ArchDefError(f"layer {l_idx}: candidates disagree on output width {outs}")
        layers.append(row)
    prefix = per_arch[0][:n_prefix]
    suffix = per_arch[0][n_prefix + len(space.layers):]
    return layers, prefix, suffix, n_prefix


def _layer_at(space: SearchSpace, stage: int | None, block: int | None) -> int | None:
    """The searchable layer at (stage, block) of the space's arch defs, or None (a fixed
    block of the prefix or suffix, or no position)."""
    if stage is None or block is None or stage < len(space.prefix):
        return None
    stage_number, first = len(space.prefix) - 1, 0
    for index, layer in enumerate(space.layers):
        if index == 0 or layer.stage_idx != space.layers[index - 1].stage_idx:
            stage_number, first = stage_number + 1, index
        if stage_number == stage and index - first == block:
            return index
    return None


def space_networks(space: SearchSpace, resolution: int | None, batch: int,
                   calibrate_on: int, num_classes: int = 1000
                   ) -> tuple[list[ArchItems], list[ArchItems]]:
    """(networks covering every candidate block, ``calibrate_on`` sampled networks).

    The same choice as ``fbnas lut build --space``: the Latin-square candidate networks,
    and for calibration ``calibrate_on`` networks spread over the space's cost range (out
    of 200 random samples, seed 0, the ones at evenly spaced MAC quantiles): the fit has an
    offset as well as a scale, which needs small and large networks to be well posed.
    """
    networks = [arch_items(a, resolution, num_classes, batch, name=f"{space.name}_cand{j}")
                for j, a in enumerate(space.all_candidate_archs())]
    rng = random.Random(0)
    pool = [space.arch_def(space.sample(rng)) for _ in range(200)]
    pool.sort(key=lambda a: spec_cost(unify_arch_def(a), resolution or space.input_size).macs)
    picks = ([round(i * (len(pool) - 1) / max(1, calibrate_on - 1)) for i in range(calibrate_on)]
             if calibrate_on > 1 else [len(pool) // 2] * calibrate_on)
    samples = [arch_items(pool[j], resolution, num_classes, batch,
                          name=f"{space.name}_sample{i}")
               for i, j in enumerate(picks)]
    return networks, samples


def load_space(path: str | Path) -> SearchSpace:
    """Reads a search space from a JSON or YAML file (``yaml.safe_load``: no code runs).

    The file holds :meth:`SearchSpace.to_dict`'s format (``fbnas space show NAME --json``
    writes a registered space in it: a starting point for your own).

    Raises:
        FileNotFoundError: no such file.
        ArchDefError: unreadable, or a bad space (naming the file and the part).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search space file {str(path)!r} does not exist")
    try:
        data = read_json_or_yaml(path)
    except ValueError as exc:
        raise ArchDefError(f"search space file {str(path)!r} is not valid: {exc}") from None
    space = SearchSpace.from_dict(data, str(path))
    # Every candidate resolved now (ops, their options, widths), so a bad file fails when
    # it is read, naming the file, not later inside a search.

    try:
        candidate_traces(space, space.input_size)
    except ArchDefError as exc:
        raise ArchDefError(f"search space file {str(path)!r}: {exc}") from None
    return space


def get_space(name: str | Path | SearchSpace) -> SearchSpace:
    """A registered space by name, or a space file (.json/.yaml/.yml; :func:`load_space`).

    Unknown names suggest close ones.
    """
    if isinstance(name, SearchSpace):
        return name
    if isinstance(name, Path) or (name not in SPACES
                                  and name.lower().endswith(SPACE_FILE_SUFFIXES)):
        return load_space(name)
    if name not in SPACES:
        hint = did_you_mean(name, SPACES, cutoff=0.5)
        raise ArchDefError(f"unknown search space {name!r}{hint} (known: "
                           f"{', '.join(SPACES)}; or a .json/.yaml space file)")
    return SPACES[name]


def space_summary(space: SearchSpace) -> Mapping[str, Any]:
    return {"name": space.name, "input_size": space.input_size, "layers": space.num_layers,
            "candidates": [c.name for c in space.layers[0].candidates],
            "size": space.size, "description": space.description}
