"""Is the synthetic landmark set learnable, and does the flip permutation matter?

Trains a tiny plain ConvNet (6 conv-BN-ReLU layers, ~0.15 M parameters, L2 loss on the 212
coordinates) for a fixed number of epochs on a synthetic set at 64 x 64 (epochs, not wall
clock: the shared machine's load would decide otherwise), and prints the
test NME (``nni`` normalisation), failure rate and AUC at 0.1 after each epoch, against the
mean-shape baseline (predict the training set's mean face for every image). Three modes:

- ``none``: no augmentation;
- ``aug``: ``LandmarkAugment`` (rotation 10°, shift 0.03, flip 0.5, colour jitter);
- ``badflip``: the same, but flips with the identity permutation (left and right points not
  swapped): a control that must do clearly worse if the shipped permutation is right.

    python benchmarks/landmark_learnability.py MODE [--epochs 25] [--n 1500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from fbnas.tasks.landmarks import load_layout, open_landmark_datasets
from fbnas.tasks.landmarks.augment import LandmarkAugment
from fbnas.tasks.landmarks.metrics import nme, summarise
from fbnas.tasks.landmarks.synthetic import make_landmark_set


def tiny_net() -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2),
                         block(64, 64, 1), block(64, 96, 2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(96, 212))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("none", "aug", "badflip"))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = load_layout(106)
    augment = None if args.mode == "none" else LandmarkAugment(rotation_deg=10.0, shift=0.03)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_landmark_set(Path(tmp) / "set", args.n, seed=11, resolution=64)
        train, test = open_landmark_datasets(root, resolution=64, augment=augment,
                                             cache_images=True)
        if args.mode == "badflip":
            train.layout = replace(layout, flip_permutation=tuple(range(106)))
        torch.manual_seed(0)
        model = tiny_net()
        optimizer = torch.optim.Adam(model.parameters(), 2e-3)
        loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
        true = torch.stack([torch.from_numpy(r.points) for r in test.records])
        mean_shape = torch.stack([torch.from_numpy(r.points) for r in train.records]).mean(0)
        base = summarise(nme(mean_shape.expand_as(true), true, layout))
        print(f"{args.mode}: mean-shape baseline NME {base['nme']:.4f}, failure "
              f"{base['failure_rate']:.3f}, AUC {base['auc']:.3f}", flush=True)
        images = torch.stack([test[i][0] for i in range(len(test))])
        start = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            model.train()
            for x, target in loader:
                loss = ((model(x) - target["points"].reshape(-1, 212)) ** 2).sum(1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                result = summarise(nme(model(images), true, layout))
            print(f"{args.mode}: epoch {epoch} ({time.perf_counter() - start:.0f} s) NME "
                  f"{result['nme']:.4f}, failure {result['failure_rate']:.3f}, AUC "
                  f"{result['auc']:.3f}", flush=True)


if __name__ == "__main__":
    main()
