"""FBNetV1 DNAS on the search engine: the settings, and the supernet of a space to search.

The loop itself — warm-up, then alternating weight and θ passes on a held-out split, τ
annealing, validation of the argmax path, data parallelism, the run folder, resuming and
deriving — is the shared engine's (:mod:`fbnas.search.engine`, ALGORITHMS.md §1.5). This
module maps :class:`DNASConfig` onto the engine's settings, prices the space's candidates
(:func:`fbnas.search.dnas.supernet.layer_costs`), builds the :class:`Supernet`, and says
what ``search_config.json`` and ``arch.json`` record.

``DNASConfig(target=T)`` pulls the expected cost to T (:class:`fbnas.search.cost_loss.CostLoss`)
and derives within ``target_band`` of it (:mod:`fbnas.search.derive`); ``mode`` picks the
soft mixture of the paper or the single path; ``device``/``amp`` run it on a GPU.

Settings are data: :func:`load_search_config` reads a YAML/JSON file or a built-in config
shipped in ``fbnas/search/dnas/configs/`` (``paper``: the FBNetV1 paper's schedule;
``demo``: the short search of ``fbnas demo``), with every :class:`DNASConfig` field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from fbnas.arch.errors import ArchDefError
from fbnas.errors import (
    ConfigError,
    check_field_types,
    did_you_mean,
    parse_assignments,
    reject_unknown_keys,
)
from fbnas.io import YAML_SUFFIXES
from fbnas.search.cost_loss import CostLoss, LossForm, PullOn, TargetForm
from fbnas.search.derive import ARGMAX
from fbnas.search.dnas.supernet import (
    MODES,
    CostKind,
    LayerCosts,
    Mode,
    Supernet,
    layer_costs,
)
from fbnas.search.engine import EngineConfig, Progress, SearchEngine
from fbnas.search.run_folder import CONFIG_FILE, RunFolder
from fbnas.search.space import SearchSpace, get_space
from fbnas.tasks.classification import ClassificationTask
from fbnas.train.distributed import DistContext

COST_KINDS: tuple[CostKind, ...] = ("latency", "macs", "params")


@dataclass(frozen=True)
class DNASConfig:
    """Search settings (defaults from the FBNetV1 paper and its public implementations).

    The engine's part (epochs, batches, τ, the optimisers, the seed, the device) maps onto
    :class:`fbnas.search.engine.EngineConfig` (:meth:`engine_config`); the cost loss's
    (form, alpha, beta, the target and its pull) onto
    :class:`fbnas.search.cost_loss.CostLoss`; the rest is DNAS's: the mode, the cost kind,
    the input resolution, the reported top-k accuracies (``topk``: ``(1, 3)`` logs
    ``val_top3`` too; 1 is always among them, it scores ``best.pt``).
    """

    epochs: int = 90
    warmup_epochs: int = 10
    mode: Mode = "soft"
    batch_size: int = 64
    w_share: float = 0.8
    w_lr: float = 0.1
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    theta_lr: float = 0.01
    theta_weight_decay: float = 5e-4
    theta_optimizer: Literal["adam", "sgd"] = "adam"
    theta_momentum: float = 0.9
    """Momentum of ``theta_optimizer: sgd`` (Adam ignores it)."""
    tau0: float = 5.0
    tau_decay: float = 0.956
    tau_final: float | None = None
    alternate: Literal["epoch", "step"] = "epoch"
    loss_form: LossForm = "mul"
    alpha: float = 0.2
    beta: float = 0.6
    target: float | None = None
    target_weight: float = 1.0
    target_form: TargetForm = "square"
    """The pull to the target: ``square`` (weight * log(c/T)^2) or ``abs`` (weight *
    |log(c/T)|)."""
    pull_on: PullOn = "sample"
    """The cost the pull acts on: ``sample`` (the step's sampled cost) or ``expected`` (the
    distribution's, Σ softmax(θ)·cost)."""
    target_band: float | None = 0.05
    """With a target: derive the argmax when its cost is within ±band of the target, else
    the most probable architecture within the band (None: always the plain argmax)."""
    cost: CostKind = "latency"
    num_samples: int = 5
    resolution: int | None = None
    topk: tuple[int, ...] = (1,)
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``..."""
    amp: bool = False
    """bfloat16 autocast on CUDA (ignored, with a warning, on the CPU)."""
    tensorboard: bool = True
    """Also write TensorBoard scalars into the run folder."""

    def __post_init__(self) -> None:
        if isinstance(self.topk, list):  # from YAML or JSON
            object.__setattr__(self, "topk", tuple(self.topk))
        check_field_types(self)
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.cost not in COST_KINDS:
            raise ConfigError(f"cost must be one of {', '.join(COST_KINDS)}, got "
                              f"{self.cost!r}")
        if 1 not in self.topk or min(self.topk) < 1 or len(set(self.topk)) != len(self.topk):
            raise ConfigError(f"topk must be distinct ks >= 1 including 1 (val_top1 scores "
                              f"best.pt), got {list(self.topk)}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"resolution must be >= 8, got {self.resolution}")
        self.engine_config()  # checks the engine's settings
        self.cost_loss(1.0)  # and the cost loss's

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "DNAS settings") -> DNASConfig:
        """Builds the settings from plain data (a config file, a run's search_config.json;
        keys it lacks get their defaults, so runs written before a setting existed read).

        Raises:
            ConfigError: ``source`` and an unknown key (with the closest settings), or a bad
                value.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: search settings must be a mapping of keys to "
                              f"values, got {type(data).__name__}")
        reject_unknown_keys(data, cls, source)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (JSON- and YAML-ready; ``topk`` as a list)."""
        out = asdict(self)
        out["topk"] = list(self.topk)
        return out

    def replace(self, **changes: Any) -> DNASConfig:
        """A copy with ``changes`` applied and checked (an unknown key is named)."""
        return self.from_dict({**asdict(self), **changes}, "override")

    def with_overrides(self, assignments: Sequence[str], source: str = "--set") -> DNASConfig:
        """Applies ``key=value`` strings, values read as YAML scalars (``theta_lr=0.1``,
        ``tau_final=null``, ``topk=[1,3]``).

        Raises:
            ConfigError: a string without ``=``, an unknown key, or a bad value.
        """
        changes = parse_assignments(assignments, source)
        return self.from_dict({**asdict(self), **changes}, source)

    def cost_loss(self, cheapest: float) -> CostLoss:
        """The cost-aware loss of these settings, for a space whose cheapest network costs
        ``cheapest``."""
        return CostLoss(cheapest, self.loss_form, self.alpha, self.beta, self.target,
                        self.target_weight, self.target_form, self.pull_on)

    def engine_config(self) -> EngineConfig:
        """The engine's settings among these."""
        names = EngineConfig.field_names()
        return EngineConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def tau_at(self, search_epoch: int) -> float:
        """τ for the ``search_epoch``-th search epoch (0 = the first after warm-up)."""
        return self.engine_config().schedule().tau_at(search_epoch)


@dataclass
class SearchResult:
    """What a search produced (also written under the run folder)."""

    out_dir: Path
    choices: list[int]
    choice_names: list[str]
    cost: float
    cost_unit: str
    samples: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    supernet: Supernet | None = field(default=None, repr=False)
    """The trained supernet (e.g. for :func:`fbnas.search.dnas.subnet_state_dict`)."""


CONFIG_SUFFIXES = (".json", *YAML_SUFFIXES)


def builtin_search_configs() -> list[str]:
    """Names of the search configs shipped in ``fbnas/search/dnas/configs``."""
    folder = resources.files("fbnas.search.dnas") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_search_config(source: str | os.PathLike | None) -> DNASConfig:
    """Search settings from a YAML/JSON file or a built-in config name (``paper``,
    ``demo``; :func:`builtin_search_configs`); ``None`` gives the defaults. Keys the file
    lacks keep :class:`DNASConfig`'s defaults. Read with ``yaml.safe_load``: no code runs.

    Raises:
        ConfigError: neither a file nor a built-in name (listing them, with the closest),
            invalid YAML, or bad settings (naming the file and the key).
    """
    if source is None:
        return DNASConfig()
    path = Path(source)
    if path.is_file():
        text, label = path.read_text(encoding="utf-8"), str(path)
    elif str(source) in builtin_search_configs():
        folder = resources.files("fbnas.search.dnas") / "configs"
        text = (folder / f"{source}.yaml").read_text(encoding="utf-8")
        label = f"search config {str(source)!r}"
    else:
        known = builtin_search_configs()
        what = ("no such file" if str(source).lower().endswith(CONFIG_SUFFIXES)
                else "neither a file nor a built-in search config")
        raise ConfigError(f"search config {str(source)!r}: {what} (built-in: "
                          f"{', '.join(known)}){did_you_mean(str(source), known)}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {exc}") from None
    return DNASConfig.from_dict(data or {}, label)


SEARCH_CONFIG = CONFIG_FILE
SAVED_BEFORE: dict[str, Any] = {"device": "cpu", "theta_optimizer": "adam",
                                "target_form": "square", "pull_on": "sample", "topk": [1]}
"""What a run saved before these settings existed searched with (where today's default
differs or may): a resumed old run goes on as it began."""
_RUN_KEYS = ("space", "space_def", "data", "num_classes", "world_size")
"""Keys of ``search_config.json`` beside the :class:`DNASConfig` fields."""


def read_search_config(path: str | os.PathLike) -> tuple[dict[str, Any], DNASConfig]:
    """Reads a run's ``search_config.json``: (space, space_def, data, num_classes,
    world_size), config. Settings the file predates get the values the run searched with
    (:data:`SAVED_BEFORE`), not today's defaults.

    Raises:
        ValueError: an unknown key (naming it), or a bad value.
    """
    saved = json.loads(Path(path).read_text())
    run = {k: saved.pop(k) for k in _RUN_KEYS if k in saved}
    return run, DNASConfig.from_dict({**SAVED_BEFORE, **saved}, str(path))


def searched_space(run: dict[str, Any], source: str) -> SearchSpace:
    """The space a run searched (``run`` from :func:`read_search_config`): its stored
    definition, so a run whose space file changed or moved still loads; runs written
    before definitions were stored name a registered space."""
    if "space_def" in run:
        return SearchSpace.from_dict(run["space_def"], f"{source} space_def")
    return get_space(run["space"])


def _check_same_space(out: Path, space: SearchSpace) -> None:
    """A resumed search must search the space it started with."""
    path = out / SEARCH_CONFIG
    if not path.is_file():
        return
    run, _ = read_search_config(path)
    if searched_space(run, str(path)) != space:
        raise ArchDefError(f"{out} is a search of another space definition "
                           f"({run['space']!r}, kept in {path}); resume it with that space")


def _describe(space: SearchSpace, costs: LayerCosts, table, num_classes: int):
    """What ``arch.json`` and ``samples/arch_XX.json`` record of an architecture."""

    def describe(net: Supernet, choices: list[int], derived: str) -> dict:
        arch = space.arch_def(choices)
        analytic = net.analytic_cost(choices)
        record = {"arch_def": arch, "space": space.name,
                  "choices": space.choice_names(choices),
                  "predicted_cost": costs.network_cost(choices), "cost_unit": costs.unit,
                  "num_classes": net.num_classes, "resolution": net.resolution,
                  "params": analytic.params, "macs": analytic.macs, "derived": derived}
        if derived not in (ARGMAX, "sampled"):
            argmax = net.derive()
            record["argmax_choices"] = space.choice_names(argmax)
            record["argmax_cost"] = costs.network_cost(argmax)
        if table is not None:
            record["predicted_ms"] = table.predict(arch, net.resolution,
                                                   num_classes).predicted_ms
        return record

    return describe


def run_search(
    space_name: str | SearchSpace,
    data_spec: str,
    config: DNASConfig,
    out_dir: str | os.PathLike,
    table=None,
    resume: bool = False,
    progress: Progress | None = None,
    context: DistContext | None = None,
) -> SearchResult:
    """Runs a DNAS search and writes the run folder (metrics, θ, checkpoints, arch files).

    Args:
        space_name: a registered search space.
        data_spec: a dataset spec (``digits``, ``cifar10:PATH?classes=10&per_class=500``...).
        config: search settings; ``batch_size`` is the global batch over all processes.
        out_dir: the run folder (on a file system every process sees, for ``resume``).
        table: a :class:`fbnas.cost.lut.LatencyTable` when ``config.cost == "latency"``.
        resume: continue from ``out_dir/last.pt`` (``last.prev.pt`` if it is unreadable).
        progress: called as ``(phase, step, total, info)`` during passes.
        context: the process group (:func:`fbnas.train.distributed.init_distributed`);
            default a single process. Every rank returns the same result; rank 0 writes.

    Raises:
        ArchDefError / MissingEntriesError / ValueError: before any training, for an empty
            space, unknown candidate ops, a table lacking candidates, a target below the
            cheapest network of the space, or a batch smaller than the number of processes.
    """
    from fbnas.data import open_datasets

    context = context or DistContext()
    space = get_space(space_name)
    resolution = config.resolution or space.input_size
    data = open_datasets(data_spec, resolution)  # opens files only; its class count sizes
    # the task's head, whose cost is part of every network's. Accuracies as fractions:
    # metrics.jsonl's format predates the task seam.
    task = ClassificationTask(data.num_classes, topk=config.topk, percent=False)
    costs = layer_costs(space, config.cost, table, resolution, head=task.head_spec)
    if config.target is not None and config.target < costs.cheapest:
        raise ArchDefError(f"target {config.target:g} {costs.unit} is below the cheapest "
                           f"network of {space.name} ({costs.cheapest:.4g} {costs.unit})")
    out = Path(out_dir)
    if resume and RunFolder(out).has_checkpoint():
        _check_same_space(out, space)
    criterion = config.cost_loss(costs.cheapest)
    engine = SearchEngine(
        lambda: Supernet(space, costs, num_classes=data.num_classes, resolution=resolution,
                         mode=config.mode, head=task.head_spec),
        task, data, config.engine_config(), criterion, context)
    run_config = {"space": space.name, "space_def": space.to_dict(), "data": data_spec,
                  "num_classes": data.num_classes, "world_size": context.world_size,
                  **config.to_dict()}
    result = engine.run(out, resume, progress, run_config,
                        _describe(space, costs, table, data.num_classes))
    return SearchResult(out, result.choice, space.choice_names(result.choice),
                        costs.network_cost(result.choice), costs.unit, result.records[1:],
                        result.history, result.model)
