"""Training throughput of fbnet_c at 224x224, batch 32, and the Trainer's overhead.

Both sides train the same model on the same in-memory images (random uint8, decoded
nothing: this measures the training step, not JPEG decoding) with the same DataLoader,
transforms and timm SGD optimizer:

* bare: a hand-written loop (forward, cross-entropy, zero_grad, backward, step);
* Trainer: ``Trainer.train_batches`` + ``train_step`` (per-step LR schedule, loss
  accumulation, listeners, timing), i.e. what ``fit()`` does minus evaluation.

Rounds alternate bare and Trainer so that machine noise hits both; each round times
``--steps`` steps after ``--warmup`` untimed ones. Prints images/s per side and the
overhead ratio (median over rounds, and min-max).

    python benchmarks/train_throughput.py --rounds 3 --steps 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

import fbnas
from fbnas.data import TensorImageDataset
from fbnas.data.datasets import ImageDatasets
from fbnas.data.spec import DataSpec
from fbnas.data.transforms import build_transform
from fbnas.train import TrainConfig, Trainer

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _data(resolution: int, images: int) -> ImageDatasets:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, resolution, resolution), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, 1000, (images,), generator=generator)
    tf = build_transform("tensor", resolution, MEAN, STD, None)
    train = TensorImageDataset(pixels, labels, tf)
    return ImageDatasets(DataSpec("digits"), train, train, 1000, [str(i) for i in range(1000)],
                         resolution, MEAN, STD)


def _bare(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
          warmup: int, steps: int) -> float:
    model.train()
    batches = iter(loader)
    for _ in range(warmup):
        images, targets = next(batches)
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    start = time.perf_counter()
    count = 0
    for _ in range(steps):
        images, targets = next(batches)
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def _trainer(trainer: Trainer, warmup: int, steps: int) -> float:
    batches = trainer.train_batches()
    for _ in range(warmup):
        trainer.train_step(*next(batches))
    start = time.perf_counter()
    count = 0
    for _ in range(steps):
        images, targets = next(batches)
        trainer.train_step(images, targets)
        count += images.shape[0]
    elapsed = time.perf_counter() - start
    batches.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="fbnet_c")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    per_round = args.warmup + args.steps
    data = _data(args.resolution, args.batch_size * per_round)
    config = TrainConfig(epochs=args.rounds + 1, batch_size=args.batch_size, optimizer="sgd",
                         lr=0.01, weight_decay=4e-5, label_smoothing=0.0, random_crop=False,
                         resolution=args.resolution, workers=0, amp=False,
                         channels_last=False)
    torch.manual_seed(0)
    trainer = Trainer(fbnas.build_model(args.arch, num_classes=1000), config, data,
                      device="cpu", tensorboard=False)
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    bare_model = fbnas.build_model(args.arch, num_classes=1000)
    bare_opt = create_optimizer_v2(bare_model, opt="sgd", lr=0.01, weight_decay=4e-5,
                                   momentum=0.9, filter_bias_and_bn=True)
    loader = DataLoader(data.train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=0)
    bare_rates, trainer_rates = [], []
    for r in range(args.rounds):
        bare_rates.append(_bare(bare_model, loader, bare_opt, args.warmup, args.steps))
        trainer_rates.append(_trainer(trainer, args.warmup, args.steps))
        print(f"round {r + 1}: bare {bare_rates[-1]:.1f} img/s, Trainer "
              f"{trainer_rates[-1]:.1f} img/s", flush=True)
    ratios = [b / t for b, t in zip(bare_rates, trainer_rates, strict=True)]
    print(f"{args.arch} {args.resolution}px batch {args.batch_size}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(f"bare loop: {statistics.median(bare_rates):.1f} img/s "
          f"({min(bare_rates):.1f}-{max(bare_rates):.1f})")
    print(f"Trainer:   {statistics.median(trainer_rates):.1f} img/s "
          f"({min(trainer_rates):.1f}-{max(trainer_rates):.1f})")
    print(f"Trainer time / bare time: {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f}); overhead "
          f"{100 * (statistics.median(ratios) - 1):+.1f} %")


if __name__ == "__main__":
    main()
