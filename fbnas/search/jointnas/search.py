"""JointNAS end to end: the settings, the run folder, stage 1, stage 2, the final check.

``run_jointnas(config, out)`` runs what ``fbnas search jointnas`` runs:

1. the space (``--arch FILE``: recipe only, the architecture fixed), the cost model and
   the constraints (every one given must hold);
2. stage 1 (:mod:`~fbnas.search.jointnas.coarse`) through ``run_jobs`` on the executor and
   the SQLite results store ``RUN/results.sqlite`` — rerunning the same command resumes:
   finished candidates come from the store, only those running at a kill are retrained;
3. stage 2 (:mod:`~fbnas.search.jointnas.fine`) on the fitted predictor;
4. the best ``final_candidates`` of stage 2 trained with the full recipe; the chosen one
   is the best measured (``arch.json`` + ``recipe.yaml``, ready for ``fbnas train``);
5. the report (:mod:`~fbnas.search.jointnas.report`).

``run_reuse(source_run, constraints, out)`` reruns stage 2 only, on the saved predictor
of an earlier run, for new constraints: no candidate is trained.

The run folder::

    settings.yaml       the resolved settings (a rerun with other settings is refused)
    results.sqlite      every trained candidate (the store; resumes and shares)
    coarse.json         calibration table, history, rounds, predictor check
    predictor.pt        the fitted predictor (torch.load(weights_only=True))
    fine.json           stage 2's best candidates and its stop reason
    final.json          the final candidates trained with the full recipe
    arch.json, recipe.yaml   the chosen architecture and recipe
    report/             report.md, pareto.png, calibration.png
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from fbnas.errors import ConfigError, did_you_mean, reject_unknown_keys
from fbnas.io import atomic_write, atomic_write_text, read_json_or_yaml
from fbnas.search.jointnas.candidate import CandidateJob
from fbnas.search.jointnas.coarse import CoarseConfig, CoarseResult, CoarseSearch
from fbnas.search.jointnas.cost import Constraints, PopulationCost
from fbnas.search.jointnas.executor import Executor, make_executor
from fbnas.search.jointnas.fine import FineConfig, best_feasible, run_fine
from fbnas.search.jointnas.predictor import AccuracyPredictor, PredictorConfig
from fbnas.search.jointnas.space import JointSpace, load_joint_space
from fbnas.search.jointnas.store import ResultsStore, run_jobs

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.yaml"
STORE_FILE = "results.sqlite"
PREDICTOR_FILE = "predictor.pt"
RUNTIME_KEYS = ("executor", "workers", "address", "threads", "timeout_s")
"""Settings that say where candidates train, not what is searched: a resumed run may
change them."""


@dataclass(frozen=True)
class JointNASConfig:
    """Every setting of a JointNAS search (``--config FILE``, ``--preset NAME``).

    Attributes:
        space: a space file or a shipped space name.
        data: the dataset spec candidates train on.
        max_macs, max_params, max_ms: the constraints (every one given must hold).
        lut: the latency table ``--max-ms`` is priced with (with the block latency model
            beside it, ``TABLE.model.json``, if there is one).
        latency_model: a block latency model file (``fbnas lut fit-model``) that prices
            the blocks ``lut`` lacks, or every block without ``lut``.
        arch: an arch-def file: search the recipe only.
        seed: seeds everything.
        executor, workers, address, threads, timeout_s: where candidates train.
        final_candidates: the best of stage 2 trained with the full recipe (0: none; the
            chosen candidate is then the best predicted).
        coarse, fine, predictor: the stages' settings.
    """

    space: str = "jointnas_digits"
    data: str = "digits"
    max_macs: float | None = None
    max_params: float | None = None
    max_ms: float | None = None
    lut: str | None = None
    latency_model: str | None = None
    arch: str | None = None
    seed: int = 0
    executor: Literal["local", "ray"] = "local"
    workers: int = 1
    address: str | None = None
    threads: int = 1
    timeout_s: float | None = None
    final_candidates: int = 2
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)

    def __post_init__(self) -> None:
        _check_scalars(self)
        if self.workers < 1 or self.threads < 1 or self.final_candidates < 0:
            raise ConfigError(f"workers and threads must be >= 1 and final_candidates >= 0, "
                              f"got {self.workers}, {self.threads}, {self.final_candidates}")
        self.constraints()  # checks the budgets
        if self.max_ms is not None and self.lut is None and self.latency_model is None:
            raise ConfigError("--max-ms needs a latency table or a block latency model: "
                              "give --lut FILE and/or --latency-model FILE (fbnas lut "
                              "build --space SPACE --model-sample N builds both)")

    def constraints(self) -> Constraints:
        return Constraints(self.max_macs, self.max_params, self.max_ms)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "jointnas") -> JointNASConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: settings must be a mapping")
        reject_unknown_keys(data, cls, source)
        parts = {"coarse": CoarseConfig, "fine": FineConfig, "predictor": PredictorConfig}
        values = dict(data)
        for name, part in parts.items():
            if name in values and not isinstance(values[name], part):
                raw = values[name] or {}
                if not isinstance(raw, Mapping):
                    raise ConfigError(f"{source}.{name}: must be a mapping")
                values[name] = part.from_dict(raw, f"{source}.{name}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["coarse"] = self.coarse.to_dict()
        out["fine"] = self.fine.to_dict()
        out["predictor"] = self.predictor.to_dict()
        return out

    def with_changes(self, changes: Mapping[str, Any], source: str = "options"
                     ) -> JointNASConfig:
        """A copy with top-level keys or dotted part keys (``coarse.rounds``) changed."""
        data = self.to_dict()
        for key, value in changes.items():
            head, _, rest = key.partition(".")
            if rest and head in ("coarse", "fine", "predictor"):
                data[head] = {**data[head], rest: value}
            elif head not in data:
                raise ConfigError(f"{source}: unknown setting {key!r}"
                                  f"{did_you_mean(key, list(data))}")
            else:
                data[key] = value
        return JointNASConfig.from_dict(data, source)


def _check_scalars(config: JointNASConfig) -> None:
    """Type checks of the top-level settings (values from YAML arrive untyped)."""
    text = ("space", "data", "lut", "latency_model", "arch", "address")
    for name in text:
        value = getattr(config, name)
        if value is not None and not isinstance(value, str) or (name in ("space", "data")
                                                                 and value is None):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    for name in ("seed", "workers", "threads", "final_candidates"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an int, got {value!r}")
    for name in ("max_macs", "max_params", "max_ms", "timeout_s"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, float))):
            raise ConfigError(f"{name} must be a number, got {value!r}"
                              + (" (YAML reads 1e6 as text: write 1.0e6)"
                                 if isinstance(value, str) else ""))
    if config.executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {config.executor!r}")
    for name, part in (("coarse", CoarseConfig), ("fine", FineConfig),
                       ("predictor", PredictorConfig)):
        if not isinstance(getattr(config, name), part):
            raise ConfigError(f"{name} must be a mapping of {part.__name__} settings")


def presets() -> list[str]:
    folder = resources.files("fbnas.search.jointnas") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_settings(source: str | Path | None = None, preset: str | None = None
                  ) -> JointNASConfig:
    """Settings from a file (YAML/JSON), a preset name, or the defaults.

    Raises:
        ConfigError: an unknown preset (listing them), a file that does not parse, or
            unknown keys (naming their path, ``jointnas.coarse.roundz``).
    """
    if preset is not None:
        if preset not in presets():
            raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(presets())})")
        folder = resources.files("fbnas.search.jointnas") / "configs"
        data = yaml.safe_load((folder / f"{preset}.yaml").read_text(encoding="utf-8"))
        config = JointNASConfig.from_dict(data or {}, f"preset {preset}")
        if source is None:
            return config
        base = config.to_dict()
    else:
        base = {}
    if source is None:
        return JointNASConfig()
    path = Path(source)
    try:
        data = read_json_or_yaml(path)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: settings must be a mapping")
    merged = {**base, **{k: v for k, v in data.items() if k not in ("coarse", "fine",
                                                                      "predictor")}}
    for part in ("coarse", "fine", "predictor"):
        if part in data:
            merged[part] = {**base.get(part, {}), **(data[part] or {})}
    return JointNASConfig.from_dict(merged, str(path))


# --------------------------------------------------------------------------- pieces


def open_space(config: JointNASConfig) -> JointSpace:
    """The searched space: the space file, with ``arch`` fixed if given."""
    space = load_joint_space(config.space)
    if config.arch is not None:
        path = Path(config.arch)
        try:
            arch = read_json_or_yaml(path)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"--arch {path}: {exc}") from None
        if isinstance(arch, Mapping) and "arch_def" in arch:
            arch = arch["arch_def"]
        if not isinstance(arch, Mapping) or "blocks" not in arch:
            raise ConfigError(f"--arch {path}: not an arch def (a mapping with 'blocks')")
        space = space.with_fixed_arch(arch)
    return space


def open_cost(space: JointSpace, config: JointNASConfig) -> PopulationCost:
    """The population cost of ``space``, with latency when a table and/or a block latency
    model is given (a model alone prices every block)."""
    from fbnas.cost.lut import LatencyTable

    table = None
    if config.lut is not None:  # with --latency-model, else the model beside it, if any
        table = LatencyTable.load(config.lut, model=config.latency_model)
    elif config.latency_model is not None:
        from fbnas.cost.block_model import BlockLatencyModel

        model = BlockLatencyModel.load(config.latency_model)
        table = LatencyTable(model.device, batch=model.batch)
        table.attach_model(model)
    return PopulationCost(space, table)


def _say_latency_share(cost: PopulationCost, say: Callable[[str], None]) -> None:
    """Says how many of the distinct blocks priced so far the block latency model answered
    (the table the others), so a search on predicted latencies is never silent."""
    share = cost.latency_share()
    if share is not None and share[0]:
        say(f"latency costs: {share[0]} of {share[1]} distinct blocks priced "
            f"predicted by the block latency model, the rest measured")


def _settings_text(config: JointNASConfig, extra: Mapping[str, Any] | None = None) -> str:
    data = config.to_dict()
    if extra:
        data.update(extra)
    return yaml.safe_dump(data, sort_keys=False)


def _check_run_folder(out: Path, config: JointNASConfig) -> None:
    """A folder with another search's settings is refused (runtime keys aside)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    new = config.to_dict()
    differ = sorted(k for k in set(old) | set(new)
                    if k not in RUNTIME_KEYS and old.get(k) != new.get(k))
    if differ:
        raise ConfigError(f"{out} holds a search with other settings ({', '.join(differ)}); "
                          f"rerun with the same settings to resume, or use another --out")


def _save_predictor(predictor: AccuracyPredictor, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(predictor.state(), fh))


def load_predictor(run: Path, space: JointSpace) -> AccuracyPredictor:
    path = run / PREDICTOR_FILE
    if not path.is_file():
        raise ConfigError(f"--reuse {run}: no {PREDICTOR_FILE} (not a finished JointNAS run)")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"--reuse {run}: {PREDICTOR_FILE} is unreadable: {exc}") from None
    return AccuracyPredictor.from_state(space, state, str(path))


def write_choice(out: Path, space: JointSpace, sample: tuple[int, ...]) -> None:
    """``arch.json`` and ``recipe.yaml`` of the chosen candidate (``fbnas train arch.json
    --config recipe.yaml --data DATA``)."""
    import json

    frozen = space.freeze(sample)
    atomic_write_text(out / "arch.json", json.dumps(frozen.arch_def, indent=1) + "\n")
    assert frozen.recipe is not None
    atomic_write_text(out / "recipe.yaml", frozen.recipe.to_yaml())


# --------------------------------------------------------------------------- the search


@dataclass
class JointNASResult:
    """What a search leaves (also written to the run folder)."""

    chosen: tuple[int, ...]
    chosen_values: dict[str, Any]
    predicted: float
    measured: float | None
    coarse: CoarseResult | None
    fine: dict[str, Any]
    final: list[dict[str, Any]]
    total_epochs: int
    trained: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the stage-1 record is in ``coarse.json``, not repeated here)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "coarse"}
        out["chosen"] = list(self.chosen)
        return out


def run_jointnas(config: JointNASConfig, out: str | Path,
                 progress: Callable[[str], None] | None = None,
                 executor: Executor | None = None) -> JointNASResult:
    """Runs the whole search into ``out`` (see the module docstring); resumes from it.

    ``executor`` replaces the one the settings name (it is closed at the end all the
    same): an already started Ray executor, or any object with ``run`` and ``close``.

    Raises:
        ConfigError: bad settings, a run folder of other settings, infeasible
            constraints (with the feasible range), a corrupt or foreign store.
    """
    threads = torch.get_num_threads()
    # The predictor trains here: a fixed thread count keeps its fits, and so the candidates
    # a rerun asks for, identical (a resumed search then finds them all in the store).
    torch.set_num_threads(config.threads)
    try:
        return _run_jointnas(config, Path(out), progress, executor)
    finally:
        torch.set_num_threads(threads)


def _run_jointnas(config: JointNASConfig, out: Path, progress: Callable[[str], None] | None,
                  executor: Executor | None) -> JointNASResult:
    import json

    say = progress or (lambda message: logger.info("%s", message))
    space = open_space(config)
    cost = open_cost(space, config)
    constraints = config.constraints()
    # Infeasible constraints are found before anything is started or written.
    CoarseSearch(space, cost, constraints, config.data, lambda jobs: [], config.coarse,
                 config.predictor, config.seed).pool(0)
    _say_latency_share(cost, say)
    _check_run_folder(out, config)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(out / STORE_FILE)
    try:
        if executor is None:
            executor = make_executor(config.executor, config.workers, config.address,
                                     threads=config.threads, timeout_s=config.timeout_s)
    except BaseException:
        store.close()
        raise
    atomic_write_text(out / SETTINGS_FILE, _settings_text(config))
    try:
        def train(jobs: list[CandidateJob]) -> list:
            return run_jobs(executor, store, jobs)

        coarse = CoarseSearch(space, cost, constraints, config.data, train, config.coarse,
                              config.predictor, config.seed, say).run()
        atomic_write_text(out / "coarse.json", json.dumps(coarse.to_dict(), indent=1))
        _save_predictor(coarse.predictor, out / PREDICTOR_FILE)
        fitted = coarse.fitted_history()
        start = best_feasible(space, cost, constraints, [t.sample for t in fitted],
                              [t.accuracy for t in fitted], config.fine.initial)
        fine = run_fine(space, coarse.predictor, cost, constraints, config.fine,
                        initial=start, seed=config.seed)
        say(f"stage 2: {fine.evolution.generations} generations ({fine.evolution.stop_reason}"
            f"), {len(fine.evolution.evaluated)} candidates scored, best predicted "
            f"{fine.top[0]['predicted']:.4f}")
        _say_latency_share(cost, say)
        atomic_write_text(out / "fine.json", json.dumps(fine.to_dict(), indent=1))
        final = _final(space, config, fine.top, train, coarse, say)
        atomic_write_text(out / "final.json", json.dumps(final, indent=1))
    finally:
        executor.close()
        store.close()
    measured = [f for f in final if f["accuracy"] is not None]
    best = (max(measured, key=lambda f: f["accuracy"]) if measured else fine.top[0])
    chosen = tuple(best["sample"])
    write_choice(out, space, chosen)
    total = coarse.total_epochs() + sum(f["epochs"] for f in final)
    result = JointNASResult(chosen, space.values(chosen), float(best["predicted"]),
                            best.get("accuracy"), coarse, fine.to_dict(), final, total,
                            len(coarse.history) + len(final))
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=1, default=str))
    from fbnas.search.jointnas.report import write_report

    write_report(out, space, cost, constraints, coarse.to_dict(), fine.to_dict(), final,
                 result.to_dict(), config.data)
    say(f"chosen: predicted {result.predicted:.4f}"
        + (f", measured {result.measured:.4f} at the full schedule"
           if result.measured is not None else "")
        + f"; {result.trained} candidate runs, {total} epochs; {out / 'arch.json'}, "
          f"{out / 'recipe.yaml'}")
    return result


def _final(space: JointSpace, config: JointNASConfig, top: list[dict[str, Any]],
           train: Callable, coarse: CoarseResult,
           say: Callable[[str], None]) -> list[dict[str, Any]]:
    """The best ``final_candidates`` of stage 2 trained with the full recipe."""
    picks = top[:config.final_candidates]
    if not picks:
        return []
    search = CoarseSearch(space, PopulationCost(space), Constraints(), config.data, train,
                          config.coarse, config.predictor, config.seed)
    jobs = [search.job(p["sample"], None, "final") for p in picks]
    results = train(jobs)
    final = []
    for pick, job, result in zip(picks, jobs, results, strict=True):
        final.append({**pick, "accuracy": result.accuracy if result.status == "ok" else None,
                      "error": result.error, "epochs": int(job.recipe["epochs"])})
        say(f"final: predicted {pick['predicted']:.4f}, measured "
            + (f"{result.accuracy:.4f}" if result.status == "ok" else f"failed ({result.error})")
            + f" after {job.recipe['epochs']} epochs")
    return final


def run_reuse(source: str | Path, out: str | Path, changes: Mapping[str, Any],
              progress: Callable[[str], None] | None = None) -> JointNASResult:
    """Stage 2 again, on the predictor of the finished run ``source``, with ``changes``
    (new constraints, ``fine.*`` settings) applied; nothing is trained.

    Raises:
        ConfigError: ``source`` is not a finished run, or a change touches what the
            predictor was fitted on (the space, the data, the fixed arch); a new ``lut``
            (another device's table, for ``--max-ms``) is allowed.
    """
    import json

    say = progress or (lambda message: logger.info("%s", message))
    source, out = Path(source), Path(out)
    settings = source / SETTINGS_FILE
    if not settings.is_file():
        raise ConfigError(f"--reuse {source}: no {SETTINGS_FILE} (not a JointNAS run)")
    old = JointNASConfig.from_dict(yaml.safe_load(settings.read_text(encoding="utf-8")),
                                   str(settings))
    # A new latency table is a new constraint (another device), not a new predictor.
    fixed = [k for k in ("space", "data", "arch") if k in changes
             and changes[k] != getattr(old, k)]
    if fixed:
        raise ConfigError(f"--reuse {source}: {', '.join(fixed)} cannot change (the "
                          f"predictor was fitted on the run's); start a new search")
    config = old.with_changes(changes, "--reuse")
    if config.max_ms is not None and config.lut is None and config.latency_model is None:
        raise ConfigError("--max-ms needs a latency table or a block latency model "
                          "(--lut FILE and/or --latency-model FILE)")
    space = open_space(config)
    cost = open_cost(space, config)
    constraints = config.constraints()
    predictor = load_predictor(source, space)
    coarse_path = source / "coarse.json"
    coarse = json.loads(coarse_path.read_text(encoding="utf-8")) if coarse_path.is_file() \
        else {"history": []}
    history = [t for t in coarse["history"] if t["accuracy"] is not None and t["round"] >= 0]
    start = best_feasible(space, cost, constraints, [t["sample"] for t in history],
                          [t["accuracy"] for t in history], config.fine.initial)
    fine = run_fine(space, predictor, cost, constraints, config.fine, initial=start,
                    seed=config.seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SETTINGS_FILE, _settings_text(config, {"reused": str(source)}))
    atomic_write_text(out / "fine.json", json.dumps(fine.to_dict(), indent=1))
    best = fine.top[0]
    chosen = tuple(best["sample"])
    write_choice(out, space, chosen)
    say(f"stage 2 on {source}'s predictor under {constraints.describe()}: "
        f"{fine.evolution.generations} generations, best predicted {best['predicted']:.4f} "
        f"(no training)")
    _say_latency_share(cost, say)
    result = JointNASResult(chosen, space.values(chosen), float(best["predicted"]), None,
                            None, fine.to_dict(), [], 0, 0)
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=1, default=str))
    from fbnas.search.jointnas.report import write_report

    write_report(out, space, cost, constraints, coarse, fine.to_dict(), [], result.to_dict(),
                 config.data)
    return result


__all__ = ["JointNASConfig", "JointNASResult", "load_predictor", "load_settings",
           "open_space", "presets", "run_jointnas", "run_reuse", "write_choice"]

