"""The accuracy predictor of JointNAS (FBNetV3's "neural acquisition function", §3.3).

An MLP encoder maps the architecture features of a candidate
(:meth:`JointSpace.features`, ``part="arch"``) to an embedding. Two heads sit on it:

* a **proxy head** predicting the architecture's log MACs and log params (standardised).
  Its labels are analytic (:class:`~fbnas.search.jointnas.cost.PopulationCost`), so the
  encoder is pretrained on many free samples before any candidate is trained: it learns
  which dimensions make a network big, which is most of what decides its accuracy;
* an **accuracy head** on the embedding concatenated with the recipe features.

Fine-tuning on trained candidates uses the Huber loss (outliers — a diverged recipe — move
it less than a squared loss) in two phases (seed 001: 50 + 50 epochs): the embedding frozen,
the accuracy head trained at ``head_lr``; then everything trained at ``lr`` decaying to
zero (cosine). Every refit starts from the pretrained weights, so a round's refit does not
depend on the previous round's.

Accuracies are standardised on the training labels by their median and a robust spread
(the Huber threshold is in those units); :meth:`AccuracyPredictor.predict`
returns accuracies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from fbnas.errors import ConfigError, check_field_types, reject_unknown_keys
from fbnas.search.jointnas.cost import PopulationCost
from fbnas.search.jointnas.space import JointSpace


@dataclass(frozen=True)
class PredictorConfig:
    """Predictor settings (ALGORITHMS.md §3.3; hidden sizes are UNVERIFIED defaults).

    Attributes:
        hidden: width of the encoder's two layers and of the accuracy head's hidden layer.
        pretrain_samples: analytic (MACs, params) samples the encoder is pretrained on
            (0: no pretraining).
        pretrain_epochs: passes over them.
        frozen_epochs: fine-tuning epochs with the embedding frozen.
        unfrozen_epochs: then epochs of the whole predictor, lr decaying to 0.
        head_lr: lr of the frozen phase (the larger one).
        lr: initial lr of the unfrozen phase.
        batch_size: minibatch of every phase.
        huber_delta: Huber threshold, in standard deviations of the accuracies.
        weight_decay: AdamW decay of every phase.
    """

    hidden: int = 128
    pretrain_samples: int = 4096
    pretrain_epochs: int = 30
    frozen_epochs: int = 50
    unfrozen_epochs: int = 50
    head_lr: float = 3e-3
    lr: float = 1e-3
    batch_size: int = 32
    huber_delta: float = 1.0
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("hidden", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"predictor: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_samples", "pretrain_epochs", "frozen_epochs",
                     "unfrozen_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"predictor: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("head_lr", "lr", "huber_delta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"predictor: {name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "predictor") -> PredictorConfig:
        reject_unknown_keys(data, cls, source)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PredictorNet(nn.Module):
    """Encoder ``(N, A) -> (N, H)`` embedding; proxy head ``(N, H) -> (N, 2)``; accuracy
    head ``(N, H + R) -> (N,)``."""

    def __init__(self, arch_width: int, recipe_width: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(max(arch_width, 1), hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.proxy = nn.Linear(hidden, 2)
        self.accuracy = nn.Sequential(nn.Linear(hidden + recipe_width, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 1))

    def forward(self, arch: torch.Tensor, recipe: torch.Tensor) -> torch.Tensor:
        embedding = self.encoder(arch)
        return self.accuracy(torch.cat([embedding, recipe], dim=1)).squeeze(1)


def _batches(n: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i:i + batch] for i in range(0, n, batch)]


class AccuracyPredictor:
    """Predicts a candidate's accuracy from its sample (see the module docstring).

    Args:
        space: the joint space whose samples it reads.
        config: settings.
        seed: seeds initialisation and minibatch order.
    """

    def __init__(self, space: JointSpace, config: PredictorConfig | None = None,
                 seed: int = 0) -> None:
        self.space = space
        self.config = config or PredictorConfig()
        self.seed = seed
        torch.manual_seed(seed)
        self.net = PredictorNet(space.feature_width("arch"), space.feature_width("recipe"),
                                self.config.hidden)
        self._pretrained = copy.deepcopy(self.net.state_dict())
        self.target_mean, self.target_std = 0.0, 1.0
        self.pretrain_loss: float | None = None
        self.fitted = False

    # ----------------------------------------------------------------- inputs

    def _inputs(self, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        arch = self.space.features(samples, "arch")
        if arch.shape[1] == 0:  # recipe-only search: a constant architecture input
            arch = np.zeros((len(arch), 1), dtype=np.float32)
        return torch.from_numpy(arch), torch.from_numpy(self.space.features(samples, "recipe"))

    # ----------------------------------------------------------------- pretraining

    def pretrain(self, cost: PopulationCost, rng: np.random.Generator) -> float | None:
        """Trains encoder + proxy head on ``pretrain_samples`` analytic (MACs, params)
        labels; returns the final mean squared error (standardised), None if skipped."""
        config = self.config
        if config.pretrain_samples == 0 or config.pretrain_epochs == 0 \
                or self.space.feature_width("arch") == 0:
            return None
        samples = self.space.sample_batch(config.pretrain_samples, rng)
        costs = cost(samples)
        labels = np.stack([np.log(costs.macs.astype(np.float64) + 1),
                           np.log(costs.params.astype(np.float64) + 1)], axis=1)
        labels = (labels - labels.mean(0)) / (labels.std(0) + 1e-9)
        arch, _ = self._inputs(samples)
        target = torch.from_numpy(labels.astype(np.float32))
        params = [*self.net.encoder.parameters(), *self.net.proxy.parameters()]
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        self.net.train()
        loss = torch.tensor(0.0)
        for _ in range(config.pretrain_epochs):
            for idx in _batches(len(samples), 256, generator):
                loss = nn.functional.mse_loss(self.net.proxy(self.net.encoder(arch[idx])),
                                              target[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            final = nn.functional.mse_loss(self.net.proxy(self.net.encoder(arch)), target)
        self.pretrain_loss = float(final)
        self._pretrained = copy.deepcopy(self.net.state_dict())
        return self.pretrain_loss

    # ----------------------------------------------------------------- fitting

    def fit(self, samples: np.ndarray, accuracies: np.ndarray) -> dict[str, float]:
        """Fits the accuracy head, then everything, from the pretrained weights.

        Returns:
            ``{"train_huber": ..., "n": ...}`` (the final training loss).

        Raises:
            ConfigError: fewer than 2 samples, or a length mismatch.
        """
        samples = np.asarray(samples, dtype=np.int64).reshape(-1, self.space.dims)
        accuracies = np.asarray(accuracies, dtype=np.float64)
        if len(samples) != len(accuracies) or len(samples) < 2:
            raise ConfigError(f"the predictor needs >= 2 (sample, accuracy) pairs of equal "
                              f"count, got {len(samples)} and {len(accuracies)}")
        config = self.config
        self.net.load_state_dict(self._pretrained)
        # Centre on the median, scale by the larger of the robust spread (MAD) and half the
        # standard deviation: a few diverged candidates must not squash the others into
        # the Huber loss's quadratic zone, and a history mostly at chance level (MAD ~ 0)
        # must not blow the few good ones up to hundreds of units.
        self.target_mean = float(np.median(accuracies))
        mad = 1.4826 * float(np.median(np.abs(accuracies - self.target_mean)))
        self.target_std = max(mad, 0.5 * float(accuracies.std())) or 1.0
        target = torch.from_numpy(((accuracies - self.target_mean) / self.target_std)
                                  .astype(np.float32))
        arch, recipe = self._inputs(samples)
        generator = torch.Generator().manual_seed(self.seed)
        loss_fn = nn.HuberLoss(delta=config.huber_delta)
        self.net.train()

        def run(params: list[nn.Parameter], lr: float, epochs: int, decay: bool) -> float:
            if epochs == 0:
                return float("nan")
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
            steps = epochs * math.ceil(len(samples) / config.batch_size)
            step, last = 0, float("nan")
            for _ in range(epochs):
                for idx in _batches(len(samples), config.batch_size, generator):
                    if decay:
                        for group in optimizer.param_groups:
                            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                    loss = loss_fn(self.net(arch[idx], recipe[idx]), target[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    step, last = step + 1, loss.item()
            return last

        run(list(self.net.accuracy.parameters()), config.head_lr, config.frozen_epochs,
            False)
        last = run(list(self.net.parameters()), config.lr, config.unfrozen_epochs, True)
        self.net.eval()
        self.fitted = True
        with torch.no_grad():
            final = float(loss_fn(self.net(arch, recipe), target))
        return {"train_huber": final if math.isfinite(final) else last, "n": len(samples)}

    def predict(self, samples: np.ndarray) -> np.ndarray:
        """Predicted accuracies of ``(N, dims)`` samples, ``(N,)`` float64."""
        samples = np.asarray(samples, dtype=np.int64).reshape(-1, self.space.dims)
        arch, recipe = self._inputs(samples)
        self.net.eval()
        with torch.no_grad():
            out = self.net(arch, recipe).double().numpy()
        return out * self.target_std + self.target_mean

    def __call__(self, sample: Any) -> float:
        """The predicted accuracy of one sample: a score function for ``evolve``."""
        return float(self.predict(np.asarray([sample]))[0])

    # ----------------------------------------------------------------- files

    def state(self) -> dict[str, Any]:
        """Everything to restore the predictor (``torch.load(weights_only=True)``-safe)."""
        return {"net": self.net.state_dict(), "pretrained": self._pretrained,
                "target_mean": self.target_mean, "target_std": self.target_std,
                "config": self.config.to_dict(), "seed": self.seed,
                "dim_names": list(self.space.dim_names), "fitted": self.fitted,
                "pretrain_loss": self.pretrain_loss}

    @classmethod
    def from_state(cls, space: JointSpace, state: Mapping[str, Any],
                   source: str = "predictor") -> AccuracyPredictor:
        """The predictor saved by :meth:`state`, for ``space``.

        Raises:
            ConfigError: it was fitted on a space with other dimensions.
        """
        if list(state["dim_names"]) != list(space.dim_names):
            raise ConfigError(f"{source}: the predictor was fitted on a space with other "
                              f"dimensions ({len(state['dim_names'])} vs {space.dims})")
        predictor = cls(space, PredictorConfig.from_dict(state["config"]), int(state["seed"]))
        predictor.net.load_state_dict(state["net"])
        predictor._pretrained = state["pretrained"]
        predictor.target_mean = float(state["target_mean"])
        predictor.target_std = float(state["target_std"])
        predictor.fitted = bool(state["fitted"])
        predictor.pretrain_loss = state.get("pretrain_loss")
        return predictor


# --------------------------------------------------------------------------- rank quality


def rank_correlation(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Kendall τ and Spearman ρ of two score lists (NaN with fewer than 3 or constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"kendall": float("nan"), "spearman": float("nan")}
    return {"kendall": float(stats.kendalltau(a, b).statistic),
            "spearman": float(stats.spearmanr(a, b).statistic)}


def evaluate_predictor(space: JointSpace, cost: PopulationCost, config: PredictorConfig,
                       train: tuple[np.ndarray, np.ndarray], heldout: np.ndarray,
                       heldout_seed0: np.ndarray, heldout_seed1: np.ndarray | None,
                       seed: int = 0) -> dict[str, Any]:
    """Rank quality of the predictor on held-out trained candidates, with and without
    proxy pretraining, beside the noise ceiling.

    The noise ceiling is the rank correlation of the same held-out candidates trained with
    two seeds: no predictor can rank them better than training ranks itself.

    Returns:
        ``{"pretrained": {kendall, spearman}, "scratch": {...}, "noise_ceiling": {...},
        "n_train", "n_heldout"}``.
    """
    results: dict[str, Any] = {"n_train": int(len(train[0])), "n_heldout": int(len(heldout))}
    for label, pretrain in (("pretrained", True), ("scratch", False)):
        settings = config if pretrain else PredictorConfig.from_dict(
            {**config.to_dict(), "pretrain_samples": 0})
        predictor = AccuracyPredictor(space, settings, seed)
        predictor.pretrain(cost, np.random.default_rng(seed))
        predictor.fit(*train)
        results[label] = rank_correlation(predictor.predict(heldout), heldout_seed0)
    results["noise_ceiling"] = (rank_correlation(heldout_seed0, heldout_seed1)
                                if heldout_seed1 is not None else None)
    return results


__all__ = ["AccuracyPredictor", "PredictorConfig", "PredictorNet", "evaluate_predictor",
           "rank_correlation"]
