"""The results store: every trained JointNAS candidate, in one SQLite file in the run folder.

Why SQLite: a result is written the moment it arrives (one small transaction), so a
search killed at any point keeps every finished candidate and resumes without retraining
them; several processes (two searches, a search and a report) read and write one file at
once safely (WAL mode, a busy timeout), which a JSON file rewritten by each process cannot
do. The store is keyed by :attr:`CandidateJob.key` (arch def, recipe, data, seed), so two
searches sharing a store never train the same candidate twice.

Tables (schema version :data:`SCHEMA_VERSION`):

* ``fbnas_store``: ``(name, value)``: ``format = fbnas-jointnas-results``, ``version``.
* ``results``: one row per key: ``status``, ``accuracy``, ``error``, ``seconds``,
  ``metrics`` (JSON), ``job`` (the job as JSON), ``tag`` (of the first put), ``created``
  (UNIX time), ``host``, ``pid``.
* ``tags``: ``(key, tag)``: every tag a key was asked for under (a candidate trained in
  calibration and asked for again in round 2 is listed under both).

A file that is not such a store (another program's database, a corrupt or truncated file,
a store of a newer fbnas) is refused with a message saying what it is, and never written:
the check runs before anything else touches the file. WAL needs a local file system
(not NFS); on a Ray cluster only the driver writes the store.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fbnas.errors import FbnasError
from fbnas.search.jointnas.candidate import CandidateJob, CandidateResult, canonical_json

STORE_FORMAT = "fbnas-jointnas-results"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000

ResultCallback = Callable[[CandidateJob, CandidateResult], None]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fbnas_store (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS results ("
    " key TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),"
    " accuracy REAL, error TEXT, seconds REAL NOT NULL, metrics TEXT NOT NULL,"
    " job TEXT NOT NULL, tag TEXT NOT NULL, created REAL NOT NULL, host TEXT, pid INTEGER)",
    "CREATE TABLE IF NOT EXISTS tags (key TEXT NOT NULL, tag TEXT NOT NULL,"
    " PRIMARY KEY (key, tag))",
)


class StoreError(FbnasError, ValueError):
    """A results store file that cannot be used; the message names the file and why."""


def _refuse(path: Path, why: str) -> StoreError:
    return StoreError(f"{path}: {why}; it was left untouched (choose another results store "
                      f"path, or move the file away)")


def _check_existing(path: Path) -> None:
    """Refuses a non-empty file that is not an fbnas results store, before any write.

    Reads it with a read-only SQLite connection (``mode=ro``: SQLite cannot write through
    it), so a foreign or corrupt file keeps every byte. Never ``open()`` the file from
    Python here: closing any descriptor of a file drops every POSIX lock this process holds
    on it, including the locks of another store open on the same file, which is how SQLite
    databases get corrupted.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise _refuse(path, f"cannot be opened as SQLite ({exc})") from None
    try:
        _check_schema(conn, path, allow_empty=True)
    finally:
        conn.close()


def _check_schema(conn: sqlite3.Connection, path: Path, allow_empty: bool) -> None:
    """Raises StoreError unless ``conn``'s database is an fbnas results store of this
    version. With ``allow_empty``, a database without any table passes: it holds nothing
    to lose, and it is what another process creating the same store has written so far.
    """
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and allow_empty:
            return
        if "fbnas_store" not in tables:
            listed = ", ".join(sorted(tables)) or "none"
            raise _refuse(path, f"an SQLite database of another program, not an fbnas "
                                f"results store (its tables: {listed})")
        meta = dict(conn.execute("SELECT name, value FROM fbnas_store").fetchall())
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise _refuse(path, "not an fbnas results store (not an SQLite database: "
                                "corrupt, truncated, or another kind of file)") from None
        raise _refuse(path, f"a corrupt SQLite database ({exc})") from None
    if meta.get("format") != STORE_FORMAT:
        raise _refuse(path, f"an SQLite database of another program (format "
                            f"{meta.get('format')!r}, expected {STORE_FORMAT!r})")
    version = meta.get("version")
    if version != str(SCHEMA_VERSION):
        raise _refuse(path, f"a results store of schema version {version}, this fbnas "
                            f"reads version {SCHEMA_VERSION} (a newer fbnas wrote it?)")
    missing = {"results", "tags"} - tables
    if missing:
        raise _refuse(path, f"a damaged results store (missing tables: "
                            f"{', '.join(sorted(missing))})")


class ResultsStore:
    """Candidate results in an SQLite file: created if missing, reopened to resume.

    Args:
        path: the store file (``RUN/results.sqlite``); its folder must exist or is made.

    Raises:
        StoreError: the file exists but is not an fbnas results store of this version (a
            foreign or corrupt file); the file is not changed.

    Example:
        >>> store = ResultsStore(tmp / "results.sqlite")          # doctest: +SKIP
        >>> store.put(job, result); store.get(job.key).accuracy   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: a folder, not a results store file")
        if self.path.exists() and self.path.stat().st_size > 0:
            _check_existing(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                         isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the results store ({exc})") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._create()
            # Another process may have written the file between the check and here.
            _check_schema(self._conn, self.path, allow_empty=False)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"{self.path}: cannot open the results store ({exc})") from None
        except StoreError:
            self._conn.close()
            raise
        self._host = socket.gethostname()

    def _create(self) -> None:
        with self._transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute("INSERT OR IGNORE INTO fbnas_store VALUES ('format', ?)",
                               (STORE_FORMAT,))
            self._conn.execute("INSERT OR IGNORE INTO fbnas_store VALUES ('version', ?)",
                               (str(SCHEMA_VERSION),))

    def _transaction(self) -> Any:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error): one writer at a time,
        waiting up to the busy timeout for the other process."""
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *rest: object) -> None:
                store._conn.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # ----------------------------------------------------------------- reading

    def get(self, key: str) -> CandidateResult | None:
        """The stored result of ``key`` (ok or failed), or ``None``."""
        row = self._conn.execute(
            "SELECT key, status, accuracy, error, seconds, metrics FROM results WHERE key = ?",
            (key,)).fetchone()
        return None if row is None else _result(row)

    def __contains__(self, key: object) -> bool:
        return self._conn.execute("SELECT 1 FROM results WHERE key = ?",
                                  (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def keys(self) -> list[str]:
        """Every stored key, in the order stored."""
        return [row[0] for row in self._conn.execute(
            "SELECT key FROM results ORDER BY created, rowid")]

    def results(self, tag: str | None = None) -> list[tuple[CandidateJob, CandidateResult]]:
        """Stored (job, result) pairs in the order stored; with ``tag``, those asked for
        under it (the jobs then carry that tag)."""
        columns = ("r.key, r.status, r.accuracy, r.error, r.seconds, r.metrics, r.job, "
                   "r.tag")
        if tag is None:
            rows = self._conn.execute(f"SELECT {columns} FROM results r "
                                      "ORDER BY r.created, r.rowid")
        else:
            rows = self._conn.execute(f"SELECT {columns} FROM results r JOIN tags t "
                                      "ON r.key = t.key WHERE t.tag = ? "
                                      "ORDER BY r.created, r.rowid", (tag,))
        pairs = []
        for row in rows:
            job = CandidateJob.from_dict({**json.loads(row[6]),
                                          "tag": row[7] if tag is None else tag},
                                         f"{self.path}: stored job {row[0][:12]}")
            pairs.append((job, _result(row[:6])))
        return pairs

    def tags(self) -> list[str]:
        """Every tag in the store, sorted."""
        return [row[0] for row in self._conn.execute("SELECT DISTINCT tag FROM tags "
                                                     "ORDER BY tag")]

    # ----------------------------------------------------------------- writing

    def put(self, job: CandidateJob, result: CandidateResult) -> None:
        """Stores ``result`` for ``job`` (replacing an earlier result of its key) and
        records ``job.tag`` for it; one committed transaction, durable when it returns."""
        if result.key != job.key:
            raise ValueError(f"result key {result.key[:12]} is not the job's {job.key[:12]}")
        job_data = {k: v for k, v in job.to_dict().items() if k != "tag"}
        with self._transaction():
            self._conn.execute(
                "INSERT INTO results (key, status, accuracy, error, seconds, metrics, job, "
                "tag, created, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET status = excluded.status, "
                "accuracy = excluded.accuracy, error = excluded.error, "
                "seconds = excluded.seconds, metrics = excluded.metrics",
                (job.key, result.status, result.accuracy, result.error, result.seconds,
                 json.dumps(result.metrics, sort_keys=True), canonical_json(job_data), job.tag,
                 time.time(), self._host, os.getpid()))
            self._conn.execute("INSERT OR IGNORE INTO tags VALUES (?, ?)", (job.key, job.tag))

    def add_tag(self, job: CandidateJob) -> None:
        """Records that ``job``'s key (already stored) was asked for under ``job.tag``."""
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO tags SELECT key, ? FROM results "
                               "WHERE key = ?", (job.tag, job.key))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[CandidateJob, CandidateResult]]:
        return iter(self.results())


def _result(row: Sequence[Any]) -> CandidateResult:
    key, status, accuracy, error, seconds, metrics = row
    return CandidateResult(key=key, status=status, accuracy=accuracy, error=error,
                           seconds=float(seconds), metrics=json.loads(metrics))


def run_jobs(executor: Any, store: ResultsStore, jobs: Sequence[CandidateJob],
             on_result: ResultCallback | None = None, *, retry_failed: bool = False
             ) -> list[CandidateResult]:
    """Results of ``jobs`` in order: from the store where it holds the key, trained by
    ``executor`` otherwise, each stored the moment it finishes.

    This is what makes a search resumable and shareable: rerun a killed search and the
    finished candidates come from the store (only those running at the kill are lost);
    two searches on one store train each candidate once (whichever asks first; a
    candidate both ask for at the same moment may be trained twice, the results agree).
    A job listed twice is trained once. ``on_result`` is called for trained jobs only, as
    each finishes, after it is stored.

    Args:
        executor: an :class:`~fbnas.search.jointnas.executor.Executor`.
        store: where results are read and written.
        jobs: the candidates wanted.
        on_result: progress callback.
        retry_failed: train again jobs whose stored result is failed (e.g. after a worker
            died of a transient cause); by default a failed result is final like an ok one.
    """
    results: dict[str, CandidateResult] = {}
    todo: list[CandidateJob] = []
    seen: set[str] = set()
    for job in jobs:
        if job.key in seen:
            continue
        seen.add(job.key)
        stored = store.get(job.key)
        if stored is not None and (stored.ok or not retry_failed):
            results[job.key] = stored
            store.add_tag(job)
        else:
            todo.append(job)

    def deliver(job: CandidateJob, result: CandidateResult) -> None:
        store.put(job, result)
        results[job.key] = result
        if on_result is not None:
            on_result(job, result)

    if todo:
        executor.run(todo, deliver)
    return [results[job.key] for job in jobs]
