"""NME under each normalisation, failure rate, AUC and the CED curve on hand-made errors;
the two plots write real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fbnas.tasks.landmarks.layout import load_layout
from fbnas.tasks.landmarks.metrics import auc, ced_curve, failure_rate, nme, summarise
from fbnas.tasks.landmarks.plots import plot_ced, plot_landmark_predictions

LAYOUT = load_layout(106)


def faces(n: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 106, 2) * 0.6 + 0.2


def test_nme_nni_is_mean_error_over_pair_distance() -> None:
    true = faces()
    pred = true + torch.tensor([0.03, 0.04])  # every point 0.05 off
    d = (true[:, 35] - true[:, 93]).norm(dim=-1)
    torch.testing.assert_close(nme(pred, true, LAYOUT), 0.05 / d)
    torch.testing.assert_close(nme(pred.reshape(3, 212), true.reshape(3, 212), LAYOUT),
                               0.05 / d)  # the flat network output works as well
    # NNI's compute_nme, written out: sum of distances / (d * L).
    ref = [np.linalg.norm((pred[i] - true[i]).numpy(), axis=1).sum()
           / (np.linalg.norm((true[i, 35] - true[i, 93]).numpy()) * 106) for i in range(3)]
    np.testing.assert_allclose(nme(pred, true, LAYOUT).numpy(), ref, rtol=1e-5)


def test_nme_inter_pupil_and_box() -> None:
    true = torch.zeros(1, 106, 2)
    true[0, :104, 0] = torch.linspace(0.2, 0.6, 104)  # box 0.4 wide ...
    true[0, :104, 1] = torch.linspace(0.1, 0.2, 104)  # ... and 0.1 high: sqrt(W * H) = 0.2
    true[0, 104], true[0, 105] = torch.tensor([0.3, 0.15]), torch.tensor([0.5, 0.15])
    pred = true.clone()
    pred[0, :, 0] += 0.01
    assert nme(pred, true, LAYOUT, "inter_pupil").item() == pytest.approx(0.01 / 0.2)
    assert nme(pred, true, LAYOUT, "box").item() == pytest.approx(0.01 / 0.2, rel=1e-5)
    with pytest.raises(ValueError, match="unknown NME normalisation 'iod'"):
        nme(pred, true, LAYOUT, "iod")
    collapsed = torch.full((1, 106, 2), 0.5)
    assert nme(pred, collapsed, LAYOUT).item() == float("inf")
    with pytest.raises(ValueError, match=r"must be \(N, 106, 2\) or \(N, 212\)"):
        nme(pred[:, :98], true[:, :98], LAYOUT)


def test_failure_rate_auc_and_ced() -> None:
    errors = np.array([0.0, 0.05, 0.2, 0.1])
    assert failure_rate(errors) == pytest.approx(0.25)  # only 0.2 exceeds 0.1
    assert auc(errors) == pytest.approx((0.1 + 0.05 + 0 + 0) / 4 / 0.1)
    x, share = ced_curve(errors, steps=11)
    assert x[0] == 0.0 and x[-1] == pytest.approx(0.1)
    assert share[0] == 0.25 and share[5] == 0.5 and share[-1] == 0.75
    assert np.all(np.diff(share) >= 0)
    # NNI integrates the sampled CED with Simpson's rule; the exact area agrees.
    from scipy.integrate import simpson

    grid = np.arange(0.0, 0.1 + 1e-4, 1e-4)
    rng = np.random.default_rng(0)
    many = rng.uniform(0, 0.15, 500)
    sampled = (many[None, :] <= grid[:, None]).mean(axis=1)
    assert auc(many) == pytest.approx(simpson(sampled, x=grid) / 0.1, abs=2e-3)
    assert summarise(errors) == pytest.approx({"nme": 0.0875, "failure_rate": 0.25,
                                               "auc": 0.375})
    assert auc(np.zeros(3)) == 1.0 and auc(np.full(3, 0.5)) == 0.0
    diverged = np.array([0.0, np.nan, np.inf, 0.05])
    assert failure_rate(diverged) == 0.5 and auc(diverged) == pytest.approx(0.375)
    assert ced_curve(diverged, steps=3)[1].tolist() == [0.25, 0.5, 0.5]


def test_plots_write_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = plot_ced({"searched": rng.uniform(0, 0.1, 20), "baseline": rng.uniform(0, 0.12, 20)},
                    tmp_path / "ced.png")
    assert Image.open(path).size[0] > 100
    true = faces(5)
    path = plot_landmark_predictions(torch.rand(5, 3, 32, 32), true + 0.01, true,
                                     tmp_path / "sub" / "pred.png", titles=["a", "b"])
    assert Image.open(path).size[0] > 200
    assert not list((tmp_path / "sub").glob(".*tmp"))  # written atomically


@pytest.mark.parametrize("norm", ["nni", "inter_pupil", "box"])
def test_nme_ignores_where_the_face_is_and_its_size(norm: str) -> None:
    """NME is a ratio: moving and zooming truth and prediction together leaves it alone."""
    true = faces(4)
    pred = true + 0.02 * torch.randn(4, 106, 2)
    moved = nme(pred * 2.5 + 0.3, true * 2.5 + 0.3, LAYOUT, norm)
    torch.testing.assert_close(moved, nme(pred, true, LAYOUT, norm))
