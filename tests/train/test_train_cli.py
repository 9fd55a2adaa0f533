"""``fbnas train`` / ``fbnas eval`` as a user runs them: outputs, files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import write_arch

QUICK = ["--epochs", "1", "--batch-size", "16", "--set", "resolution=16", "--set", "workers=0",
         "--no-tensorboard", "--threads", "1"]
DATA = "digits?per_class=8"


def test_train_then_eval_agree(tmp_path: Path, run_cli) -> None:
    arch, run = write_arch(tmp_path), tmp_path / "run"
    trained = run_cli("train", arch, "--data", DATA, "--out", run, *QUICK,
                      "--set", "ema_decay=0.5")
    assert trained.returncode == 0, trained.stderr
    assert "epoch 1/1" in trained.stderr and "img/s" in trained.stderr
    assert "ema top1" in trained.stderr
    metrics = json.loads((run / "metrics.jsonl").read_text())
    evaluated = run_cli("eval", "--ckpt", run / "last.pt", "--data", DATA, "--json",
                        "--workers", "0")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["resolution"] == 16 and result["model"]["images"] == 360
    assert result["model"]["top1"] == pytest.approx(metrics["val_top1"])
    assert result["model_ema"]["top1"] == pytest.approx(metrics["val_ema_top1"])


def test_train_writes_tensorboard_events(tmp_path: Path, run_cli) -> None:
    arch, run = write_arch(tmp_path), tmp_path / "run"
    args = [a for a in QUICK if a != "--no-tensorboard"]
    assert run_cli("train", arch, "--data", DATA, "--out", run, *args).returncode == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("extra, message", [
    (["--set", "lrr=1"], "error: --set: unknown key 'lrr'"),
    (["--data", "cifar10:/no/such/dir"], "error: cifar10: dataset folder '/no/such/dir' "
                                         "does not exist"),
    (["--set", "sync_bn=true", "--device", "cpu"], "sync_bn=true needs CUDA"),
    (["--config", "nope"], "neither a file nor a built-in recipe (digits"),
    (["--init-from", "/no/such.pt"], "checkpoint '/no/such.pt' does not exist"),
    (["--config", "digits"], "--epochs 1 leaves no epoch after the recipe's warm-up "
                             "(warmup_epochs 1); add --set warmup_epochs=N with N < 1"),
])
def test_user_errors_are_one_line(tmp_path: Path, run_cli, extra: list[str],
                                  message: str) -> None:
    arch = write_arch(tmp_path)
    result = run_cli("train", arch, "--data", DATA, "--out", tmp_path / "r", *QUICK, *extra)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "r" / "last.pt").exists()


def test_existing_run_needs_resume_and_resume_needs_the_same_recipe(
        tmp_path: Path, run_cli) -> None:
    arch, run = write_arch(tmp_path), tmp_path / "run"
    assert run_cli("train", arch, "--data", DATA, "--out", run, *QUICK).returncode == 0
    again = run_cli("train", arch, "--data", DATA, "--out", run, *QUICK)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    changed = run_cli("train", "--out", run, "--resume", "--lr", "0.5")
    assert changed.returncode == 2
    assert "these differ: lr 0.1 (saved) vs 0.5" in changed.stderr


def test_eval_needs_an_arch_for_bare_weights(tmp_path: Path, run_cli) -> None:
    from train_helpers import TINY_ARCH

    import fbnas
    from fbnas.train import atomic_save

    model = fbnas.build_model(TINY_ARCH, num_classes=10)
    atomic_save(model.state_dict(), tmp_path / "w.pth")
    bare = run_cli("eval", "--ckpt", tmp_path / "w.pth", "--data", DATA)
    assert bare.returncode == 2 and "holds no arch def: name the ARCH" in bare.stderr
    arch = write_arch(tmp_path)
    named = run_cli("eval", arch, "--ckpt", tmp_path / "w.pth", "--data", DATA,
                    "--resolution", "16", "--workers", "0")
    assert named.returncode == 0 and "model: top-1" in named.stdout
    slim = run_cli("eval", arch, "--ckpt", tmp_path / "w.pth", "--data", DATA, "--wm", "0.5")
    assert slim.returncode == 2 and "--wm is for slim training runs" in slim.stderr


def test_nproc_returns_the_exit_status_of_its_processes(tmp_path: Path, run_cli) -> None:
    """``--nproc`` relaunches under torchrun: a failing job must not exit 0."""
    result = run_cli("train", "no_such_arch", "--data", DATA, "--out", tmp_path / "r",
                     *QUICK, "--nproc", "2")
    assert result.returncode != 0
    assert result.stderr.count("error: unknown architecture 'no_such_arch'") == 2  # one per process
    assert not (tmp_path / "r" / "last.pt").exists()
