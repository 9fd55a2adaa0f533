"""The predictor learns a rank, pretraining on free proxy labels helps, state round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fbnas.errors import ConfigError
from fbnas.search.jointnas.cost import PopulationCost
from fbnas.search.jointnas.predictor import (
    AccuracyPredictor,
    PredictorConfig,
    evaluate_predictor,
    rank_correlation,
)
from fbnas.search.jointnas.space import load_joint_space

FAST = PredictorConfig(pretrain_samples=2048, pretrain_epochs=20, frozen_epochs=30,
                       unfrozen_epochs=30)


def _synthetic(space, cost, n, seed):
    """A made-up accuracy: bigger networks better, a best lr in the middle, some noise."""
    rng = np.random.default_rng(seed)
    samples = space.sample_batch(n, rng)
    macs = np.log(cost(samples).macs)
    lr = samples[:, space.dim_names.index("recipe.lr")]
    acc = 0.5 * (macs - macs.mean()) / macs.std() - 0.1 * (lr - 2.5) ** 2
    return samples, acc + rng.normal(0, 0.05, n)


def test_predictor_ranks_held_out_candidates_and_pretraining_adds(tmp_path) -> None:
    torch.set_num_threads(1)
    space = load_joint_space("jointnas_digits")
    cost = PopulationCost(space)
    train = _synthetic(space, cost, 40, 0)
    test_x, test_y = _synthetic(space, cost, 200, 1)
    result = evaluate_predictor(space, cost, FAST, train, test_x, test_y,
                                test_y + np.random.default_rng(2).normal(0, 0.05, 200))
    assert result["pretrained"]["kendall"] > 0.5
    assert result["pretrained"]["kendall"] > result["scratch"]["kendall"]
    assert result["noise_ceiling"]["kendall"] > 0.8

    predictor = AccuracyPredictor(space, FAST)
    predictor.pretrain(cost, np.random.default_rng(0))
    predictor.fit(*train)
    path = tmp_path / "predictor.pt"
    torch.save(predictor.state(), path)
    again = AccuracyPredictor.from_state(space, torch.load(path, weights_only=True))
    assert np.allclose(again.predict(test_x), predictor.predict(test_x))
    assert predictor(tuple(test_x[0])) == pytest.approx(predictor.predict(test_x[:1])[0])
    # a Huber fit is bounded by outliers less than a squared one would be: still ranks
    noisy_y = train[1].copy()
    noisy_y[:3] = 0.0
    predictor.fit(train[0], noisy_y)
    assert rank_correlation(predictor.predict(test_x), test_y)["kendall"] > 0.3


def test_predictor_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        PredictorConfig.from_dict({"hiden": 3})
    with pytest.raises(ConfigError, match="head_lr must be > 0"):
        PredictorConfig(head_lr=0)
    space = load_joint_space("jointnas_digits")
    with pytest.raises(ConfigError, match=">= 2"):
        AccuracyPredictor(space, FAST).fit(space.sample_batch(1, np.random.default_rng(0)),
                                          np.array([0.5]))
