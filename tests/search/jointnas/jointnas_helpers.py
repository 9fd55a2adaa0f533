"""A synthetic executor for the JointNAS search tests: results without training.

The search's logic (calibration, rounds, resume, reuse) is tested against it in seconds;
``test_jointnas_cli.py`` runs the same search with real training on the real executor.
Accuracy grows with the network's MACs and the schedule's epochs and falls with the
distance of lr from the optimizer's best lr; a recipe at the space's highest lr with SGD
"diverges" (a failed result), as real candidates do.
"""

from __future__ import annotations

import hashlib
import math

from fbnas.cost import arch_cost
from fbnas.search.jointnas.candidate import CandidateJob, CandidateResult

BEST_LR = {"adamw": 3e-3, "sgd": 2e-2}


def synthetic_accuracy(job: CandidateJob, shuffle_short: bool = False) -> float:
    macs = arch_cost(job.arch_def, num_classes=10).macs
    recipe = job.recipe
    noise = int(hashlib.sha256(job.key.encode()).hexdigest()[:8], 16) / 16**8 - 0.5
    if shuffle_short and recipe["epochs"] < 12:
        return 0.5 + 0.4 * noise  # short runs that say nothing about the full ones
    quality = 0.45 + 0.08 * math.log(macs / 2e5)
    quality -= 0.05 * (math.log10(recipe["lr"]) - math.log10(BEST_LR[recipe["optimizer"]])) ** 2
    quality *= 1 - 0.4 / recipe["epochs"]
    return min(max(quality + 0.001 * noise, 0.0), 1.0)


class SyntheticExecutor:
    """An :class:`~fbnas.search.jointnas.executor.Executor` that computes results."""

    def __init__(self, shuffle_short: bool = False) -> None:
        self.trained: list[CandidateJob] = []
        self.closed = False
        self.shuffle_short = shuffle_short

    def run(self, jobs, on_result=None):
        results = []
        for job in jobs:
            self.trained.append(job)
            if job.recipe["optimizer"] == "sgd" and job.recipe["lr"] >= 0.05:
                result = CandidateResult.failure(job.key, "NaN loss at epoch 1", 0.1)
            else:
                result = CandidateResult(job.key, "ok", synthetic_accuracy(job, self.shuffle_short),
                                         None, 0.1, {})
            if on_result is not None:
                on_result(job, result)
            results.append(result)
        return results

    def close(self) -> None:
        self.closed = True
