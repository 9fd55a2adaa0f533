"""Shared fixtures: the reference data beside the checkout, tiny arch defs, the CLI runner."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_arch() -> dict:
    """A small valid arch def touching the main op families (32x32 input friendly)."""
    return {
        "input_size": 32,
        "basic_args": {"width_divisor": 8},
        "blocks": [
            [("conv_k3_hs", 8, 2, 1)],
            [("ir_k3", 8, 1, 1, {"expansion": 1})],
            [("ir_k5_sehsig_hs", 16, 2, 2, {"expansion": 4}, {"zero_last_bn_gamma": True})],
            [("skip", 24, 2, 1), ("ir_k3_g2", 24, 1, 1, {"expansion": 1}, {"pwl_groups": 2})],
            [("ir_pool_hs", 64, 1, 1, {"expansion": 6})],
        ],
    }


@dataclass(frozen=True)
class CliResult:
    """What ``fbnas ARGS`` returned and printed (as ``subprocess.CompletedProcess`` names it)."""

    returncode: int
    stdout: str
    stderr: str


CLI_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""The format ``fbnas.cli.main`` gives log records on stderr."""


@pytest.fixture
def run_cli(capfd: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Runs ``fbnas ARGS`` in this process (``fbnas.cli.main.main``), without a new Python.

    A process start and the imports cost ~3 s a call on the test machine; the CLI's code is
    the same in-process. Output is captured at the file descriptors (capfd), so processes
    the command starts are heard too. What a CLI run may change in the process is put back
    after each call: torch's thread count (``--threads``), the working folder, the root
    logger and the warning filters. ``FBNAS_MALLOC=default`` keeps ``keep_freed_memory`` (a
    process-wide glibc setting that cannot be undone) out of the test process. Log records
    of WARNING and above reach stderr in the CLI's format, as ``logging.basicConfig`` in
    ``main`` would put them there in a process of its own (under pytest it does nothing:
    the root logger already has pytest's handlers). An exception the CLI does not turn
    into an exit status propagates and fails the test with its traceback.
    """
    from fbnas.cli.main import main

    monkeypatch.setenv("FBNAS_MALLOC", "default")

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capfd.readouterr()  # output printed before this call is not this call's
        threads, cwd = torch.get_num_threads(), os.getcwd()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        to_stderr = logging.StreamHandler(sys.stderr)  # the captured stderr of this moment
        to_stderr.setFormatter(logging.Formatter(CLI_LOG_FORMAT))
        root.addHandler(to_stderr)
        try:
            with warnings.catch_warnings():
                code = main([os.fspath(a) for a in args])
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            torch.set_num_threads(threads)
            os.chdir(cwd)
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return run
