"""Tiny models, recipes and a CLI runner shared by the training tests (fast on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fbnas.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]

TINY_ARCH = {
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [("conv_k3_hs", 8, 2, 1)],
        [("ir_k3", 8, 1, 2, {"expansion": 2})],
        [("ir_k3_sehsig", 16, 2, 1, {"expansion": 2})],
    ],
}

TINY_ARCH_NO_BN = {**TINY_ARCH, "basic_args": {"width_divisor": 8, "bn_args": None}}


def tiny_config(**changes: object) -> TrainConfig:
    """Two quick epochs on 16x16 digits (no workers: fewer processes on slow machines)."""
    base = dict(epochs=2, batch_size=32, optimizer="sgd", lr=0.1, weight_decay=1e-4,
                label_smoothing=0.0, random_crop=False, resolution=16, workers=0, seed=0)
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


def write_arch(folder: Path, arch: dict = TINY_ARCH, name: str = "tiny.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(arch))
    return path


def cli_env() -> dict[str, str]:
    """One thread per process: deterministic and polite on a shared machine."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    return env


def fbnas_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fbnas", *args]


def run_fbnas(*args: str, cwd: Path | None = None, timeout: float = 300
              ) -> subprocess.CompletedProcess:
    return subprocess.run(fbnas_command(*args), cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)
