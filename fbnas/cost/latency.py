"""Measuring latency on this device: PyTorch eager or ONNX Runtime, with a stable median.

Timings on a shared machine drift and get inflated by other processes, so a measurement
warms up, then times single runs in batches until the median settles (or a time budget
ends), and reports the median with its spread. :func:`reference_ms` times a fixed small
workload; comparing it with its quiet value tells whether the machine is busy right now.
All latencies are milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

Backend = Literal["torch", "onnxruntime"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnxruntime")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ort_version() -> str | None:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return None


@dataclass(frozen=True)
class DeviceInfo:
    """Where and how latencies were measured; stored as a table's metadata."""

    cpu: str
    cores: int
    backend: str
    threads: int
    torch: str
    onnxruntime: str | None
    python: str
    system: str
    device: str = "cpu"

    @classmethod
    def current(cls, backend: Backend = "torch", threads: int = 1,
                device: str = "cpu") -> DeviceInfo:
        cpu = torch.cuda.get_device_name() if device.startswith("cuda") else _cpu_model()
        return cls(cpu=cpu, cores=os.cpu_count() or 1, backend=backend, threads=threads,
                   torch=torch.__version__, onnxruntime=_ort_version(),
                   python=platform.python_version(),
                   system=f"{platform.system()} {platform.machine()}", device=device)

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: DeviceInfo) -> list[str]:
        """Human-readable fields that differ (``cpu: X != Y``), ignoring the Python version."""
        out = []
        for key, value in asdict(self).items():
            theirs = getattr(other, key)
            if key != "python" and value != theirs:
                out.append(f"{key}: {value!r} != {theirs!r}")
        return out


@dataclass(frozen=True)
class Measurement:
    """Latency of one thing: median and the 10th/90th percentiles over ``runs`` runs."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative width of the middle 80 %."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms else 0.0


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(threads)``, restoring the old value."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def time_callable(
    run: Callable[[], object],
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 2000,
    budget_s: float = 1.0,
    rel_tol: float = 0.02,
    sync: Callable[[], None] | None = None,
) -> Measurement:
    """Times ``run`` until its median is stable.

    Runs are timed one by one in batches of ``min_runs``; it stops when the median after
    a batch moved less than ``rel_tol`` from the median before it (twice in a row), after
    ``max_runs`` runs, or when ``budget_s`` is spent (at least ``min_runs`` are always taken).
    """
    for _ in range(warmup):
        run()
    if sync:
        sync()
    samples: list[float] = []
    start = time.perf_counter()
    previous = None
    stable = 0
    while len(samples) < max_runs:
        for _ in range(min_runs):
            t0 = time.perf_counter()
            run()
            if sync:
                sync()
            samples.append((time.perf_counter() - t0) * 1e3)
        median = statistics.median(samples)
        if previous is not None and abs(median - previous) <= rel_tol * previous:
            stable += 1
            if stable >= 2:
                break
        else:
            stable = 0
        previous = median
        if time.perf_counter() - start > budget_s:
            break
    ordered = sorted(samples)
    return Measurement(statistics.median(ordered), _percentile(ordered, 0.1),
                       _percentile(ordered, 0.9), len(ordered))


def _torch_runner(module: nn.Module, input_shape: Sequence[int],
                  device: str) -> tuple[Callable[[], object], Callable[[], None] | None]:
    module = module.to(device).eval()
    x = torch.randn(*input_shape, device=device)

    def run() -> object:
        with torch.inference_mode():
            return module(x)

    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    return run, sync


def _ort_runner(module: nn.Module, input_shape: Sequence[int], threads: int,
                workdir: str) -> Callable[[], object]:
    import copy
    import warnings

    import numpy as np
    import onnxruntime as ort

    from fbnas.blocks.fuse import fold_batchnorm
    from fbnas.blocks.mobileone import reparameterize_model

    path = Path(workdir) / "block.onnx"
    prepared = fold_batchnorm(reparameterize_model(copy.deepcopy(module).cpu().eval()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(prepared, (torch.zeros(*input_shape),), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"], opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.randn(*input_shape).astype(np.float32)}
    return lambda: session.run(None, feed)


def measure(
    module: nn.Module,
    input_shape: Sequence[int],
    backend: Backend = "torch",
    threads: int = 1,
    device: str = "cpu",
    budget_s: float = 1.0,
    min_runs: int = 10,
    rel_tol: float = 0.02,
) -> Measurement:
    """Latency of ``module`` on one input of ``input_shape`` (milliseconds).

    Args:
        module: what to time (put in eval mode; not otherwise changed for torch).
        input_shape: ``(N, C, H, W)``.
        backend: ``"torch"`` (eager, ``inference_mode``, ``threads`` intra-op threads) or
            ``"onnxruntime"`` (the module is exported with BN folded and timed in an
            ``InferenceSession`` with ``threads`` intra-op threads, sequential execution).
        budget_s: stop timing after this long even if the median is not yet stable.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    steady_allocator()
    with torch_threads(threads):
        if backend == "torch":
            run, sync = _torch_runner(module, input_shape, device)
            return time_callable(run, min_runs=min_runs, budget_s=budget_s, rel_tol=rel_tol,
                                 sync=sync)
        with tempfile.TemporaryDirectory() as tmp:
            run = _ort_runner(module, input_shape, threads, tmp)
            return time_callable(run, min_runs=min_runs, budget_s=budget_s, rel_tol=rel_tol)


_STEADY_ALLOCATOR = False


def steady_allocator() -> bool:
    """Keeps glibc malloc from returning large blocks to the OS between runs (once per process).

    By default glibc serves allocations over a dynamic threshold (128 KiB at start) with
    ``mmap`` and gives them back with ``munmap`` on free, so a tensor of a few MB costs
    fresh page faults on every run. Whether that happens depends on the allocator's history,
    not on the network: measured here, mnv2's first stride-2 block took 6.2 ms alone and
    1.8 ms with the threshold raised, the whole network 18.7 vs 13.5 ms — noise that no
    latency table can model. Raising the mmap and trim thresholds (what a long-running
    inference process reaches anyway) makes block and network timings consistent.

    Returns whether the setting was applied (only on glibc).
    """
    global _STEADY_ALLOCATOR
    if _STEADY_ALLOCATOR:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold,
                                                                          2**30)
    except (OSError, AttributeError):
        return False
    _STEADY_ALLOCATOR = bool(ok)
    return _STEADY_ALLOCATOR


_REFERENCE = None


def _reference_workload() -> tuple[nn.Module, torch.Tensor]:
    """The fixed conv (32 -> 32, 3x3, on 32x28x28) that :func:`reference_ms` times."""
    global _REFERENCE
    if _REFERENCE is None:
        gen = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(32, 32, 3, padding=1).eval()
        _REFERENCE = (conv, torch.randn(1, 32, 28, 28, generator=gen))
    return _REFERENCE


def reference_ms(threads: int = 1) -> float:
    """Median time of a fixed small conv workload: the machine's current speed.

    A value well above its quiet minimum means other processes compete for the CPU and
    measurements taken now are inflated.
    """
    conv, x = _reference_workload()
    with torch_threads(threads), torch.inference_mode():
        return time_callable(lambda: conv(x), warmup=2, min_runs=15, budget_s=0.2).median_ms


def reference_burst_ms(threads: int = 1, runs: int = 20) -> float:
    """A quick reading (~3 ms) of the machine's speed: the median of ``runs`` runs of the
    :func:`reference_ms` workload, no settling.

    Tables time one burst between every two measurements and store each entry relative to
    the bursts on both sides of it (speed-normalised timing): on a shared machine the
    contention (memory, clock) changes within seconds, so a round-level reference misses it,
    while a burst taken next to the entry is slowed by the same spell as the entry.
    """
    conv, x = _reference_workload()
    with torch_threads(threads), torch.inference_mode():
        return time_callable(lambda: conv(x), warmup=2, min_runs=runs, budget_s=0.0).median_ms
