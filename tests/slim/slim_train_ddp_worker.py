"""Sandwich training of the tiny slim network as one process of a torchrun job (or alone).

Usage: python slim_train_ddp_worker.py OUT [--resume]. Used by test_slim_train_ddp.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from slim_width_helpers import TINY_SLIM_ARCH_NO_BN, tiny_recipe

from fbnas.data import open_datasets
from fbnas.slim import build_slim_model
from fbnas.slim.train import SandwichConfig, SandwichTrainer
from fbnas.train import init_distributed, shutdown_distributed


def train(out: Path, resume: bool = False) -> None:
    """Trains into ``out`` on this process's share of the job (all of it when alone)."""
    context = init_distributed("cpu")
    try:
        config = tiny_recipe(epochs=1, batch_size=32, optimizer="sgd", lr=0.05, seed=1)
        torch.manual_seed(config.seed)
        data = open_datasets("digits?per_class=16", config.resolution, config.augment)
        model = build_slim_model(TINY_SLIM_ARCH_NO_BN, num_classes=data.num_classes)
        trainer = SandwichTrainer(model, config, data, SandwichConfig(bn_batches=1),
                                  out_dir=out, device="cpu", context=context,
                                  tensorboard=False)
        if resume:
            trainer.resume()
        trainer.fit()
    finally:
        shutdown_distributed()


def main() -> None:
    torch.set_num_threads(1)
    train(Path(sys.argv[1]), "--resume" in sys.argv)


if __name__ == "__main__":
    main()
