"""JointNAS end to end on a synthetic executor: stages, resume, reuse, recipe-only, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from jointnas_helpers import SyntheticExecutor

import fbnas
from fbnas.cost import arch_cost
from fbnas.errors import ConfigError
from fbnas.search.evolution import InfeasibleConstraintError
from fbnas.search.jointnas.coarse import CoarseConfig, CoarseSearch
from fbnas.search.jointnas.cost import Constraints, PopulationCost
from fbnas.search.jointnas.predictor import PredictorConfig
from fbnas.search.jointnas.search import JointNASConfig, load_settings, run_jointnas, run_reuse
from fbnas.search.jointnas.space import load_joint_space
from fbnas.search.jointnas.store import ResultsStore, run_jobs
from fbnas.train.config import load_recipe

FAST = {
    "coarse": {"calibration_candidates": 5, "calibration_epochs": [2, 4], "rounds": 2,
               "pool_log2": 9, "batch": 4, "explore": 0.25, "heldout": 4},
    "fine": {"population": 24, "generations": 6, "parents": 4, "patience": 3,
             "initial": 4, "top_k": 3},
    "predictor": {"pretrain_samples": 512, "pretrain_epochs": 10, "frozen_epochs": 20,
                  "unfrozen_epochs": 20},
    "final_candidates": 2,
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _config(**changes) -> JointNASConfig:
    return JointNASConfig.from_dict({"space": "jointnas_digits", "data": "digits", **FAST,
                                     **changes})


def test_search_writes_a_trainable_choice_and_resumes_without_retraining(tmp_path) -> None:
    config = _config(max_macs=6e5)
    executor = SyntheticExecutor()
    messages: list[str] = []
    result = run_jointnas(config, tmp_path / "run", messages.append, executor)
    assert executor.closed
    run = tmp_path / "run"
    # calibration: 5 full + 5 at 2 epochs (the synthetic short ranking is the full one)
    tags = [job.tag for job in executor.trained]
    assert tags.count("calibration-full") == 5 and tags.count("calibration-e2") == 5
    assert "calibration-e4" not in tags
    assert tags.count("round-1") == 4 and tags.count("round-2") == 4
    assert tags.count("final") == 2
    assert any(m.startswith("round 2/2:") for m in messages)
    coarse = json.loads((run / "coarse.json").read_text())
    assert coarse["short_epochs"] == 2
    assert coarse["predictor_check"]["noise_ceiling"] is not None
    arch = json.loads((run / "arch.json").read_text())
    recipe = load_recipe(run / "recipe.yaml")
    assert recipe.epochs == 12 and recipe.resolution == arch["input_size"]
    assert arch_cost(arch, num_classes=10).macs <= 6e5
    fbnas.build_model(arch, num_classes=10)
    assert result.measured is not None and result.total_epochs > 0
    for name in ("report.md", "pareto.png", "calibration.png"):
        assert (run / "report" / name).is_file()
    assert "Early stopping" in (run / "report" / "report.md").read_text()

    again = SyntheticExecutor()
    second = run_jointnas(config, run, None, again)
    assert again.trained == []  # every candidate came from the store
    assert second.chosen == result.chosen

    with pytest.raises(ConfigError, match="holds a search with other settings.*seed"):
        run_jointnas(config.with_changes({"seed": 5}), run, None, SyntheticExecutor())


def test_reuse_reruns_stage_two_for_new_constraints_without_training(tmp_path) -> None:
    run_jointnas(_config(), tmp_path / "run", None, SyntheticExecutor())
    result = run_reuse(tmp_path / "run", tmp_path / "small", {"max_macs": 3e5})
    arch = json.loads((tmp_path / "small" / "arch.json").read_text())
    assert arch_cost(arch, num_classes=10).macs <= 3e5
    assert result.trained == 0 and result.measured is None
    assert (tmp_path / "small" / "report" / "report.md").is_file()
    with pytest.raises(ConfigError, match="data cannot change"):
        run_reuse(tmp_path / "run", tmp_path / "x", {"data": "digits?per_class=5"})
    with pytest.raises(ConfigError, match="not a JointNAS run"):
        run_reuse(tmp_path / "nothing", tmp_path / "x", {})


def test_recipe_only_search_keeps_the_architecture(tmp_path) -> None:
    space = load_joint_space("jointnas_digits")
    arch = space.freeze(space.sample(__import__("random").Random(2))).arch_def
    (tmp_path / "fixed.json").write_text(json.dumps(arch))
    config = _config(arch=str(tmp_path / "fixed.json"),
                     coarse={**FAST["coarse"], "heldout": 0, "rounds": 1})
    executor = SyntheticExecutor()
    run_jointnas(config, tmp_path / "run", None, executor)
    assert all(job.arch_def == json.loads(json.dumps(arch)) for job in executor.trained)
    assert json.loads((tmp_path / "run" / "arch.json").read_text()) == json.loads(
        json.dumps(arch))
    assert len({job.recipe["lr"] for job in executor.trained}) > 1


def test_infeasible_constraints_fail_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(InfeasibleConstraintError, match="--max-macs 1000: the pool's MACs "
                                                        "range from"):
        run_jointnas(_config(max_macs=1000), tmp_path / "run", None, SyntheticExecutor())
    assert not (tmp_path / "run").exists()


def test_calibration_falls_back_to_the_best_schedule_with_a_message(tmp_path) -> None:
    space = load_joint_space("jointnas_digits")
    cost = PopulationCost(space)
    executor = SyntheticExecutor(shuffle_short=True)
    store = ResultsStore(tmp_path / "r.sqlite")
    messages: list[str] = []
    search = CoarseSearch(space, cost, Constraints(), "digits",
                          lambda jobs: run_jobs(executor, store, jobs),
                          CoarseConfig(calibration_candidates=6, calibration_epochs=(2, 4),
                                       rounds=1, pool_log2=8, batch=3, heldout=0),
                          PredictorConfig(pretrain_samples=0, frozen_epochs=5,
                                          unfrozen_epochs=5), 0, messages.append)
    result = search.run()
    assert "no schedule of [2, 4] epochs reaches spearman >= 0.92" in result.calibration_message
    assert result.short_epochs in (2, 4)
    assert [row["epochs"] for row in result.calibration] == [2, 4, 12]
    assert len([t for t in result.history if t.round == 1]) == 3
    # failed candidates stay in the history, out of the fit
    failed = [t for t in result.history if t.accuracy is None]
    assert all(t.error == "NaN loss at epoch 1" for t in failed)
    assert all(t.accuracy is not None for t in result.fitted_history())


def test_settings_refuse_unknown_keys_and_presets_load() -> None:
    preset = load_settings(preset="digits")
    assert preset.space == "jointnas_digits" and preset.workers == 2
    with pytest.raises(ConfigError, match=r"coarse: unknown key 'roundz'"):
        JointNASConfig.from_dict({"coarse": {"roundz": 2}})
    with pytest.raises(ConfigError, match="unknown setting 'fine.populaton'|unknown key"):
        preset.with_changes({"fine.populaton": 3})
    with pytest.raises(ConfigError, match="--max-ms needs a latency table"):
        JointNASConfig(max_ms=5.0)
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        load_settings(preset="fast")
    assert np.isfinite(preset.coarse.calibration_threshold)
