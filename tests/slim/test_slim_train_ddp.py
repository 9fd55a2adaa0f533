"""Sandwich training on two gloo processes computes what one process computes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from slim_train_ddp_worker import train

from fbnas.train import read_checkpoint

HERE = Path(__file__).resolve().parent
WORKER = HERE / "slim_train_ddp_worker.py"


def _run_two(out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1])]))
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", str(WORKER), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_checkpoint(out / "last.pt")


def _run_one(out: Path) -> dict:
    """The same worker in this process (one process fewer to start)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(out)
    finally:
        torch.set_num_threads(threads)
    return read_checkpoint(out / "last.pt")


def test_two_processes_draw_the_same_widths_and_average_gradients_once(tmp_path: Path) -> None:
    # No batch norm: each process normalising its own half batch would differ from one
    # process normalising the whole batch, for reasons unrelated to the sandwich step.
    one = _run_one(tmp_path / "one")
    two = _run_two(tmp_path / "two")
    assert two["world_size"] == 2 and one["step"] == two["step"] == 160 // 32
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5)
    assert two["history"][-1]["val_top1"] == one["history"][-1]["val_top1"]
