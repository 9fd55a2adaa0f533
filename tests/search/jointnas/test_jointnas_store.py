"""The SQLite results store: round trips, sharing between processes, refusing foreign files."""

from __future__ import annotations

import math
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest
from jointexec_helpers import fake_result, tiny_job

from fbnas.search.jointnas.candidate import CandidateResult
from fbnas.search.jointnas.store import SCHEMA_VERSION, ResultsStore, StoreError, run_jobs


def test_put_get_results_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "run" / "results.sqlite"
    a, b = tiny_job(0, tag="round-1"), tiny_job(1, tag="round-1")
    failed = CandidateResult.failure(tiny_job(2).key, "NaN loss at epoch 3\nmore", 1.5)
    with ResultsStore(path) as store:
        assert store.get(a.key) is None and len(store) == 0
        store.put(a, fake_result(a, 0.25))
        store.put(b, fake_result(b, 0.75))
        store.put(tiny_job(2, tag="calibration"), failed)
        with pytest.raises(ValueError, match="is not the job's"):
            store.put(a, fake_result(b))
    with ResultsStore(path) as store:            # reopened: everything is still there
        assert store.get(a.key) == fake_result(a, 0.25)
        assert store.get(failed.key).error == "NaN loss at epoch 3"
        assert store.keys() == [a.key, b.key, failed.key]
        assert [job for job, _ in store.results("round-1")] == [a, b]
        assert store.tags() == ["calibration", "round-1"]
        (job, result), = store.results("calibration")
        assert job == tiny_job(2, tag="calibration") and result == failed
        assert store.get(a.key).metrics == {"val_top1": [0.25]}
        c = tiny_job(3)  # metrics are free-form: a NaN in them must not stop a search
        store.put(c, CandidateResult(c.key, "ok", 0.5, None, 1.0, {"kendall": float("nan")}))
        assert math.isnan(store.get(c.key).metrics["kendall"])


class RecordingExecutor:
    """Trains nothing: returns fake results and remembers which jobs it was given (the
    store's side of run_jobs is under test here; the real executors have their own)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def run(self, jobs, on_result=None):
        results = []
        for job in jobs:
            self.seen.append(job.key)
            results.append(fake_result(job, 0.5))
            if on_result is not None:
                on_result(job, results[-1])
        return results

    def close(self) -> None:
        pass


def test_run_jobs_skips_stored_keys_and_records_tags(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    first = [tiny_job(0, "calibration"), tiny_job(1, "calibration")]
    executor = RecordingExecutor()
    run_jobs(executor, store, first)
    again = [tiny_job(1, "round-1"), tiny_job(2, "round-1"), tiny_job(2, "round-1")]
    results = run_jobs(executor, store, again)
    assert executor.seen == [first[0].key, first[1].key, again[1].key]   # 1 and 2 once
    assert [r.key for r in results] == [j.key for j in again]
    assert [j.seed for j, _ in store.results("round-1")] == [1, 2]


def test_retry_failed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.sqlite")
    job = tiny_job()
    store.put(job, CandidateResult.failure(job.key, "worker process died (SIGKILL)"))
    executor = RecordingExecutor()
    assert run_jobs(executor, store, [job])[0].status == "failed" and executor.seen == []
    assert run_jobs(executor, store, [job], retry_failed=True)[0].status == "ok"
    assert store.get(job.key).accuracy == 0.5


def _write_many(path: str, seeds: list[int]) -> None:
    store = ResultsStore(path)
    for seed in seeds:
        job = tiny_job(seed, tag="shared")
        store.put(job, fake_result(job, seed / 100))
    store.close()


def test_two_processes_write_one_store(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    # fork: the children only use sqlite (no torch threads), and start in milliseconds.
    context = mp.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(path), list(range(i, 60, 2))))
               for i in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0]
    store = ResultsStore(path)
    assert len(store) == 60
    assert sorted(job.seed for job, _ in store.results("shared")) == list(range(60))
    assert store.get(tiny_job(7).key).accuracy == pytest.approx(0.07)


def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    one, two = ResultsStore(path), ResultsStore(path)
    executor = RecordingExecutor()
    run_jobs(executor, one, [tiny_job(0), tiny_job(1)])
    run_jobs(executor, two, [tiny_job(1), tiny_job(2)])
    assert len(executor.seen) == 3 and len(one) == len(two) == 3


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO photos VALUES (1, 'cat')")
    conn.commit()
    conn.close()


def _newer_store(path: Path) -> None:
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE fbnas_store SET value = ? WHERE name = 'version'",
                 (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(b"\x00garbage\xff" * 300), "not an SQLite database"),
    (lambda p: p.write_text('{"results": []}\n'), "not an SQLite database"),
    (_foreign_sqlite, r"another program, not an fbnas results store \(its tables: photos\)"),
    (_newer_store, f"schema version {SCHEMA_VERSION + 1}, this fbnas reads version"),
])
def test_foreign_or_corrupt_file_is_refused_and_untouched(tmp_path: Path, make,
                                                          message: str) -> None:
    path = tmp_path / "results.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=message) as info:
        ResultsStore(path)
    assert str(path) in str(info.value) and "left untouched" in str(info.value)
    assert path.read_bytes() == before
    # (a read-only look at a WAL-mode database, the newer store, may leave SQLite's -shm)
    assert {p.name for p in tmp_path.iterdir()} <= {"results.sqlite", "results.sqlite-shm",
                                                     "results.sqlite-wal"}


def test_truncated_store_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as store:
        for seed in range(40):
            store.put(tiny_job(seed), fake_result(tiny_job(seed)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    with pytest.raises(StoreError, match="results.sqlite"):
        ResultsStore(path).results()
    assert path.read_bytes() == before
