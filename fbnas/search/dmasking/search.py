"""DMaskingNAS on the search engine: the settings, the masked supernet, the run folder.

The loop (warm-up, alternating weight and θ passes, τ annealing, validation of the argmax
inside the supernet, DDP, resume, the run folder) is the engine's
(:mod:`fbnas.search.engine`); this module maps :class:`DMaskingConfig` onto it, checks the
target against the space's cost range before any training, builds the
:class:`~fbnas.search.dmasking.supernet.MaskedSupernet` and says what ``arch.json`` records.

Hyperparameters (ALGORITHMS.md §2.5): the FBNetV2 paper does not confirm its schedule, so
the defaults are FBNetV1's (τ₀ = 5, ×0.956 per epoch, Adam 0.01 / 5e-4 for θ, SGD + cosine
for w, a weight-only warm-up) — an assumption. ``configs/demo.yaml`` is a short search on
digits.
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

from fbnas.errors import (
    ConfigError,
    check_field_types,
    did_you_mean,
    parse_assignments,
    reject_unknown_keys,
)
from fbnas.search.cost_loss import CostLoss, LossForm, PullOn, TargetForm
from fbnas.search.dmasking.space import DMaskingSpace, load_dmasking_space
from fbnas.search.dmasking.supernet import CostKind, MaskedSupernet
from fbnas.search.engine import EngineConfig, Progress, SearchEngine
from fbnas.search.run_folder import CONFIG_FILE, RunFolder
from fbnas.tasks.classification import ClassificationTask
from fbnas.train.distributed import DistContext

COST_KINDS: tuple[CostKind, ...] = ("macs", "params", "latency")


@dataclass(frozen=True)
class DMaskingConfig:
    """Search settings; the engine's part maps onto :class:`EngineConfig`, the loss's onto
    :class:`CostLoss` (defaults: FBNetV1's, ALGORITHMS.md §2.5)."""

    epochs: int = 90
    warmup_epochs: int = 10
    batch_size: int = 64
    w_share: float = 0.8
    w_lr: float = 0.1
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    theta_lr: float = 0.01
    theta_weight_decay: float = 5e-4
    theta_optimizer: Literal["adam", "sgd"] = "adam"
    theta_momentum: float = 0.9
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
    pull_on: PullOn = "sample"
    target_band: float | None = 0.05
    """With a target: derive the argmax if within ±band of it, else move greedily from the
    argmax into the band (:meth:`MaskedSupernet.derive_near_target`); None: the argmax."""
    cost: CostKind = "macs"
    num_samples: int = 5
    topk: tuple[int, ...] = (1,)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.topk, list):
            object.__setattr__(self, "topk", tuple(self.topk))
        check_field_types(self)
        if self.cost not in COST_KINDS:
            raise ConfigError(f"cost must be one of {', '.join(COST_KINDS)}, got "
                              f"{self.cost!r}")
        if 1 not in self.topk or min(self.topk) < 1:
            raise ConfigError(f"topk must include 1, got {list(self.topk)}")
        self.engine_config()
        self.cost_loss(1.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "DMasking settings"
                  ) -> DMaskingConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: settings must be a mapping, got "
                              f"{type(data).__name__}")
        reject_unknown_keys(data, cls, source)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["topk"] = list(self.topk)
        return out

    def with_overrides(self, assignments: Sequence[str], source: str = "--set"
                       ) -> DMaskingConfig:
        return self.from_dict({**self.to_dict(), **parse_assignments(assignments, source)},
                              source)

    def cost_loss(self, cheapest: float) -> CostLoss:
        return CostLoss(cheapest, self.loss_form, self.alpha, self.beta, self.target,
                        self.target_weight, self.target_form, self.pull_on)

    def engine_config(self) -> EngineConfig:
        names = EngineConfig.field_names()
        return EngineConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def final_tau(self) -> float:
        schedule = self.engine_config().schedule()
        return schedule.tau_of_epoch(self.epochs - 1)


def builtin_configs() -> list[str]:
    folder = resources.files("fbnas.search.dmasking") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | os.PathLike | None) -> DMaskingConfig:
    """Settings from a YAML/JSON file or a built-in name (``demo``); None: the defaults."""
    if source is None:
        return DMaskingConfig()
    path = Path(source)
    if path.is_file():
        text, label = path.read_text(encoding="utf-8"), str(path)
    elif str(source) in builtin_configs():
        text = (resources.files("fbnas.search.dmasking") / "configs" / f"{source}.yaml"
                ).read_text(encoding="utf-8")
        label = f"DMasking config {str(source)!r}"
    else:
        known = builtin_configs()
        raise ConfigError(f"DMasking config {str(source)!r}: neither a file nor a built-in "
                          f"config (built-in: {', '.join(known)})"
                          f"{did_you_mean(str(source), known)}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {exc}") from None
    return DMaskingConfig.from_dict(data or {}, label)


@dataclass
class DMaskingResult:
    """What a search produced (also under the run folder)."""

    out_dir: Path
    choice: list[int]
    choice_names: list[str]
    arch_def: dict[str, Any]
    cost: float
    cost_unit: str
    history: list[dict] = field(default_factory=list)
    supernet: MaskedSupernet | None = field(default=None, repr=False)


def check_target(space: DMaskingSpace, net: MaskedSupernet, target: float | None) -> None:
    """Raises ConfigError for a target outside the space's cost range (before training)."""
    if target is None:
        return
    low, high = net.cost_range()
    if not low <= target <= high:
        raise ConfigError(f"target {target:g} {net.cost_unit} is outside the cost range of "
                          f"space {space.name!r}: [{low:.6g}, {high:.6g}] {net.cost_unit} (its "
                          f"narrowest and widest networks)")


def _describe(net: MaskedSupernet, choice: list[int], derived: str) -> dict[str, Any]:
    from fbnas.cost.analytic import arch_cost

    arch = net.arch_def(choice)
    counted = arch_cost(arch, arch["input_size"], net.num_classes)
    return {"arch_def": arch, "space": net.space.name, "choice": choice,
            "choices": net.choice_names(choice), "predicted_cost": net.choice_cost(choice),
            "cost_unit": net.cost_unit, "num_classes": net.num_classes,
            "resolution": arch["input_size"], "params": counted.params,
            "macs": counted.macs, "derived": derived}


def run_search(space: str | DMaskingSpace, data_spec: str, config: DMaskingConfig,
               out_dir: str | os.PathLike, resume: bool = False,
               progress: Progress | None = None, context: DistContext | None = None,
               latency: Any = None) -> DMaskingResult:
    """Runs a DMaskingNAS search and writes the run folder.

    Args:
        space: a built-in space name, a space file, or a :class:`DMaskingSpace`.
        data_spec: a dataset spec (``digits``...), read at the space's largest resolution.
        config: the settings (``target``: the cost target, checked against the space's
            range before any training).
        latency: a :class:`fbnas.search.dmasking.latency.MaskedLatency` for ``cost:
            latency``.

    Raises:
        ConfigError: a bad space (naming the stage), a target outside the cost range, or a
            resumed folder of another space — all before any training.
    """
    from fbnas.data import open_datasets

    context = context or DistContext()
    space = load_dmasking_space(space)
    data = open_datasets(data_spec, space.max_resolution)
    task = ClassificationTask(data.num_classes, topk=config.topk, percent=False)

    def build() -> MaskedSupernet:
        return MaskedSupernet(space, data.num_classes, config.cost, latency)

    probe = build()
    check_target(space, probe, config.target)
    cheapest = probe.cost_range()[0]
    out = Path(out_dir)
    if resume and RunFolder(out).has_checkpoint() and (out / CONFIG_FILE).is_file():
        saved = json.loads((out / CONFIG_FILE).read_text())
        if saved.get("space_def") != space.to_dict():
            raise ConfigError(f"{out} is a search of another space ({saved.get('space')!r}, "
                              f"kept in {out / CONFIG_FILE}); resume it with that space")
    engine = SearchEngine(build, task, data, config.engine_config(), config.cost_loss(cheapest),
                          context)
    run_config = {"space": space.name, "space_def": space.to_dict(), "data": data_spec,
                  "num_classes": data.num_classes, "world_size": context.world_size,
                  "search": "dmasking", **config.to_dict()}
    result = engine.run(out, resume, progress, run_config, _describe)
    net = result.model
    record = result.records[0]
    return DMaskingResult(out, list(result.choice), net.choice_names(result.choice),
                          record["arch_def"], record["predicted_cost"], net.cost_unit,
                          result.history, net)


def read_run_config(folder: str | os.PathLike) -> tuple[DMaskingSpace, dict[str, Any],
                                                        DMaskingConfig]:
    """(space, run keys, settings) of a DMasking run folder's ``search_config.json``."""
    saved = json.loads((Path(folder) / CONFIG_FILE).read_text())
    run = {k: saved.pop(k) for k in ("space", "space_def", "data", "num_classes",
                                     "world_size", "search") if k in saved}
    space = DMaskingSpace.from_dict(run["space_def"], f"{folder}/{CONFIG_FILE} space_def")
    return space, run, DMaskingConfig.from_dict(saved, f"{folder}/{CONFIG_FILE}")


__all__ = ["DMaskingConfig", "DMaskingResult", "builtin_configs", "check_target",
           "load_config", "read_run_config", "run_search"]
