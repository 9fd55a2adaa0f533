"""LocalExecutor: spawned workers train candidates; failures and dead workers are results.

One pool of two workers serves the whole module (a spawned worker imports torch and fbnas,
seconds on a loaded machine); the test that kills a worker runs last.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from jointexec_helpers import broken_job, nan_job, process_children, tiny_job

from fbnas.errors import ConfigError
from fbnas.search.jointnas.candidate import train_candidate
from fbnas.search.jointnas.executor import (
    RAY_EXTRA_MESSAGE,
    LocalExecutor,
    import_ray,
    make_executor,
)
from fbnas.search.jointnas.store import ResultsStore, run_jobs


@pytest.fixture(scope="module")
def pool():
    executor = LocalExecutor(workers=2)
    yield executor
    executor.close()


def test_two_workers_train_and_record_failures(pool: LocalExecutor) -> None:
    jobs = [tiny_job(0), broken_job(), tiny_job(1), nan_job()]
    seen = []
    results = pool.run(jobs, lambda job, result: seen.append(job.key))
    assert sorted(seen) == sorted(job.key for job in jobs)       # each once, as it finished
    assert [r.key for r in results] == [job.key for job in jobs]  # returned in job order
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed"]
    assert results[1].error.startswith("build model: ArchDefError")
    assert results[3].error == "NaN loss at epoch 1"
    assert len(pool.worker_pids) == 2 and os.getpid() not in pool.worker_pids
    # the same numbers as training here: a worker is only a place to run train_candidate
    assert results[0].metrics == train_candidate(tiny_job(0)).metrics


def test_resume_trains_only_what_the_store_lacks(pool: LocalExecutor, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results.sqlite")
    stored_when_delivered = []

    def stop_after_first(job, result):
        stored_when_delivered.append(store.get(job.key) == result)
        raise KeyboardInterrupt  # the search is killed while the second job trains

    jobs = [tiny_job(10, "round-1"), tiny_job(11, "round-1", epochs=3)]
    with pytest.raises(KeyboardInterrupt):
        run_jobs(pool, store, jobs, stop_after_first)
    assert stored_when_delivered == [True] and len(store) == 1
    finished = store.keys()
    trained = []
    results = run_jobs(pool, store, [*jobs, tiny_job(12, "round-2")],
                       lambda job, result: trained.append(job.key))
    assert finished[0] not in trained and len(trained) == 2    # the rest, and only the rest
    assert all(r.status == "ok" for r in results) and len(store) == 3


def test_a_worker_that_dies_fails_its_job_and_the_pool_goes_on(pool: LocalExecutor) -> None:
    quick, slow, after = tiny_job(20), tiny_job(21, epochs=400), tiny_job(22)

    def kill_the_slow_one(job, result):
        for pid, index in pool.running().items():
            if index == 1:
                os.kill(pid, signal.SIGKILL)

    results = pool.run([quick, slow, after], kill_the_slow_one)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].error == "worker process died (SIGKILL)"
    assert results[1].key == slow.key


def test_timeout_kills_the_job_then_close_leaves_no_process(pool: LocalExecutor) -> None:
    # One worker is left from the test above: the slow job takes it, the quick one gets a
    # new worker; the slow one is killed at its timeout. Then close stops the idle workers.
    pool.timeout_s = 4.0
    try:
        slow, quick = pool.run([tiny_job(31, epochs=400), tiny_job(30)])
    finally:
        pool.timeout_s = None
    assert (slow.status, slow.error) == ("failed", "timed out after 4 s")
    assert 4.0 <= slow.seconds < 30 and quick.status == "ok"
    assert len(pool.worker_pids) == 1
    pool.close()
    assert process_children() == []
    with pytest.raises(ConfigError, match="closed"):
        pool.run([tiny_job(30)])


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="workers must be an integer >= 1, got 0"):
        make_executor("local", workers=0)
    with pytest.raises(ConfigError, match="unknown executor 'slurm'"):
        make_executor("slurm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--address .* is for --executor ray"):
        make_executor("local", address="auto")


def test_ray_missing_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(ConfigError) as info:
        make_executor("ray")
    assert str(info.value) == RAY_EXTRA_MESSAGE
    assert "pip install 'fbnas[ray]'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        import_ray()
