"""The search engine on a hand-written supernet (no SearchSpace, no DNAS): a full run folder,
resuming a killed search (also from ``last.prev.pt``), deriving, and the protocol check."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from toy_supernet import CONFIG, DATA, RESOLUTION, ToySupernet, crash_at, toy_engine

from fbnas import build_model
from fbnas.data import open_datasets
from fbnas.errors import ConfigError
from fbnas.search.cost_loss import CostLoss
from fbnas.search.engine import DerivesWithinBand, EngineConfig, SearchableModel, SearchEngine
from fbnas.tasks import ClassificationTask
from fbnas.train import read_checkpoint


@pytest.fixture(scope="module")
def data():
    return open_datasets(DATA, RESOLUTION)


def test_the_toy_follows_the_protocol_and_opts_out_of_band_deriving() -> None:
    toy = ToySupernet()
    assert isinstance(toy, SearchableModel) and not isinstance(toy, DerivesWithinBand)


def test_a_hand_written_supernet_is_searched_end_to_end(tmp_path: Path, data) -> None:
    out = tmp_path / "run"
    result = toy_engine(data).run(out, run_config={"what": "toy"})
    assert sorted(p.name for p in out.iterdir()) == [
        "arch.json", "best.pt", "last.prev.pt", "last.pt", "metrics.jsonl", "samples",
        "search_config.json", "tensorboard", "theta.json"]
    assert json.loads((out / "search_config.json").read_text()) == {"what": "toy"}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3] and lines[0]["theta_loss"] is None
    assert [x["phase"] for x in lines] == ["warm-up", "search", "search"]
    assert lines[-1]["tau"] == pytest.approx(1.0)
    # the task's metric names, in the task's units (% for a default ClassificationTask)
    for key in ("train_loss", "train_top1", "train_top5", "theta_loss", "val_loss",
                "val_top1", "val_top5", "entropy", "expected_cost", "argmax_cost"):
        assert isinstance(lines[-1][key], float), key
    assert lines[-1]["cost_unit"] == "toy_macs" and lines[-1]["val_top5"] > 1.0
    theta = json.loads((out / "theta.json").read_text())
    assert theta["epoch"] == 2 and torch.tensor(theta["theta"]).abs().max() > 1e-3
    assert theta["theta"] == result.model.theta.tolist()
    # best.pt: the first epoch with the best validation top-1 (the task's score)
    scores = [x["val_top1"] for x in lines]
    best = read_checkpoint(out / "best.pt")
    assert best["epoch"] + 1 == scores.index(max(scores)) + 1 == best["best_epoch"]
    assert read_checkpoint(out / "last.prev.pt")["epoch"] == 1
    # the derived architecture and the samples are arch defs fbnas builds
    record = json.loads((out / "arch.json").read_text())
    assert record["choice"] == result.choice == result.model.derive() == lines[-1]["argmax"]
    assert record["derived"] == "argmax" and record["cost_unit"] == "toy_macs"
    assert record["predicted_cost"] == lines[-1]["argmax_cost"]
    samples = sorted((out / "samples").iterdir())
    assert [p.name for p in samples] == ["arch_00.json", "arch_01.json"]
    for path in [out / "arch.json", *samples]:
        model = build_model(json.loads(path.read_text())["arch_def"], num_classes=10)
        assert model(torch.randn(2, 3, RESOLUTION, RESOLUTION)).shape == (2, 10)
    assert [r["choice"] for r in result.records[1:]] == result.samples


def test_a_killed_search_resumes_to_the_same_theta_also_from_the_previous_checkpoint(
        tmp_path: Path, data, caplog: pytest.LogCaptureFixture) -> None:
    full = tmp_path / "full"
    toy_engine(data).run(full)
    for name, spoil in (("killed", False), ("spoiled", True)):
        out = tmp_path / name
        with pytest.raises(RuntimeError, match="planned crash"):
            toy_engine(data).run(out, progress=crash_at(3))
        assert read_checkpoint(out / "last.pt")["epoch"] == 1  # epochs 1 and 2 done
        if spoil:  # a damaged newest checkpoint: resume from the one before (epoch 1)
            (out / "last.pt").write_bytes(b"not a checkpoint")
        with caplog.at_level(logging.WARNING, logger="fbnas.search.run_folder"):
            toy_engine(data).run(out, resume=True)
        assert ("skipping unreadable checkpoint" in caplog.text) == spoil
        for file in ("theta.json", "arch.json", "metrics.jsonl", "samples/arch_01.json"):
            assert (out / file).read_text() == (full / file).read_text(), (name, file)


def test_a_model_without_the_protocol_is_refused_naming_what_it_lacks(data) -> None:
    with pytest.raises(TypeError, match="Linear is not a SearchableModel: it lacks "
                                        "cost_unit, weight_parameters, arch_parameters"):
        SearchEngine(lambda: nn.Linear(2, 2), ClassificationTask(10), data, CONFIG,
                     CostLoss(1.0))


def test_engine_settings_are_checked_and_unknown_keys_named() -> None:
    with pytest.raises(ConfigError, match="alternate must be 'epoch' or 'step'"):
        EngineConfig(alternate="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="need epochs >= 1 and 0 <= warmup_epochs < epochs"):
        EngineConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(ConfigError, match="unknown key 'tau_fnal'; did you mean 'tau_final'"):
        EngineConfig.from_dict({"tau_fnal": 1.0})
    assert EngineConfig.from_dict({"epochs": 4, "warmup_epochs": 1}).schedule().tau_at(0) == 5.0
