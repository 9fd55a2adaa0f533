"""Data-parallel training on gloo with real processes (``fbnas train --nproc 2``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from train_helpers import TINY_ARCH, TINY_ARCH_NO_BN, run_fbnas, write_arch

from fbnas.train import read_checkpoint

COMMON = ["--epochs", "2", "--batch-size", "32", "--lr", "0.1", "--seed", "1",
          "--no-tensorboard", "--set", "resolution=16", "--set", "workers=0",
          "--set", "random_crop=false", "--set", "label_smoothing=0.1"]


def _train(arch: Path, out: Path, data: str, *extra: str) -> dict:
    done = run_fbnas("train", str(arch), "--data", data, "--out", str(out), *COMMON, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_checkpoint(out / "last.pt")


def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    arch = write_arch(tmp_path, TINY_ARCH_NO_BN)
    data = "digits?per_class=16"
    one = _train(arch, tmp_path / "one", data)
    two = _train(arch, tmp_path / "two", data, "--nproc", "2")
    assert two["world_size"] == 2 and one["step"] == two["step"] == 2 * (160 // 32)
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-5, atol=1e-6)
    metrics = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text()
               .splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]  # rank 0 alone writes the log

    # Resume under DDP: restart the 2-process run from its epoch-1 checkpoint.
    again = tmp_path / "again"
    shutil.copytree(tmp_path / "two", again)
    (again / "last.prev.pt").replace(again / "last.pt")
    done = run_fbnas("train", "--out", str(again), "--resume", "--nproc", "2",
                     "--no-tensorboard")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "after epoch 1" in done.stderr
    resumed = read_checkpoint(again / "last.pt")
    for key, value in two["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6)


def test_batchnorm_model_trains_as_well_on_two_processes(tmp_path: Path) -> None:
    arch = write_arch(tmp_path, TINY_ARCH)
    # Each of 2 processes normalises its 8 images with their own statistics (no SyncBN on
    # CPU); the result should still be as good as one process with batches of 16.
    extra = ["--epochs", "3", "--batch-size", "16", "--set", "optimizer=adamw",
             "--lr", "0.01"]  # the last --epochs/--lr given wins
    one = _train(arch, tmp_path / "one", "digits", *extra)
    two = _train(arch, tmp_path / "two", "digits", *extra, "--nproc", "2")
    top1 = [one["history"][-1]["val_top1"], two["history"][-1]["val_top1"]]
    assert min(top1) > 85, top1
    assert abs(top1[0] - top1[1]) < 8, top1
