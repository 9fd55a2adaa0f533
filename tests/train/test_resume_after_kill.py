"""A training process really killed with SIGKILL resumes to bitwise identical weights."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import torch
from train_helpers import cli_env, fbnas_command, run_fbnas, write_arch

from fbnas.train import read_checkpoint

# Every RNG consumer is on: crops, RandAugment (python random), mixup (numpy), dropout,
# drop path (torch), plus EMA and momentum state.
RECIPE = ["--set", "random_crop=true", "--set", "dropout=0.2", "--set", "drop_path=0.2",
          "--set", "mixup=0.2", "--set", "ema_decay=0.9", "--set", "resolution=16",
          "--set", "workers=0", "--set", "optimizer=sgd", "--set", "label_smoothing=0.1",
          "--set", "randaugment=rand-m5-n1"]


def _train_args(arch: Path, out: Path) -> list[str]:
    return ["train", str(arch), "--data", "digits?per_class=30", "--out", str(out),
            "--epochs", "4", "--batch-size", "16", "--lr", "0.05", "--seed", "3",
            "--no-tensorboard", *RECIPE]


def _epochs_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigkilled_run_resumes_bitwise_identical(tmp_path: Path) -> None:
    arch = write_arch(tmp_path)
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = run_fbnas(*_train_args(arch, full))
    assert done.returncode == 0, done.stderr

    process = subprocess.Popen(fbnas_command(*_train_args(arch, killed)), env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _epochs_logged(killed) < 1 and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed mid-run, not finished
    interrupted_at = read_checkpoint(killed / "last.pt")["epoch"]
    assert interrupted_at < 4

    resumed = run_fbnas("train", "--out", str(killed), "--resume", "--no-tensorboard")
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {interrupted_at}" in resumed.stderr

    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(killed / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (4, 4 * (300 // 16))
    for part in ("model", "model_ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    momentum = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum, momentum_b, strict=True))
    lines_a = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    strip = ("train_images_per_s", "epoch_seconds")
    assert [{k: v for k, v in m.items() if k not in strip} for m in lines_a] == \
        [{k: v for k, v in m.items() if k not in strip} for m in lines_b]
