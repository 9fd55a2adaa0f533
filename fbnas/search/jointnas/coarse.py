"""Stage 1 of JointNAS, coarse: early-stopping calibration, then Sobol rounds (§3.4).

1. **Calibration.** ``n`` feasible candidates are trained with the full recipe and with
   each shorter schedule of ``calibration_epochs``; the rank correlation between each short
   ranking and the full one decides the schedule stage 1 trains with: the shortest that
   reaches ``calibration_threshold`` (0.92 by default) or, if none does, the best one found
   (with a message saying so). The short runs of the chosen schedule open the history.
2. **Rounds.** Each round draws a Sobol pool (``scipy.stats.qmc.Sobol``, ``2**m`` points,
   scrambled with the round's seed), drops what was trained, keeps what meets every
   constraint (no candidate: an error giving the pool's cost range), ranks it with the
   predictor, and trains the top ``batch`` — a share ``explore`` of them drawn at random
   from the rest of the feasible pool, so the predictor also sees where it is unsure —
   with the short schedule; then the predictor is refitted on the whole history.
3. **Held-out check** (``heldout > 0``): random feasible candidates trained with two seeds
   measure the predictor (fitted on everything else, with and without proxy pretraining)
   against the noise ceiling.

Candidates are trained through ``train(jobs) -> results`` (the search passes
``run_jobs(executor, store, ...)``), so a resumed search reuses every finished candidate.
A failed candidate is kept in the history as failed and left out of fitting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.stats import qmc

from fbnas.errors import ConfigError, check_field_types, reject_unknown_keys
from fbnas.search.jointnas.candidate import CandidateJob, CandidateResult
from fbnas.search.jointnas.cost import Constraints, PopulationCost, check_feasible
from fbnas.search.jointnas.predictor import (
    AccuracyPredictor,
    PredictorConfig,
    evaluate_predictor,
    rank_correlation,
)
from fbnas.search.jointnas.space import JointSpace
from fbnas.train.config import TrainConfig

logger = logging.getLogger(__name__)

TrainFn = Callable[[Sequence[CandidateJob]], list[CandidateResult]]
"""Trains jobs, results in job order (``run_jobs(executor, store, jobs)``)."""

RankMetric = Literal["spearman", "kendall"]


@dataclass(frozen=True)
class CoarseConfig:
    """Stage 1 settings (pool size, batch and rounds are UNVERIFIED config values, §3.4).

    Attributes:
        calibration_candidates: ``n`` candidates trained fully and at each short schedule.
        calibration_epochs: the short schedules tried, in epochs (those >= a candidate's
            own epochs are its full schedule).
        calibration_threshold: the rank correlation a short schedule must reach.
        calibration_metric: ``spearman`` or ``kendall``.
        rounds: Sobol rounds.
        pool_log2: ``m``: each pool has ``2**m`` Sobol points (Sobol's balance holds for
            powers of two).
        batch: candidates trained per round.
        explore: share of each batch drawn at random from the feasible pool.
        heldout: candidates trained with two seeds for the predictor check (0: none).
    """

    calibration_candidates: int = 8
    calibration_epochs: tuple[int, ...] = (2, 4, 8)
    calibration_threshold: float = 0.92
    calibration_metric: RankMetric = "spearman"
    rounds: int = 3
    pool_log2: int = 12
    batch: int = 8
    explore: float = 0.25
    heldout: int = 6

    def __post_init__(self) -> None:
        if isinstance(self.calibration_epochs, list):
            object.__setattr__(self, "calibration_epochs", tuple(self.calibration_epochs))
        check_field_types(self)
        if self.calibration_candidates < 3:
            raise ConfigError(f"coarse: calibration_candidates must be >= 3 (a rank "
                              f"correlation needs 3), got {self.calibration_candidates}")
        if not self.calibration_epochs or min(self.calibration_epochs) < 1:
            raise ConfigError(f"coarse: calibration_epochs must be epochs >= 1, got "
                              f"{list(self.calibration_epochs)}")
        if not -1 <= self.calibration_threshold <= 1:
            raise ConfigError(f"coarse: calibration_threshold must be in [-1, 1], got "
                              f"{self.calibration_threshold}")
        if self.rounds < 0 or self.batch < 1 or not 1 <= self.pool_log2 <= 20:
            raise ConfigError(f"coarse: rounds >= 0, batch >= 1 and pool_log2 in [1, 20] "
                              f"are needed, got {self.rounds}, {self.batch}, "
                              f"{self.pool_log2}")
        if not 0 <= self.explore <= 1:
            raise ConfigError(f"coarse: explore must be in [0, 1], got {self.explore}")
        if self.heldout != 0 and self.heldout < 3:
            raise ConfigError(f"coarse: heldout must be 0 or >= 3, got {self.heldout}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "coarse") -> CoarseConfig:
        reject_unknown_keys(data, cls, source)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["calibration_epochs"] = list(self.calibration_epochs)
        return out


@dataclass
class Trained:
    """One trained candidate of the history.

    Attributes:
        sample: the space sample.
        accuracy: measured val top-1 (None: failed).
        epochs: the schedule it was trained with.
        tag: ``calibration-e4``, ``round-2``, ``heldout-s1``...
        round: 0 for calibration, r for round r, -1 held out.
        predicted: the predictor's accuracy before it was trained (None: not predicted).
        macs, params: its cost; latency_ms if a table was given.
        error: why it failed.
    """

    sample: tuple[int, ...]
    accuracy: float | None
    epochs: int
    tag: str
    round: int
    predicted: float | None = None
    macs: int = 0
    params: int = 0
    latency_ms: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sample": list(self.sample)}


@dataclass
class CoarseResult:
    """What stage 1 leaves: the schedule, the history, the fitted predictor, the checks."""

    short_epochs: int
    full_epochs: int
    calibration: list[dict[str, Any]]
    calibration_message: str
    history: list[Trained]
    predictor: AccuracyPredictor
    rounds: list[dict[str, Any]] = field(default_factory=list)
    predictor_check: dict[str, Any] | None = None

    def fitted_history(self) -> list[Trained]:
        """The successful short-schedule runs the predictor is fitted on."""
        return [t for t in self.history if t.accuracy is not None and t.round >= 0
                and t.epochs == self.short_epochs]

    def total_epochs(self) -> int:
        """Training epochs spent (every candidate run, failed ones included)."""
        return int(sum(t.epochs for t in self.history))

    def to_dict(self) -> dict[str, Any]:
        return {"short_epochs": self.short_epochs, "full_epochs": self.full_epochs,
                "calibration": self.calibration,
                "calibration_message": self.calibration_message,
                "history": [t.to_dict() for t in self.history], "rounds": self.rounds,
                "predictor_check": self.predictor_check,
                "total_epochs": self.total_epochs()}


def short_recipe(recipe: TrainConfig, epochs: int) -> TrainConfig:
    """``recipe`` compressed to ``epochs`` (the whole schedule in fewer epochs; warm-up
    at most a quarter of it); unchanged if it is not longer."""
    if epochs >= recipe.epochs:
        return recipe
    return recipe.replace(epochs=epochs, warmup_epochs=min(recipe.warmup_epochs, epochs / 4))


class CoarseSearch:
    """Runs stage 1 (see the module docstring).

    Args:
        space, cost, constraints: what is searched, its cost model and the budgets.
        data: the dataset spec candidates train on.
        train: trains jobs (results in job order).
        config, predictor_config: settings.
        seed: seeds the pools, the exploration draws, the predictor and the candidates.
        progress: called with a one-line message after each step (calibration, rounds).
    """

    def __init__(self, space: JointSpace, cost: PopulationCost, constraints: Constraints,
                 data: str, train: TrainFn, config: CoarseConfig | None = None,
                 predictor_config: PredictorConfig | None = None, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> None:
        self.space, self.cost, self.constraints = space, cost, constraints
        self.data, self.train = data, train
        self.config = config or CoarseConfig()
        self.predictor_config = predictor_config or PredictorConfig()
        self.seed = seed
        self.progress = progress or (lambda message: logger.info("%s", message))
        self.history: list[Trained] = []

    # ----------------------------------------------------------------- helpers

    def pool(self, draw: int) -> tuple[np.ndarray, np.ndarray]:
        """A feasible Sobol pool ``(samples, mask)`` of draw ``draw``: unique samples.

        Raises:
            InfeasibleConstraintError: no point of the pool meets every constraint.
        """
        sobol = qmc.Sobol(self.space.dims, scramble=True, seed=self.seed * 1000 + draw)
        samples = np.unique(self.space.decode_batch(sobol.random_base2(self.config.pool_log2)),
                            axis=0)
        costs = self.cost(samples)
        mask = check_feasible(self.constraints, costs,
                              f"the Sobol pool of 2**{self.config.pool_log2} points")
        return samples, mask

    def job(self, sample: Sequence[int], epochs: int | None, tag: str,
            seed: int | None = None) -> CandidateJob:
        frozen = self.space.freeze(tuple(int(i) for i in sample))
        recipe = frozen.recipe
        assert recipe is not None
        if epochs is not None:
            recipe = short_recipe(recipe, epochs)
        recipe = recipe.replace(seed=self.seed if seed is None else seed)
        return CandidateJob(arch_def=frozen.arch_def, recipe=recipe.to_dict(), data=self.data,
                            seed=self.seed if seed is None else seed, tag=tag)

    def _run(self, samples: Sequence[Sequence[int]], epochs: int | None, tag: str,
             round_: int, predicted: Sequence[float] | None = None,
             seed: int | None = None) -> list[Trained]:
        jobs = [self.job(s, epochs, tag, seed) for s in samples]
        results = self.train(jobs)
        costs = self.cost(np.asarray(samples, dtype=np.int64).reshape(-1, self.space.dims))
        out = []
        for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
            ok = result.status == "ok" and result.accuracy is not None
            out.append(Trained(
                tuple(int(v) for v in samples[i]), float(result.accuracy) if ok else None,
                int(job.recipe["epochs"]), tag, round_,
                None if predicted is None else float(predicted[i]),
                int(costs.macs[i]), int(costs.params[i]),
                None if costs.latency_ms is None else float(costs.latency_ms[i]),
                None if ok else (result.error or "failed")))
        self.history.extend(out)
        return out

    def _fit(self, predictor: AccuracyPredictor, short: int) -> None:
        rows = [t for t in self.history
                if t.accuracy is not None and t.round >= 0 and t.epochs == short]
        if len(rows) >= 2:
            predictor.fit(np.array([t.sample for t in rows]),
                          np.array([t.accuracy for t in rows]))

    # ----------------------------------------------------------------- calibration

    def calibrate(self, samples: np.ndarray) -> tuple[int, int, list[dict[str, Any]], str]:
        """Trains ``samples`` fully and at each short schedule; returns (short epochs,
        full epochs, the table, the message)."""
        config = self.config
        full = self._run(samples, None, "calibration-full", 0)
        full_epochs = max(t.epochs for t in full)
        table = []
        chosen = None
        for epochs in sorted(set(config.calibration_epochs)):
            if epochs >= full_epochs:
                continue
            short = self._run(samples, epochs, f"calibration-e{epochs}", 0)
            pairs = [(s.accuracy, f.accuracy) for s, f in zip(short, full, strict=True)
                     if s.accuracy is not None and f.accuracy is not None]
            corr = rank_correlation(np.array([p[0] for p in pairs]),
                                    np.array([p[1] for p in pairs])) if len(pairs) >= 3 \
                else {"kendall": float("nan"), "spearman": float("nan")}
            table.append({"epochs": epochs, "n": len(pairs), **corr})
            value = corr[config.calibration_metric]
            self.progress(f"calibration: {epochs} of {full_epochs} epochs, "
                          f"{config.calibration_metric} {value:.3f} on {len(pairs)} "
                          f"candidates")
            if math.isfinite(value) and value >= config.calibration_threshold:
                chosen = epochs
                break
        table.append({"epochs": full_epochs, "n": sum(f.accuracy is not None for f in full),
                      "kendall": 1.0, "spearman": 1.0})
        if chosen is not None:
            message = (f"early stopping: {chosen} of {full_epochs} epochs reaches "
                       f"{config.calibration_metric} >= {config.calibration_threshold}")
            return chosen, full_epochs, table, message
        tried = [row for row in table[:-1]
                 if math.isfinite(row[config.calibration_metric])]
        if not tried:
            message = (f"early stopping: no short schedule could be rated (failed or "
                       f"constant candidates); stage 1 trains the full {full_epochs} epochs")
            return full_epochs, full_epochs, table, message
        best = max(tried, key=lambda row: (row[config.calibration_metric], -row["epochs"]))
        message = (f"early stopping: no schedule of {[r['epochs'] for r in tried]} epochs "
                   f"reaches {config.calibration_metric} >= {config.calibration_threshold} "
                   f"against the full {full_epochs}; using the best found, {best['epochs']} "
                   f"epochs ({config.calibration_metric} "
                   f"{best[config.calibration_metric]:.3f})")
        logger.info("%s", message)  # the progress line says it to the user
        return int(best["epochs"]), full_epochs, table, message

    # ----------------------------------------------------------------- the stage

    def run(self) -> CoarseResult:
        config = self.config
        rng = np.random.default_rng(self.seed)
        samples, mask = self.pool(0)
        feasible = samples[mask]
        picks = feasible[rng.permutation(len(feasible))[:config.calibration_candidates]]
        if len(picks) < 3:
            raise ConfigError(f"only {len(picks)} feasible candidate(s) in the first Sobol "
                              f"pool: calibration needs 3; relax the constraints or raise "
                              f"pool_log2")
        short, full_epochs, table, message = self.calibrate(picks)
        self.progress(message)
        # The short runs of the chosen schedule are the first history of the predictor.
        for t in self.history:
            if t.tag == f"calibration-e{short}" or (short == full_epochs
                                                      and t.tag == "calibration-full"):
                t.round = 0
            else:
                t.round = -2  # calibration runs of other schedules: not fitted
        predictor = AccuracyPredictor(self.space, self.predictor_config, self.seed)
        loss = predictor.pretrain(self.cost, np.random.default_rng(self.seed + 1))
        if loss is not None:
            self.progress(f"predictor: proxy head pretrained on "
                          f"{self.predictor_config.pretrain_samples} analytic samples "
                          f"(MSE {loss:.4f})")
        self._fit(predictor, short)
        rounds = []
        for r in range(1, config.rounds + 1):
            rounds.append(self._round(r, predictor, short, rng))
            self._fit(predictor, short)
        check = self._heldout(short, rng) if config.heldout else None
        result = CoarseResult(short, full_epochs, table, message, self.history, predictor,
                              rounds, check)
        return result

    def _round(self, r: int, predictor: AccuracyPredictor, short: int,
               rng: np.random.Generator) -> dict[str, Any]:
        config = self.config
        samples, mask = self.pool(r)
        trained = {t.sample for t in self.history}
        keep = mask & np.array([tuple(int(v) for v in s) not in trained for s in samples])
        feasible = samples[keep]
        predicted = predictor.predict(feasible) if len(feasible) else np.zeros(0)
        order = np.argsort(-predicted, kind="stable")
        n_explore = int(round(config.batch * config.explore))
        top = list(order[:config.batch - n_explore])
        rest = order[config.batch - n_explore:]
        explore = list(rng.choice(rest, size=min(n_explore, len(rest)), replace=False)) \
            if len(rest) else []
        chosen = top + explore
        runs = self._run(feasible[chosen], short, f"round-{r}", r, predicted[chosen])
        ok = [t for t in runs if t.accuracy is not None]
        corr = rank_correlation(np.array([t.predicted for t in ok]),
                                np.array([t.accuracy for t in ok]))
        best = max((t.accuracy for t in self.history if t.accuracy is not None
                    and t.round >= 0), default=float("nan"))
        summary = {"round": r, "pool": int(len(samples)), "feasible": int(mask.sum()),
                   "trained": len(runs), "failed": len(runs) - len(ok),
                   "explore": len(explore), "best_accuracy": best,
                   "batch_best": max((t.accuracy for t in ok), default=float("nan")),
                   "predicted_vs_measured": corr}
        self.progress(f"round {r}/{config.rounds}: pool {len(samples)}, feasible "
                      f"{int(mask.sum())}, trained {len(runs)} ({len(runs) - len(ok)} "
                      f"failed), batch best {summary['batch_best']:.4f}, best so far "
                      f"{best:.4f}, predicted-vs-measured kendall {corr['kendall']:.2f}")
        return summary

    def _heldout(self, short: int, rng: np.random.Generator) -> dict[str, Any] | None:
        """Random feasible candidates trained with seeds s and s+1: the predictor's rank
        quality on them beside the noise ceiling, with and without pretraining."""
        samples, mask = self.pool(10_000)
        trained = {t.sample for t in self.history}
        fresh = [s for s in samples[mask] if tuple(int(v) for v in s) not in trained]
        if len(fresh) < self.config.heldout:
            return None
        picks = np.array(fresh)[rng.permutation(len(fresh))[:self.config.heldout]]
        first = self._run(picks, short, "heldout-s0", -1)
        second = self._run(picks, short, "heldout-s1", -1, seed=self.seed + 1)
        both = [(a, b) for a, b in zip(first, second, strict=True)
                if a.accuracy is not None and b.accuracy is not None]
        fitted = [t for t in self.history if t.accuracy is not None and t.round >= 0
                  and t.epochs == short]
        if len(both) < 3 or len(fitted) < 2:
            return None
        x = np.array([a.sample for a, _ in both])
        check = evaluate_predictor(
            self.space, self.cost, self.predictor_config,
            (np.array([t.sample for t in fitted]), np.array([t.accuracy for t in fitted])),
            x, np.array([a.accuracy for a, _ in both]), np.array([b.accuracy for _, b in both]),
            self.seed)
        self.progress(
            f"predictor on {len(both)} held-out candidates: kendall "
            f"{check['pretrained']['kendall']:.2f} (without proxy pretraining "
            f"{check['scratch']['kendall']:.2f}); noise ceiling (two seeds) "
            f"{check['noise_ceiling']['kendall']:.2f}")
        return check


__all__ = ["CoarseConfig", "CoarseResult", "CoarseSearch", "Trained", "TrainFn",
           "short_recipe"]
