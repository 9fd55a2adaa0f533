"""The Trainer library: metrics, checkpoints that export and evaluate, custom loops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from train_helpers import TINY_ARCH, tiny_config

import fbnas
from fbnas.data import open_datasets
from fbnas.export.checkpoint import load_model_from_checkpoint
from fbnas.train import (
    Trainer,
    TrainListener,
    find_resumable,
    load_init_weights,
    read_checkpoint,
    set_drop_path,
)
from fbnas.train.checkpoint import LAST, PREVIOUS, atomic_save
from fbnas.zoo.checkpoint import CheckpointError

DATA = "digits?per_class=12"


def _trainer(out: Path | None, **changes: object) -> Trainer:
    config = tiny_config(**changes)
    torch.manual_seed(config.seed)
    data = open_datasets(DATA, config.resolution, config.augment)
    model = fbnas.build_model(TINY_ARCH, num_classes=data.num_classes)
    return Trainer(model, config, data, out_dir=out, tensorboard=False)


def test_fit_writes_metrics_config_and_loadable_checkpoints(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, ema_decay=0.9, dropout=0.1, drop_path=0.1)
    history = trainer.fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history and [m["epoch"] for m in lines] == [1, 2]
    for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "train_images_per_s",
                "val_ema_top1"):
        assert all(isinstance(m[key], float) and math.isfinite(m[key]) for m in lines), key
    assert lines[-1]["step"] == 2 * (120 // 32)  # drop_last global batches
    assert (tmp_path / "config.yaml").read_text() == trainer.config.to_yaml()
    state = read_checkpoint(tmp_path / LAST)  # weights_only
    assert state["epoch"] == 2 and state["config"] == trainer.config.to_dict()
    assert {"model", "model_ema", "optimizer", "scheduler", "rng", "arch_def"} <= set(state)
    # The checkpoint alone rebuilds the trained network (EMA weights) for export.
    model = load_model_from_checkpoint(tmp_path / "best.pt")
    assert model.num_classes == 10 and model.resolution == 16
    trainer.ema.module.eval()
    x = torch.randn(2, 3, 16, 16)
    best = read_checkpoint(tmp_path / "best.pt")
    if best["epoch"] == 2:
        assert torch.equal(model(x), trainer.ema.module(x))


def test_drop_path_ascends_with_depth_and_dropout_keeps_state_keys() -> None:
    model = fbnas.build_model(TINY_ARCH, num_classes=10)
    keys = list(model.state_dict())
    rates = set_drop_path(model, 0.3)
    assert rates == pytest.approx([0.075, 0.15, 0.225, 0.3])
    blocks = list(model.backbone.stages.children())
    assert blocks[1].res_conn.drop_connect_rate == pytest.approx(0.15)
    assert blocks[2].res_conn.drop_connect_rate == pytest.approx(0.225)
    trainer = _trainer(None, dropout=0.5)
    assert list(trainer.model.state_dict()) == keys


class _ArchSteps(TrainListener):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer: Trainer, info) -> None:  # noqa: ANN001
        self.steps += 1


def test_search_code_can_drive_its_own_steps_and_checkpoint_its_state(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, epochs=1)
    theta = torch.nn.Parameter(torch.zeros(3))
    arch_optimizer = torch.optim.Adam([theta], lr=0.1)
    trainer.register_state("arch_optimizer", arch_optimizer)
    listener = _ArchSteps()
    trainer.listeners.append(listener)
    for images, targets in trainer.train_batches():
        trainer.train_step(images, targets)
        theta.grad = torch.ones(3)
        arch_optimizer.step()
    trainer.end_epoch()
    assert listener.steps == trainer.steps_per_epoch
    state = read_checkpoint(tmp_path / LAST)
    assert state["extra"]["arch_optimizer"]["state"][0]["step"] == trainer.steps_per_epoch


def test_corrupted_last_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    last = tmp_path / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        read_checkpoint(last)
    path, state, problems = find_resumable(tmp_path)
    assert path == tmp_path / PREVIOUS and state["epoch"] == 1
    assert "truncated or corrupted" in problems[0]
    resumed = _trainer(tmp_path)
    resumed.resume()
    assert resumed.epoch == 1
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]  # epoch 2 will be redone


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("unpickled!",))


def test_checkpoints_needing_arbitrary_unpickling_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling.*refusing"):
        read_checkpoint(path)


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    _trainer(tmp_path, epochs=1).fit()
    other = _trainer(tmp_path, epochs=1, lr=0.2)
    with pytest.raises(CheckpointError, match="different recipe.*lr: 0.1 -> 0.2"):
        other.resume()


def test_init_from_loads_all_but_a_mismatched_head(tmp_path: Path) -> None:
    source = fbnas.build_model(TINY_ARCH, num_classes=1000)
    atomic_save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
                tmp_path / "ref.pth")
    target = fbnas.build_model(TINY_ARCH, num_classes=10)
    note = load_init_weights(target, read_checkpoint(tmp_path / "ref.pth"))
    assert "but the classifier" in note and "1000 classes" in note
    name = "backbone.stages.xif0_0.conv.weight"
    assert torch.equal(target.state_dict()[name], source.state_dict()[name])
    broken = {k: v for k, v in source.state_dict().items() if "xif1_0" not in k}
    with pytest.raises(CheckpointError, match="missing keys: backbone.stages.xif1_0"):
        load_init_weights(target, broken)
