"""Benchmark: sandwich-rule training step throughput vs a plain single-width step.

Four training steps on the same batch, all through the real trainers (optimizer, schedule,
loss; ``fbnas.train.Trainer.train_step`` and ``fbnas.slim.SandwichTrainer.train_step``):

* ``static``: the zoo model (the slim network's full width as a plain fbnas model), one
  forward/backward: the baseline;
* ``slim full``: the slim network at full width, one forward/backward: the cost of the
  slicing layers alone;
* ``sandwich n=2``: largest + smallest;
* ``sandwich n=4``: largest + smallest + 2 random widths (the default).

Variants run interleaved, in a new random order each repeat, after warm-up; each repeat
times ``--steps`` steps per variant. Printed: images/s (median over repeats, min-max) and
the ratio to ``static`` (median of per-repeat ratios). ``--clock thread`` times by the
thread's CPU time (with one thread every kernel runs on it), which stays comparable on a
machine shared with other processes.

    python benchmarks/slim_train_step.py --model slim_mbv2 --resolution 32 --batch 64
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch

import fbnas
from fbnas.data import open_datasets
from fbnas.slim import build_slim_model
from fbnas.slim.train import SandwichConfig, SandwichTrainer
from fbnas.train import TrainConfig, Trainer


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="slim_mbv2")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    config = TrainConfig(epochs=1, batch_size=args.batch, optimizer="sgd", lr=0.01,
                         weight_decay=0.0, label_smoothing=0.0, random_crop=False,
                         resolution=args.resolution, workers=0, amp=False,
                         channels_last=False)
    data = open_datasets(f"digits?per_class={max(10, args.batch // 10 + 1)}",
                         args.resolution)
    torch.manual_seed(0)
    slim = build_slim_model(args.model, num_classes=args.classes)
    trainers: dict[str, Trainer] = {
        "static": Trainer(fbnas.build_model(slim.arch_spec, num_classes=args.classes), config,
                          data, device="cpu", tensorboard=False),
        "slim full": Trainer(build_slim_model(args.model, num_classes=args.classes), config,
                             data, device="cpu", tensorboard=False),
        "sandwich n=2": SandwichTrainer(build_slim_model(args.model, num_classes=args.classes),
                                        config, data, SandwichConfig(num_widths=2),
                                        device="cpu", tensorboard=False),
        "sandwich n=4": SandwichTrainer(build_slim_model(args.model, num_classes=args.classes),
                                        config, data, SandwichConfig(num_widths=4),
                                        device="cpu", tensorboard=False),
    }
    images = torch.randn(args.batch, 3, args.resolution, args.resolution)
    targets = torch.randint(0, args.classes, (args.batch,))

    def run(trainer: Trainer) -> Callable[[], float]:
        def steps() -> float:
            start = clock()
            for _ in range(args.steps):
                trainer.train_step(images, targets)
            return args.batch * args.steps / (clock() - start)
        return steps

    runners = {name: run(t) for name, t in trainers.items()}
    for trainer in trainers.values():  # warm-up
        trainer.model.train()
        trainer.train_step(images, targets)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    rng = random.Random(0)
    for repeat in range(args.repeats):
        order = list(runners)
        rng.shuffle(order)
        for name in order:
            rates[name].append(runners[name]())
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
    print(f"{args.model} @ {args.resolution}x{args.resolution}, batch {args.batch}, "
          f"{args.threads} thread(s), {args.clock} clock, CPU, {args.repeats} interleaved "
          f"repeats x {args.steps} steps")
    print("| step | images/s (median, min-max) | vs static (median, min-max) |")
    print("|---|---|---|")
    for name, values in rates.items():
        ratios = [v / s for v, s in zip(values, rates["static"], strict=True)]
        print(f"| {name} | {_spread(values)} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
