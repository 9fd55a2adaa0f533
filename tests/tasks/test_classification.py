"""ClassificationTask: what the trainer used to hard-wire, now asked of the task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

import fbnas
from fbnas.blocks import classifier_head
from fbnas.data import open_datasets
from fbnas.errors import ConfigError
from fbnas.tasks import ClassificationTask, Task, distill_loss, recorded_task, task_from_dict
from fbnas.train import TrainConfig, Trainer

LOGITS = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0],   # label 0: top-1
                       [3.0, 2.0, 1.0, 0.0, -1.0, -2.0],   # label 2: top-3
                       [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])    # label 0: last
LABELS = torch.tensor([0, 2, 0])


def test_metrics_are_sums_then_means() -> None:
    task = ClassificationTask(6, topk=(5, 1, 3))
    assert isinstance(task, Task)
    assert task.metric_names == ("loss", "top1", "top3", "top5")
    sums = task.metric_sums(LOGITS, LABELS)
    assert sums.dtype == torch.float64
    ce = F.cross_entropy(LOGITS, LABELS, reduction="sum").item()
    assert sums.tolist() == pytest.approx([ce, 1, 2, 2])
    metrics = task.metrics(sums * 2, 6)  # two batches summed
    assert metrics == pytest.approx({"loss": ce / 3, "top1": 100 / 3, "top3": 200 / 3,
                                     "top5": 200 / 3})
    assert task.score(metrics) == pytest.approx(100 / 3)


def test_k_is_capped_at_the_class_count() -> None:
    task = ClassificationTask(3)
    sums = task.metric_sums(LOGITS[:, :3], torch.tensor([2, 1, 0]))
    assert sums[2] == 3  # "top5" of 3 classes is every label


def test_objective_follows_the_recipe() -> None:
    task = ClassificationTask(10)
    plain = task.objective(TrainConfig(label_smoothing=0.1))
    assert plain.mix is None
    logits, labels = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    assert plain.loss(logits, labels) == F.cross_entropy(logits, labels, label_smoothing=0.1)
    mixed = task.objective(TrainConfig(mixup=0.2, cutmix=1.0, label_smoothing=0.1))
    assert isinstance(mixed.mix, Mixup) and isinstance(mixed.loss, SoftTargetCrossEntropy)
    assert mixed.mix.num_classes == 10 and mixed.mix.label_smoothing == 0.1
    assert task.loss(logits, labels) == task.arch_loss(logits, labels) == F.cross_entropy(
        logits, labels)


def test_distillation_is_soft_target_cross_entropy_against_the_teachers_softmax() -> None:
    task = ClassificationTask(6)
    student, teacher = torch.randn(3, 6), torch.randn(3, 6)
    expected = -(teacher.softmax(-1) * student.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(task.distill_loss(student, teacher), expected)
    assert torch.equal(task.distill_loss(student, teacher),
                       distill_loss(student, teacher.softmax(-1)))


def test_head_dataset_and_recorded_form() -> None:
    task = ClassificationTask(10)
    assert task.head_spec == classifier_head(10)
    recorded = task.to_dict()
    assert recorded == {"name": "classification", "num_classes": 10, "topk": [1, 5],
                        "score_name": "top1"}
    assert task_from_dict(recorded) == task
    assert recorded_task({"run_info": {"task": recorded}}) == task
    assert recorded_task({"num_classes": 10}) is None  # written before tasks were recorded
    data = task.open_datasets("digits?per_class=2", 16)
    assert data.num_classes == 10
    with pytest.raises(ConfigError, match="the task classifies 7 classes, "
                                          "digits\\?per_class=2 has 10"):
        ClassificationTask(7).check_datasets(open_datasets("digits?per_class=2", 16))


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "clasification"}, "unknown task 'clasification'; did you mean "
                                "'classification'"),
    ({"num_classes": 3}, "must be a dict with a task 'name'"),
    ({"name": "classification", "num_classes": 3, "top_k": [1]},
     "unknown key 'top_k'; did you mean 'topk'"),
    ({"name": "classification", "num_classes": 0}, "num_classes must be an int >= 1"),
    ({"name": "classification", "num_classes": 3, "topk": [1, 1]}, "distinct ints"),
    ({"name": "classification", "num_classes": 3, "score_name": "top2"},
     "score 'top2' is not one of loss, top1, top5"),
])
def test_bad_recorded_tasks_say_what_is_wrong(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        task_from_dict(data)


def test_empty_metrics_stay_finite() -> None:
    task = ClassificationTask(4)
    metrics = task.metrics(torch.zeros(3, dtype=torch.float64), 0)
    assert all(math.isfinite(v) for v in metrics.values())


def test_the_default_task_lets_another_classifier_train_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    arch = {"input_size": 16, "blocks": [[("conv_k3", 8, 2, 1)]]}
    data = open_datasets("digits?per_class=4", 16)
    config = TrainConfig(epochs=1, batch_size=8, resolution=16, workers=0)
    with caplog.at_level("WARNING", logger="fbnas.train.trainer"):
        trainer = Trainer(fbnas.build_model(arch), config, data, tensorboard=False)
    assert trainer.task == ClassificationTask(10)
    assert "the model's head {'op': 'cls_head', 'options': {'num_classes': 1000}}" in caplog.text
    with pytest.raises(ConfigError, match="is not the head of its task"):
        Trainer(fbnas.build_model(arch), config, data, tensorboard=False,
                task=ClassificationTask(10))
