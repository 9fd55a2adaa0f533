"""Checkpoints written before tasks were recorded (no ``task`` key) are classification
runs: they load, evaluate, export and resume as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fbnas
from fbnas.cli.main import main
from fbnas.data import open_datasets
from fbnas.export import load_model_from_checkpoint
from fbnas.tasks import ClassificationTask, recorded_task
from fbnas.train import TrainConfig, Trainer, read_checkpoint
from fbnas.train.checkpoint import atomic_save

DATA = "digits?per_class=8"
ARCH = {"input_size": 16, "basic_args": {"width_divisor": 8}, "blocks": [
    [("conv_k3_hs", 8, 2, 1)], [("ir_k3", 16, 2, 1, {"expansion": 2})]]}


def trainer(out: Path) -> Trainer:
    config = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.1, resolution=16,
                         workers=0, random_crop=False, seed=0)
    torch.manual_seed(0)
    data = open_datasets(DATA, 16)
    return Trainer(fbnas.build_model(ARCH, num_classes=10), config, data, out_dir=out,
                   tensorboard=False)


def old_layout(state: dict) -> dict:
    """The checkpoint as fbnas wrote it before tasks: no ``task``, in it or its run_info."""
    old = {k: v for k, v in state.items() if k != "task"}
    old["run_info"] = {k: v for k, v in state["run_info"].items() if k != "task"}
    return old


def test_a_checkpoint_without_a_task_loads_evaluates_and_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    trainer(run).fit()
    new = read_checkpoint(run / "last.pt")
    assert recorded_task(new) == ClassificationTask(10)
    old_path = tmp_path / "old" / "last.pt"
    old_path.parent.mkdir()
    atomic_save(old_layout(new), old_path)
    assert recorded_task(read_checkpoint(old_path)) is None

    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_model_from_checkpoint(old_path)(x),
                           load_model_from_checkpoint(run / "last.pt")(x))
    outputs = []
    for path in (old_path, run / "last.pt"):
        assert main(["eval", "--ckpt", str(path), "--data", DATA, "--json",
                     "--workers", "0"]) == 0
        result = json.loads(capsys.readouterr().out)
        del result["checkpoint"]
        outputs.append(result)
    assert outputs[0] == outputs[1]
    assert list(outputs[0]["model"]) == ["loss", "top1", "top5", "images"]
    assert outputs[0]["model"]["top1"] == new["history"][-1]["val_top1"]

    resumed = trainer(old_path.parent)
    resumed.resume(old_path)
    assert (resumed.epoch, resumed.best_score) == (1, new["best_top1"])
