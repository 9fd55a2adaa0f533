"""``fbnas train`` / ``fbnas eval`` as a user runs them: outputs, files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import write_arch

from fbnas.cli.main import main

QUICK = ["--epochs", "1", "--batch-size", "16", "--set", "resolution=16", "--set", "workers=0",
         "--no-tensorboard", "--threads", "1"]
DATA = "digits?per_class=8"


def test_train_then_eval_agree(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arch, run = write_arch(tmp_path), tmp_path / "run"
    assert main(["train", str(arch), "--data", DATA, "--out", str(run), *QUICK,
                 "--set", "ema_decay=0.5"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "img/s" in err and "ema top1" in err
    metrics = json.loads((run / "metrics.jsonl").read_text())
    assert main(["eval", "--ckpt", str(run / "last.pt"), "--data", DATA, "--json",
                 "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resolution"] == 16 and result["model"]["images"] == 360
    assert result["model"]["top1"] == pytest.approx(metrics["val_top1"])
    assert result["model_ema"]["top1"] == pytest.approx(metrics["val_ema_top1"])


def test_train_writes_tensorboard_events(tmp_path: Path) -> None:
    arch, run = write_arch(tmp_path), tmp_path / "run"
    args = [a for a in QUICK if a != "--no-tensorboard"]
    assert main(["train", str(arch), "--data", DATA, "--out", str(run), *args]) == 0
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
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                  extra: list[str], message: str) -> None:
    arch = write_arch(tmp_path)
    args = ["train", str(arch), "--data", DATA, "--out", str(tmp_path / "r"), *QUICK, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_run_needs_resume_and_resume_needs_the_same_recipe(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arch, run = write_arch(tmp_path), tmp_path / "run"
    assert main(["train", str(arch), "--data", DATA, "--out", str(run), *QUICK]) == 0
    assert main(["train", str(arch), "--data", DATA, "--out", str(run), *QUICK]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.5"]) == 2
    assert "these differ: lr 0.1 (saved) vs 0.5" in capsys.readouterr().err


def test_eval_needs_an_arch_for_bare_weights(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    from train_helpers import TINY_ARCH

    import fbnas
    from fbnas.train import atomic_save

    model = fbnas.build_model(TINY_ARCH, num_classes=10)
    atomic_save(model.state_dict(), tmp_path / "w.pth")
    assert main(["eval", "--ckpt", str(tmp_path / "w.pth"), "--data", DATA]) == 2
    assert "holds no arch def: name the ARCH" in capsys.readouterr().err
    arch = write_arch(tmp_path)
    assert main(["eval", str(arch), "--ckpt", str(tmp_path / "w.pth"), "--data", DATA,
                 "--resolution", "16", "--workers", "0"]) == 0
    assert "model: top-1" in capsys.readouterr().out
    assert main(["eval", str(arch), "--ckpt", str(tmp_path / "w.pth"), "--data", DATA,
                 "--wm", "0.5"]) == 2
    assert "--wm is for slim training runs" in capsys.readouterr().err
