"""LocalExecutor: spawned workers train candidates; failures and dead workers are results.

One pool of two workers serves the whole module (a spawned worker imports torch and fbnas,
seconds on a loaded machine); the test that kills a worker runs last.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
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
    assert set(pool.worker_pids) <= {pid for pid, _ in process_children()}  # the helper sees them
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


def _search(store_path: str, jobs: list) -> None:
    """A search process: one worker, results into the store (killed by the test). A fork of
    the test process, so its worker is plainly spawned (the forkserver is the parent's):
    this also covers ``start_method="spawn"``."""
    with LocalExecutor(workers=1, start_method="spawn") as executor:
        run_jobs(executor, ResultsStore(store_path), jobs)


def test_a_killed_search_resumes_without_retraining(pool: LocalExecutor,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    jobs = [tiny_job(40, "killed"), tiny_job(41, "killed", epochs=60), tiny_job(42, "killed")]
    # fork: the search process starts at once (fbnas is imported); its worker is spawned.
    search = mp.get_context("fork").Process(target=_search, args=(str(path), jobs))
    search.start()
    deadline = time.monotonic() + 120
    while not (path.exists() and len(ResultsStore(path)) >= 1):
        assert time.monotonic() < deadline and search.is_alive()
        time.sleep(0.1)
    workers = [pid for pid, _ in process_children(search.pid)]
    os.kill(search.pid, signal.SIGKILL)           # the search dies while job 41 trains
    search.join()
    finished = set(ResultsStore(path).keys())
    assert jobs[0].key in finished and jobs[2].key not in finished
    deadline = time.monotonic() + 15              # its orphaned worker notices and exits
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the killed search's worker kept running"
        time.sleep(0.2)
    trained = []
    results = run_jobs(pool, ResultsStore(path), jobs, lambda job, r: trained.append(job.key))
    assert set(trained) == {job.key for job in jobs} - finished    # the rest, only the rest
    assert [r.status for r in results] == ["ok", "ok", "ok"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


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
    # One worker is left from the test above: the quick job takes it, the slow one gets a
    # new worker and is killed at its timeout. Then close stops the idle worker.
    pool.timeout_s = 4.0
    try:
        quick, slow = pool.run([tiny_job(30), tiny_job(31, epochs=400)])
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
    with pytest.raises(ConfigError, match="start_method must be 'forkserver' or 'spawn'"):
        make_executor("local", start_method="fork")  # type: ignore[arg-type]


def test_ray_missing_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(ConfigError) as info:
        make_executor("ray")
    assert str(info.value) == RAY_EXTRA_MESSAGE
    assert "pip install 'fbnas[ray]'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        import_ray()
