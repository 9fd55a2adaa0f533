"""LandmarkTask (issue 18 item 3/4): losses per step kind, metric sums, records, data."""

import pytest
import torch

from fbnas.errors import ConfigError
from fbnas.tasks import task_from_dict
from fbnas.tasks.landmarks.layout import load_layout
from fbnas.tasks.landmarks.metrics import auc, failure_rate, nme
from fbnas.tasks.landmarks.models import LandmarkOutputs
from fbnas.tasks.landmarks.task import LandmarkTask
from fbnas.train.config import load_recipe


class CountingAux(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.zeros(x.shape[0], 3)


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    true = torch.rand(n, 106, 2, generator=g) * 0.6 + 0.2
    pred = true + 0.01 * torch.randn(n, 106, 2, generator=g)
    pred[0] += 0.2  # one image far off: a failure
    targets = {"points": true, "angles": torch.zeros(n, 3), "attributes": torch.zeros(n, 6)}
    return pred.reshape(n, -1), targets


def test_metric_sums_match_lmdata_metrics():
    task = LandmarkTask()
    pred, targets = batch()
    sums = task.metric_sums(pred, targets)
    m = task.metrics(sums, 4)
    per_image = nme(pred, targets["points"], load_layout(106))
    assert m["nme"] == pytest.approx(100 * per_image.mean().item())
    assert m["failure_rate"] == pytest.approx(100 * failure_rate(per_image))
    assert m["auc"] == pytest.approx(100 * auc(per_image))
    assert task.score(m) == -m["nme"]
    passing = int(torch.nonzero(per_image <= 0.1)[0])
    pred[passing] = float("nan")  # a diverged network: a failure with no AUC
    nan = task.metrics(task.metric_sums(pred, targets), 4)
    assert nan["failure_rate"] == pytest.approx(m["failure_rate"] + 25.0)
    assert nan["auc"] < m["auc"]


def test_weight_loss_runs_the_aux_net_and_arch_loss_does_not():
    task = LandmarkTask()
    pred, targets = batch()
    aux = CountingAux()
    out = LandmarkOutputs(pred, torch.zeros(4, 16, 8, 8), aux)
    task.arch_loss(out, targets)
    assert aux.calls == 0
    task.loss(out, targets)
    assert aux.calls == 1
    assert task.loss(pred, targets) == task.arch_loss(pred, targets)  # no aux: plain L2


def test_record_round_trip_and_refusals():
    task = LandmarkTask(loss_kind="wing", class_weights=[1.0] * 6, norm="inter_pupil")
    assert task_from_dict(task.to_dict()) == task
    with pytest.raises(ConfigError, match="unknown key 'nmx'"):
        task_from_dict({"name": "landmarks", "nmx": 1})
    with pytest.raises(ConfigError, match="label_smoothing"):
        task.objective(load_recipe("digits"))
    task.objective(load_recipe("landmarks"))


def test_open_datasets_of_a_synthetic_set(tmp_path):
    from fbnas.tasks.landmarks.synthetic import make_landmark_set

    make_landmark_set(tmp_path / "set", 6, seed=1)
    data = LandmarkTask().open_datasets(str(tmp_path / "set"))
    image, target = data.train[0]
    assert image.shape == (3, 112, 112) and target["points"].shape == (106, 2)
    with pytest.raises(ConfigError, match="no such folder"):
        LandmarkTask().open_datasets(str(tmp_path / "nothing"))
