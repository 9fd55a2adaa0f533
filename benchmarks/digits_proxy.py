"""Accuracy of an architecture on the digits proxies, mean ± std over seeds.

Digits is easy (small networks reach 99 %), so comparisons between architectures use the
*hard* proxy: 20 training images per class (``digits?per_class=20``) and the built-in
``digits_hard`` recipe (RandAugment, pad-and-crop, 30 epochs). The spread over seeds says
how large a difference between two architectures must be to mean anything.

    python benchmarks/digits_proxy.py ARCH.json --seeds 0 1 2 [--easy]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fbnas
from fbnas.data import open_datasets
from fbnas.train import Trainer, load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", help="zoo name or arch-def file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--easy", action="store_true",
                        help="full digits with the 'digits' recipe instead")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec, recipe_name = ("digits", "digits") if args.easy else ("digits?per_class=20",
                                                                 "digits_hard")
    finals, bests = [], []
    for seed in args.seeds:
        config = load_recipe(recipe_name).replace(seed=seed)
        data = open_datasets(spec, config.resolution, config.augment)
        torch.manual_seed(seed)
        model = fbnas.build_model(args.arch, num_classes=data.num_classes)
        start = time.perf_counter()
        history = Trainer(model, config, data, tensorboard=False).fit()
        finals.append(history[-1]["val_top1"])
        bests.append(max(m["val_top1"] for m in history))
        print(f"seed {seed}: final val top-1 {finals[-1]:.2f} %, best {bests[-1]:.2f} % "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
    print(f"{spec} / {recipe_name}: final val top-1 {statistics.mean(finals):.2f} ± "
          f"{spread:.2f} % over {len(finals)} seeds (best-epoch mean "
          f"{statistics.mean(bests):.2f} %)")


if __name__ == "__main__":
    main()
