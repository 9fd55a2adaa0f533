"""Where JointNAS candidates train: local worker processes, or a Ray cluster.

A search hands a batch of :class:`CandidateJob` to an :class:`Executor` and gets one
:class:`CandidateResult` per job back, each as soon as it finishes (``on_result``), so the
results store holds it before the next one ends: a killed search loses at most the jobs
that were running. Executors never raise for a candidate: a candidate that fails, or whose
worker process dies (a segfault, the OOM killer, ``kill -9``), is a failed result and the
other jobs go on.

* :class:`LocalExecutor` (``--workers N``): N worker processes on this machine that are
  never forks of the search process (a forked child of a process with torch threads or
  CUDA can deadlock): by default forked from a *forkserver*, a fresh process spawned once
  that has imported torch and fbnas and run nothing (so a worker starts in milliseconds
  instead of re-importing torch for seconds, also after a worker died), or plainly
  spawned (``start_method="spawn"``). One torch thread each by default, kept alive between
  batches.
* :class:`RayExecutor` (``--executor ray --address auto|HOST:PORT``): one Ray task per job
  (``num_cpus=1``, optionally ``num_gpus``), on a running cluster or a local instance it
  starts and stops itself. Ray is an optional extra: ``pip install 'fbnas[ray]'``.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, Protocol

from fbnas.errors import ConfigError, FbnasError
from fbnas.search.jointnas.candidate import (
    OUT_OF_MEMORY,
    CandidateJob,
    CandidateResult,
    describe_exception,
    one_line,
    train_candidate,
)

logger = logging.getLogger(__name__)

ResultCallback = Callable[[CandidateJob, CandidateResult], None]
ExecutorKind = Literal["local", "ray"]
StartMethod = Literal["forkserver", "spawn"]

WORKER_PRELOAD = ("fbnas.search.jointnas.executor", "fbnas.data", "fbnas.train",
                  "timm.optim", "timm.scheduler", "timm.utils", "timm.data", "timm.loss",
                  "sklearn.datasets", "sklearn.model_selection")
"""What the forkserver imports once for every worker it forks: fbnas's training and the
libraries it imports lazily on a first job (scikit-learn for digits, timm's optimizers:
seconds each on a loaded machine)."""
EXECUTOR_KINDS: tuple[str, ...] = ("local", "ray")

READY = "ready"
"""A worker's first message: it started and imported fbnas (a death before it is a broken
environment, not a candidate's failure)."""

RAY_EXTRA_MESSAGE = "--executor ray needs the ray extra: pip install 'fbnas[ray]'"


class WorkerStartError(FbnasError, RuntimeError):
    """A local worker process died before it could train anything (a broken environment,
    a main script the spawned process cannot re-import): no candidate is blamed for it."""


class RayTaskFailed(FbnasError, RuntimeError):
    """A Ray task raised instead of returning a result: the nodes' environment is broken
    (fbnas not importable there), not the candidate."""


class Executor(Protocol):
    """Trains candidates somewhere; what the search needs of a backend."""

    def run(self, jobs: Sequence[CandidateJob], on_result: ResultCallback | None = None
            ) -> list[CandidateResult]:
        """Trains ``jobs``; returns their results in job order, calling ``on_result`` (in
        the calling thread) as each finishes."""
        ...

    def close(self) -> None:
        """Stops what the executor started (worker processes, a local Ray instance)."""
        ...


def make_executor(kind: ExecutorKind = "local", workers: int = 1, address: str | None = None,
                  *, device: str = "cpu", threads: int = 1,
                  timeout_s: float | None = None, num_gpus: float = 0.0,
                  start_method: StartMethod | None = None) -> Executor:
    """The executor ``--executor KIND`` names.

    Args:
        kind: ``local`` (worker processes here) or ``ray``.
        workers: local worker processes; for Ray, the CPUs of a local instance it starts
            (ignored when joining a cluster: the cluster decides).
        address: Ray only: ``auto`` (the cluster ``ray start`` runs on this machine),
            ``HOST:PORT`` (a head node), or ``None`` (start a local instance).
        device: where each candidate trains (``cpu``, ``cuda``); with Ray and a GPU device
            give ``num_gpus`` so Ray places one job per GPU share.
        threads: torch threads per job.
        timeout_s: a job running longer is stopped and recorded as failed (``None``: none).
        num_gpus: Ray only: GPUs each job reserves (0.5: two jobs per GPU).
        start_method: local only: how workers start (see :class:`LocalExecutor`).

    Raises:
        ConfigError: an unknown kind, bad numbers, a Ray address without ``--executor
            ray``, or ``ray`` when Ray is not installed (naming the extra to install).
    """
    if kind not in EXECUTOR_KINDS:
        raise ConfigError(f"unknown executor {kind!r} (known: {', '.join(EXECUTOR_KINDS)})")
    if kind == "local":
        if address is not None:
            raise ConfigError(f"--address {address} is for --executor ray; the local "
                              f"executor runs on this machine")
        return LocalExecutor(workers, device=device, threads=threads, timeout_s=timeout_s,
                             start_method=start_method)
    return RayExecutor(address, num_cpus=workers if address is None else None, device=device,
                       threads=threads, timeout_s=timeout_s, num_gpus=num_gpus)


def _check_positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


# --------------------------------------------------------------------------- local workers


def _worker_main(conn: Connection, device: str, threads: int, parent_pid: int) -> None:
    """A worker process: trains the jobs it is sent until told to stop (``None``) or its
    parent is gone (a killed search must not leave workers training for nobody)."""
    import torch

    import fbnas.data  # noqa: F401 - what training needs, imported before READY so that
    import fbnas.train  # noqa: F401 - a job's time (and timeout) is training, not imports

    # Ctrl-C is the search process's to handle (it stops the batch; close() or its exit
    # ends the workers): N workers printing N KeyboardInterrupt tracebacks helps nobody.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (torch allows it once per process)
        pass

    first_ppid = os.getppid()  # the search process (spawn) or the forkserver

    def watch_parent() -> None:
        # The forkserver exits when the search process dies, so either way the parent
        # changes; the kill(0) probe also catches a search process gone but not reaped.
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            if os.getppid() != first_ppid:
                os._exit(1)
    threading.Thread(target=watch_parent, daemon=True).start()
    conn.send(READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, job_data = message
        result = train_candidate(CandidateJob.from_dict(job_data), device=device,
                                 threads=threads)
        try:
            conn.send((index, result.to_dict()))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection
    index: int | None = None      # the job it is training
    started: float = 0.0          # when that job was sent
    ready: bool = False           # it sent READY
    abandoned: bool = False       # its job's run() ended early: discard the result

    @property
    def pid(self) -> int | None:
        return self.process.pid


_LIVE_EXECUTORS: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _close_live_executors() -> None:
    # Runs before multiprocessing's own exit handler (registered earlier, so run later),
    # which would otherwise wait forever for the idle, non-daemonic workers.
    for executor in list(_LIVE_EXECUTORS):
        executor.close()


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process died ({name})"
    return f"worker process died (exit code {exitcode})"


class LocalExecutor:
    """Trains candidates in ``workers`` processes on this machine.

    Each worker trains one job at a time, so the executor always knows which job a worker
    holds: when a worker dies that job is failed ("worker process died (SIGSEGV)") and a
    fresh worker takes its place for the jobs left. Workers are non-daemonic so a
    candidate's own data-loading workers (``recipe.workers > 0``) can start; they stop on
    :meth:`close`, at interpreter exit, or within a second of their parent dying.

    Args:
        workers: processes; each takes one core with ``threads=1``.
        device: where candidates train.
        threads: torch threads per worker.
        timeout_s: a job running longer has its worker killed and is recorded as failed
            ("timed out after T s"); counted from when the worker starts the job (not
            from its own start-up: importing torch takes seconds).
        start_method: ``forkserver`` (default where the platform has it: workers forked
            from a clean server that imported fbnas once) or ``spawn`` (each worker a new
            interpreter importing torch itself). Neither forks the search process. A
            search process that is itself a fork of a process that used the forkserver
            must use ``spawn`` (Python's forkserver belongs to the process that started it).
    """

    def __init__(self, workers: int = 1, *, device: str = "cpu", threads: int = 1,
                 timeout_s: float | None = None,
                 start_method: StartMethod | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        _check_positive("threads", threads)
        _check_positive("timeout_s", timeout_s, allow_none=True)
        self.workers = workers
        self.device = device
        self.threads = int(threads)
        self.timeout_s = timeout_s
        if start_method is None:
            start_method = ("forkserver" if "forkserver" in mp.get_all_start_methods()
                            else "spawn")
        if start_method not in ("forkserver", "spawn"):
            raise ConfigError(f"start_method must be 'forkserver' or 'spawn', got "
                              f"{start_method!r}")
        self.start_method = start_method
        self._context = mp.get_context(start_method)
        if start_method == "forkserver":
            self._context.set_forkserver_preload(list(WORKER_PRELOAD))
        self._pool: list[_Worker] = []
        self._closed = False
        _LIVE_EXECUTORS.add(self)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring, and the tests' ``kill``)."""
        return [w.pid for w in self._pool if w.pid is not None and w.process.is_alive()]

    def running(self) -> dict[int, int]:
        """``{worker pid: index of the job it trains}`` for the busy workers."""
        return {w.pid: w.index for w in self._pool if w.index is not None and w.pid}

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, name="fbnas-candidate-worker",
            args=(child_conn, self.device, self.threads, os.getpid()), daemon=False)
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn)

    def _retire(self, worker: _Worker, kill: bool) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()
        self._pool.remove(worker)

    def run(self, jobs: Sequence[CandidateJob], on_result: ResultCallback | None = None
            ) -> list[CandidateResult]:
        """Trains ``jobs`` on the workers; results in job order, ``on_result`` as each ends.

        An exception from ``on_result`` (or Ctrl-C) stops the batch and propagates; results
        delivered before it stay delivered. Workers still training are left to finish
        (their results are dropped) so the pool stays warm for the next batch; ``close``
        (or the search process's exit) kills them. Workers ignore SIGINT: a Ctrl-C is the
        search process's to handle.
        """
        if self._closed:
            raise ConfigError("this LocalExecutor is closed")
        jobs = list(jobs)
        results: list[CandidateResult | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        pending.reverse()  # pop() from the end takes jobs in order
        done = 0
        try:
            while done < len(jobs):
                self._fill(pending, jobs)
                for index, result in self._collect(jobs):
                    results[index] = result
                    done += 1
                    if on_result is not None:
                        on_result(jobs[index], result)
        except BaseException:
            for worker in self._pool:
                if worker.index is not None:
                    worker.abandoned = True
            raise
        return [r for r in results if r is not None]

    def _fill(self, pending: list[int], jobs: Sequence[CandidateJob]) -> None:
        """Gives every idle worker a job, starting workers up to ``workers``."""
        while pending:
            idle = next((w for w in self._pool if w.index is None), None)
            if idle is None:
                if len(self._pool) >= self.workers:
                    return
                idle = self._start_worker()
                self._pool.append(idle)
            index = pending.pop()
            try:
                idle.conn.send((index, jobs[index].to_dict()))
            except (BrokenPipeError, OSError):
                pending.append(index)  # a worker that died while idle: replace it
                self._retire(idle, kill=True)
                continue
            idle.index, idle.started = index, time.monotonic()

    def _collect(self, jobs: Sequence[CandidateJob]) -> list[tuple[int, CandidateResult]]:
        """Waits for at least one finished, dead or timed-out job; returns their results."""
        busy = [w for w in self._pool if w.index is not None]
        if not busy:
            return []
        waits: list[Any] = [w.conn for w in busy] + [w.process.sentinel for w in busy]
        ready = set(wait(waits, timeout=self._wait_timeout(busy)))
        finished: list[tuple[int, CandidateResult]] = []
        now = time.monotonic()
        for worker in busy:
            index = worker.index
            assert index is not None
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    pass  # died after all: handled below with its exit code
                else:
                    if message == READY:
                        # the job's time counts from here, not from the worker's start-up
                        worker.ready, worker.started = True, time.monotonic()
                        continue
                    got_index, data = message
                    assert got_index == index
                    worker.index = None
                    if worker.abandoned:
                        worker.abandoned = False
                    else:
                        finished.append((index, CandidateResult.from_dict(data)))
                    continue
            if worker.conn in ready or worker.process.sentinel in ready:
                if worker.conn not in ready and worker.conn.poll():
                    continue  # a message (or EOF) still to read: the next round reads it
                worker.process.join(timeout=5)
                message = _death_message(worker.process.exitcode)
                if worker.abandoned:
                    self._retire(worker, kill=True)
                    continue
                if not worker.ready:
                    self._retire(worker, kill=True)
                    raise WorkerStartError(
                        f"a candidate worker process failed to start: {message}; "
                        f"its error is printed above. Candidates need a worker that can "
                        f"import fbnas (run the search from a script file or the fbnas "
                        f"command, not from stdin)")
                logger.warning("candidate %d (%s): %s", index, jobs[index].key[:12], message)
                finished.append((index, CandidateResult.failure(
                    jobs[index].key, message, now - worker.started)))
                self._retire(worker, kill=True)
            elif (self.timeout_s is not None and worker.ready
                  and now - worker.started > self.timeout_s):
                message = f"timed out after {self.timeout_s:g} s"
                if worker.abandoned:
                    self._retire(worker, kill=True)
                    continue
                finished.append((index, CandidateResult.failure(
                    jobs[index].key, message, now - worker.started)))
                self._retire(worker, kill=True)
        return finished

    def _wait_timeout(self, busy: Sequence[_Worker]) -> float | None:
        if self.timeout_s is None or not busy:
            return None
        started = [w.started for w in busy if w.ready]
        if not started:
            return None  # a READY message wakes the wait
        return max(0.05, self.timeout_s - (time.monotonic() - min(started)) + 0.05)

    def close(self) -> None:
        """Stops the workers (idle ones exit cleanly, busy ones are killed). The
        forkserver, Python's per-process service, stays idle for the next executor and
        ends with this process."""
        if self._closed:
            return
        self._closed = True
        for worker in list(self._pool):
            if worker.index is None:
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for worker in list(self._pool):
            if worker.index is None:
                worker.process.join(timeout=10)
            self._retire(worker, kill=True)
        _LIVE_EXECUTORS.discard(self)


# --------------------------------------------------------------------------- Ray


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_EXTRA_MESSAGE) from None
    return ray


def _ray_train(job_data: dict[str, Any], device: str, threads: int,
               timeout_s: float | None) -> dict[str, Any]:
    """The Ray task: plain data in, plain data out (no fbnas class crosses the wire)."""
    job = CandidateJob.from_dict(job_data)
    return train_candidate(job, device=device, threads=threads, timeout_s=timeout_s).to_dict()


class RayExecutor:
    """Trains candidates as Ray tasks: one task per job, results as they finish.

    With ``address`` it joins a running cluster (``ray start --head`` on the head node,
    ``ray start --address HEAD:6379`` on the others; every node needs fbnas and the data
    installed); without, it starts a local instance on 127.0.0.1 and stops it on
    :meth:`close`. A task whose worker dies is not retried (``max_retries=0``): the
    candidate is recorded as failed with Ray's reason, like a local worker's death (Ray's
    memory monitor killing it: "out of memory"). A task that raises (it never does for a
    candidate: an unimportable fbnas on a node) is :class:`RayTaskFailed`.

    Args:
        address: ``auto``, ``HOST:PORT``, or ``None`` for a local instance.
        num_cpus: CPUs of a local instance (``None``: all of this machine's).
        device: where candidates train.
        threads: torch threads per task (and the CPUs each task reserves).
        timeout_s: a task training longer stops at its next step and is recorded as failed
            (checked inside the task, from when it starts running, not when it is queued).
        num_gpus: GPUs each task reserves (fractions allowed).
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 device: str = "cpu", threads: int = 1, timeout_s: float | None = None,
                 num_gpus: float = 0.0) -> None:
        _check_positive("threads", threads)
        _check_positive("timeout_s", timeout_s, allow_none=True)
        if num_cpus is not None:
            _check_positive("num_cpus", num_cpus)
        if num_gpus < 0:
            raise ConfigError(f"num_gpus must be >= 0, got {num_gpus!r}")
        self._ray = import_ray()
        self.device = device
        self.threads = int(threads)
        self.timeout_s = timeout_s
        self.started_ray = False
        """Whether this executor called ``ray.init`` (and so ``ray.shutdown`` on close)."""
        ray = self._ray
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                if address is None:
                    ray.init(num_cpus=num_cpus, include_dashboard=False,
                             _node_ip_address="127.0.0.1", log_to_driver=False,
                             configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = address or "a local instance"
                raise ConfigError(f"--executor ray: cannot start or reach Ray at {where}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc) else exc}"
                                  ) from None
            self.started_ray = True
        self._remote = ray.remote(num_cpus=self.threads, num_gpus=num_gpus,
                                  max_retries=0)(_ray_train)
        self._closed = False
        _LIVE_EXECUTORS.add(self)

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, jobs: Sequence[CandidateJob], on_result: ResultCallback | None = None
            ) -> list[CandidateResult]:
        """Submits every job, then delivers results as ``ray.wait`` returns them."""
        if self._closed:
            raise ConfigError("this RayExecutor is closed")
        ray = self._ray
        jobs = list(jobs)
        results: list[CandidateResult | None] = [None] * len(jobs)
        started = time.monotonic()
        refs = {self._remote.remote(job.to_dict(), self.device, self.threads,
                                    self.timeout_s): i
                for i, job in enumerate(jobs)}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    index = refs.pop(ref)
                    results[index] = self._result(ref, jobs[index], started)
                    if on_result is not None:
                        on_result(jobs[index], results[index])
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        return [r for r in results if r is not None]

    def _result(self, ref: Any, job: CandidateJob, started: float) -> CandidateResult:
        """The task's result; a dead worker is a failed candidate, a task that raised is
        an error of the set-up (the task itself never raises for a candidate)."""
        ray = self._ray
        try:
            return CandidateResult.from_dict(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise RayTaskFailed(
                f"a Ray task failed before it could train candidate {job.key[:12]}: "
                f"{describe_exception(cause)} (is fbnas installed on every node, and the "
                f"data there?)") from None
        except ray.exceptions.RayError as exc:
            if "OutOfMemory" in type(exc).__name__:
                reason = OUT_OF_MEMORY
            else:
                reason = f"ray worker died ({type(exc).__name__}: {one_line(str(exc))})"
            return CandidateResult.failure(job.key, reason, time.monotonic() - started)

    def close(self) -> None:
        """``ray.shutdown()`` if this executor called ``ray.init``: that stops a local
        instance it started, and only disconnects from a cluster it joined (the cluster
        keeps running). A Ray session the caller had initialised is left alone."""
        if self._closed:
            return
        self._closed = True
        if self.started_ray and self._ray.is_initialized():
            self._ray.shutdown()
        _LIVE_EXECUTORS.discard(self)
