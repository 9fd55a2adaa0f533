"""CandidateJob keys and train_candidate on the real trainer: ok, failed, deterministic."""

from __future__ import annotations

import pytest
import torch
from jointexec_helpers import DATA, RECIPE, TINY_ARCH, broken_job, nan_job, tiny_job

from fbnas.cost import arch_cost
from fbnas.errors import ConfigError
from fbnas.search.jointnas.candidate import (
    OUT_OF_MEMORY,
    CandidateJob,
    CandidateResult,
    describe_exception,
    train_candidate,
)


def test_key_is_stable_and_names_what_is_trained() -> None:
    job = tiny_job()
    as_lists = CandidateJob.from_dict({**job.to_dict(), "arch_def": {
        **TINY_ARCH, "blocks": [[list(b) for b in stage] for stage in TINY_ARCH["blocks"]]}})
    assert as_lists.key == job.key                       # tuples and lists are one JSON
    assert job.replace(tag="round-2").key == job.key     # the tag is a label, not the job
    assert job.replace(seed=1).key != job.key
    assert tiny_job(lr=0.2).key != job.key
    assert CandidateJob(TINY_ARCH, RECIPE, DATA + "&seed=1").key != job.key
    assert len(job.key) == 64 and int(job.key, 16) >= 0
    assert CandidateJob.from_dict(job.to_dict()) == job


def test_bad_jobs_are_refused_naming_the_part() -> None:
    with pytest.raises(ConfigError, match="unknown key 'sed'; did you mean 'seed'"):
        CandidateJob.from_dict({**tiny_job().to_dict(), "sed": 1})
    with pytest.raises(ConfigError, match="recipe must be plain JSON data"):
        CandidateJob(TINY_ARCH, {"lr": object()}, DATA)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        CandidateJob(TINY_ARCH, RECIPE, DATA, seed=-1)


def test_train_candidate_is_deterministic_and_reports_cost() -> None:
    job = tiny_job()
    first, second = train_candidate(job), train_candidate(job)
    assert first.status == "ok" and first.error is None and first.key == job.key
    assert first.accuracy == second.accuracy and first.metrics == second.metrics
    assert 0.0 <= first.accuracy <= 1.0
    assert first.accuracy == first.metrics["val_top1"][-1]
    assert len(first.metrics["val_top1"]) == 2 and len(first.metrics["train_loss"]) == 2
    cost = arch_cost(TINY_ARCH, 16, num_classes=10)
    assert (first.metrics["params"], first.metrics["macs"]) == (cost.params, cost.macs)
    other_seed = train_candidate(job.replace(seed=1))
    assert other_seed.metrics["train_loss"] != first.metrics["train_loss"]


def test_failing_candidates_are_results_not_exceptions() -> None:
    broken = train_candidate(broken_job())
    assert broken.status == "failed" and broken.accuracy is None
    assert broken.error.startswith("build model: ArchDefError: stage 1, block 0")
    assert "ir_k9_nope" in broken.error and "\n" not in broken.error
    diverged = train_candidate(nan_job())
    assert (diverged.status, diverged.error) == ("failed", "NaN loss at epoch 1")
    bad_recipe = train_candidate(tiny_job(optimizer="adam"))
    assert bad_recipe.error.startswith("recipe: RecipeError:")
    bad_data = train_candidate(CandidateJob(TINY_ARCH, RECIPE, "digits_hard"))
    assert bad_data.error.startswith("data: DatasetError: unknown dataset 'digits_hard'")


def test_out_of_memory_is_one_reason() -> None:
    # The errors as torch raises them (no GPU here to run out of): every form is one reason.
    cuda = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB "
                                       "(GPU 0; 79.10 GiB total capacity)")
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                       "can't allocate memory: you tried to allocate 86973087744 bytes.")
    for exc in (cuda, cpu, MemoryError()):
        assert describe_exception(exc) == OUT_OF_MEMORY == "out of memory"
    assert describe_exception(RuntimeError("shape mismatch\nmore")) == \
        "RuntimeError: shape mismatch"


def test_timeout_stops_training_at_the_next_step() -> None:
    slow = train_candidate(tiny_job(epochs=50), timeout_s=0.01)
    assert (slow.status, slow.error) == ("failed", "timed out after 0.01 s")
    assert slow.seconds < 10


def test_result_round_trips_and_checks_itself() -> None:
    result = train_candidate(broken_job())
    assert CandidateResult.from_dict(result.to_dict()) == result
    with pytest.raises(ConfigError, match="status must be 'ok' or 'failed'"):
        CandidateResult("k", "done", 0.5, None, 1.0, {})  # type: ignore[arg-type]
