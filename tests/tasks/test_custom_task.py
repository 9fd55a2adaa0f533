"""The seam holds: a task defined here (2-output regression, MSE, a "neg_mse" score) plugs
into the trainer, checkpoints, ``fbnas eval``, export, the cost model and the latency tables
without any of them knowing it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import fbnas
from fbnas.arch import HeadSpec
from fbnas.blocks import HEADS, register_head
from fbnas.cli.main import main
from fbnas.cost import arch_cost, count_macs, count_params
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import BuildSettings, LatencyTable, arch_items, measure_table
from fbnas.data import open_datasets
from fbnas.errors import ConfigError
from fbnas.export import load_model_from_checkpoint, to_onnx
from fbnas.search.dnas.supernet import layer_costs
from fbnas.tasks import Objective, Task, register_task, unregister_task
from fbnas.train import TrainConfig, Trainer, read_checkpoint
from fbnas.zoo.checkpoint import CheckpointError

DATA = "digits?per_class=12"
TINY_ARCH = {"input_size": 16, "basic_args": {"width_divisor": 8}, "blocks": [
    [("conv_k3_hs", 8, 2, 1)], [("ir_k3", 8, 1, 2, {"expansion": 2})],
    [("ir_k3_sehsig", 16, 2, 1, {"expansion": 2})]]}
HEAD = "test_pool_linear"
NAME = "test_regression"


def pool_linear(in_channels: int, *, outputs: int, bias: bool = True) -> nn.Module:
    """Global pool -> linear: a regression head."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(in_channels, outputs, bias=bias))


class AngleTargets(Dataset):
    """Digits with each label ``l`` as the point (cos, sin) of angle 2πl/10 to regress."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.images[index]
        angle = 2 * math.pi * int(label) / 10
        return image, torch.tensor([math.cos(angle), math.sin(angle)])


@dataclass(frozen=True)
class RegressionTask:
    """Two numbers per image, mean squared error; the best checkpoint has the least."""

    name: str = NAME
    metric_names: tuple[str, ...] = ("loss", "neg_mse")
    score_name: str = "neg_mse"

    @property
    def head_spec(self) -> HeadSpec:
        return HeadSpec(HEAD, {"outputs": 2})

    def objective(self, recipe: Any) -> Objective:
        if recipe.mixup or recipe.cutmix or recipe.label_smoothing:
            raise ConfigError("regression has no mixup or label smoothing")
        return Objective(F.mse_loss)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, targets)

    arch_loss = loss

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, teacher)

    def metric_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_sample = ((outputs - targets) ** 2).mean(dim=1).to(torch.float64)
        return torch.stack([per_sample.sum(), -per_sample.sum()])

    def metrics(self, sums: torch.Tensor, count: int) -> dict[str, float]:
        loss, neg = sums.tolist()
        return {"loss": loss / max(count, 1), "neg_mse": neg / max(count, 1)}

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["neg_mse"]

    def open_datasets(self, spec: str, resolution: int | None = None,
                      augment: Any = None) -> Any:
        data = open_datasets(spec, resolution, augment)
        return replace(data, train=AngleTargets(data.train), val=AngleTargets(data.val))

    def check_datasets(self, data: Any) -> None:
        if not isinstance(data.val, AngleTargets):
            raise ConfigError("regression needs its own datasets (task.open_datasets)")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


def tiny_config(**changes: Any) -> TrainConfig:
    """Quick epochs on 16x16 digits, without label smoothing (regression has none)."""
    base = dict(epochs=2, batch_size=32, optimizer="sgd", lr=0.1, weight_decay=1e-4,
                label_smoothing=0.0, random_crop=False, resolution=16, workers=0, seed=0)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(autouse=True, scope="module")
def registered() -> Iterator[None]:
    register_head(HEAD)(pool_linear)
    register_task(NAME, lambda data, source: RegressionTask())
    try:
        yield
    finally:
        HEADS.remove(HEAD)
        unregister_task(NAME)


def test_a_regression_task_trains_checkpoints_evaluates_and_exports(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    task = RegressionTask()
    assert isinstance(task, Task)
    config = tiny_config(epochs=3, ema_decay=0.5)
    data = task.open_datasets(DATA, config.resolution, config.augment)
    torch.manual_seed(config.seed)
    model = fbnas.build_model(TINY_ARCH, head=task.head_spec)
    assert model.num_classes is None and model.head_spec == task.head_spec
    trainer = Trainer(model, config, data, out_dir=tmp_path, tensorboard=False, task=task)
    history = trainer.fit()

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history and len(lines) == 3
    assert [k for k in lines[0] if k.startswith(("val_", "best_"))] == [
        "val_loss", "val_neg_mse", "val_ema_loss", "val_ema_neg_mse", "best_neg_mse"]
    for line in lines:
        assert line["val_loss"] == pytest.approx(-line["val_neg_mse"])
    # best.pt follows the task's score of the EMA weights (higher is better).
    scores = [m["val_ema_neg_mse"] for m in lines]
    best_epoch = scores.index(max(scores)) + 1
    assert lines[-1]["best_neg_mse"] == max(scores)
    best = read_checkpoint(tmp_path / "best.pt")
    assert (best["epoch"], best["best_neg_mse"]) == (best_epoch, max(scores))
    assert best["task"] == best["run_info"]["task"] == {"name": NAME}
    assert json.loads((tmp_path / "run.json").read_text())["task"] == {"name": NAME}

    # The checkpoint alone rebuilds the network with its task's head (EMA weights).
    rebuilt = load_model_from_checkpoint(tmp_path / "last.pt")
    assert rebuilt.head_spec == task.head_spec
    x = torch.randn(3, 3, 16, 16)
    trainer.ema.module.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trainer.ema.module(x))
    assert to_onnx(rebuilt, tmp_path / "net.onnx", (1, 3, 16, 16),
                   timing_runs=0).max_abs_diff < 1e-3

    # fbnas eval reads the task from the checkpoint: its metrics, its datasets.
    assert main(["eval", "--ckpt", str(tmp_path / "last.pt"), "--data", DATA, "--json",
                 "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_ema"]["neg_mse"] == pytest.approx(lines[-1]["val_ema_neg_mse"],
                                                           rel=1e-5)
    assert result["model"]["images"] == len(data.val)

    # Resuming with another task is refused.
    other = Trainer(fbnas.build_model(TINY_ARCH, num_classes=10), config,
                    open_datasets(DATA, 16), out_dir=tmp_path, tensorboard=False)
    with pytest.raises(CheckpointError, match="trained for another task"):
        other.resume()


def test_the_trainer_refuses_a_head_or_recipe_the_task_does_not_fit() -> None:
    task = RegressionTask()
    data = task.open_datasets(DATA, 16)
    with pytest.raises(ConfigError, match="is not the head of its task"):
        Trainer(fbnas.build_model(TINY_ARCH, num_classes=2), tiny_config(), data, task=task)
    with pytest.raises(ConfigError, match="no mixup or label smoothing"):
        Trainer(fbnas.build_model(TINY_ARCH, head=task.head_spec),
                tiny_config(label_smoothing=0.1), data, task=task)


def test_the_tasks_head_is_costed_and_latency_tabled_from_its_spec(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    head = RegressionTask().head_spec
    model = fbnas.build_model(TINY_ARCH, head=head)
    cost = arch_cost(TINY_ARCH, 16, head=head)
    assert (cost.params, cost.macs) == (count_params(model), count_macs(model, 16))
    channels = model.backbone.out_channels  # 16, on a 4x4 map
    assert (cost.head_params, cost.head_macs, cost.output_shape) == (
        channels * 2 + 2, channels * 2, (1, 2))
    assert layer_costs("fbnet_v1_tiny", "macs", resolution=16, head=head).fixed == \
        layer_costs("fbnet_v1_tiny", "macs", resolution=16, num_classes=2).fixed

    items = arch_items(TINY_ARCH, 16, None, head=head)
    assert items.keys[-1] == f"{HEAD}|{channels}x4x4|2"
    no_bias = HeadSpec(HEAD, {"outputs": 2, "bias": False})
    assert arch_items(TINY_ARCH, 16, None, head=no_bias).keys[-1] == \
        f"{HEAD}|{channels}x4x4|2|bias=false"
    table = measure_table(LatencyTable(DeviceInfo.current()), [items],
                          BuildSettings(rounds=1, budget_s=0.01, extra_rounds=1),
                          calibration=[items])
    prediction = table.predict(items)
    assert prediction.block_ms[-1][0] == "head" and prediction.block_ms[-1][1] > 0
    assert len(prediction.block_ms) == len(items.keys)

    # fbnas latency takes the head as data too (and refuses it beside --num-classes).
    table.save(tmp_path / "lut.json")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_ARCH))
    head_json = json.dumps(head.to_dict())
    args = ["latency", str(tmp_path / "tiny.json"), "--lut", str(tmp_path / "lut.json"),
            "-r", "16", "--head", head_json]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["predicted_ms"] == round(prediction.predicted_ms, 4)
    assert main([*args, "--num-classes", "3"]) == 2
    assert "give --num-classes or --head, not both" in capsys.readouterr().err
