"""PFLD supernet step throughput (issue 18 item 8): fbnas against a candidate-loop baseline.

One optimisation step as the search runs it, at ``--batch`` 112x112 random crops with
random landmarks and angles:

* ``w`` steps: the PFLD loss (the auxiliary angle net runs), SGD on the weights;
  ``theta`` steps: the unweighted L2 loss (no auxiliary net), Adam on θ.
* ``baseline``: PFLD's fixed parts around mixed ops that loop over their candidates
  summing ``w_i * b_i(x)`` in NCHW (as NNI's example and the public FBNet code do), and a
  θ step that back-propagates into every weight (``loss.backward()``). Written here, not
  in the library; the same blocks, the same seed.
* ``fbnas soft`` / ``fbnas single-path``: :class:`fbnas.search.dnas.pfld.PFLDSupernet` as
  the engine runs it (channels-last, mixture weights folded into the last BN,
  ``backward(inputs=...)``: a θ step computes no weight gradient).

Split of the fbnas soft weight step (the fixed parts bound the gain): ``aux`` = the w step
minus the same step without the auxiliary net; ``fixed`` = a w step (without aux) of PFLD
whose searched layers are 1x1 adapters (a stride-2 1x1 conv where the shape changes,
identity elsewhere); ``candidates`` = the rest. The gain the split allows is the baseline's
w step over (fixed + aux) of fbnas; the reported share is (baseline/fbnas − 1) over
(that bound − 1).

Method: one process, ``--rounds`` rounds; each round runs every configuration (rotated
order) for ``--warmup`` untimed and ``--steps`` timed steps; the medians over rounds are
reported with the min-max, and ratios to the baseline's step of the same kind (single-path
against the soft baseline) are computed per round. Peak memory: the growth of the peak RSS
over one step after ``malloc_trim`` (Linux), the median over rounds.

    python benchmarks/landmark_supernet_step.py --batch 32 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import time

import torch
from torch import nn

from fbnas.search.dnas.pfld import PFLDSupernet, pfld_layer_costs
from fbnas.search.dnas.supernet import PathSample
from fbnas.search.sampling import ArchSampler
from fbnas.tasks.landmarks.models import PFLDFrame, candidate_plans, pfld_layers
from fbnas.tasks.landmarks.task import LandmarkTask
from fbnas.train.memory import keep_freed_memory

TAU = 5.0


class LoopSupernet(PFLDFrame):
    """The baseline: NCHW, a loop over the candidates of every layer, soft weights."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList(p.build() for p in row)
                                    for row in candidate_plans(pfld_layers()))
        self.costs = pfld_layer_costs("macs")
        self.theta = nn.Parameter(torch.zeros(5, 9))

    def run_layer(self, i, x, sample):
        return sum(w * c(x) for w, c in zip(sample[i], self.layers[i], strict=True))

    def forward(self, x, sample):
        weights = nn.functional.gumbel_softmax(self.theta, tau=TAU, dim=-1)
        out = self.run(x, weights)
        cost = self.theta.new_tensor(self.costs.fixed)
        for w, row in zip(weights, self.costs.per_layer, strict=True):
            cost = cost + (w * torch.tensor(row)).sum()
        return out, cost


class FixedOnly(PFLDFrame):
    """PFLD's fixed parts with 1x1 adapters in place of the searched layers."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Identity(), nn.Identity(),
                                     nn.Conv2d(32, 64, 1, 2, bias=False), nn.Identity(),
                                     nn.Identity()])
        self.to(memory_format=torch.channels_last)

    def run_layer(self, i, x, sample):
        return self.layers[i](x)

    def forward(self, x, sample):
        return self.run(x.contiguous(memory_format=torch.channels_last)), torch.tensor(1.0)


class Stepper:
    def __init__(self, model, baseline: bool, mode: str | None) -> None:
        self.model, self.baseline, self.mode = model, baseline, mode
        self.task = LandmarkTask()
        weights = [p for n, p in model.named_parameters() if n != "theta"]
        self.weights = weights
        self.w_opt = torch.optim.SGD(weights, lr=0.01, momentum=0.9)
        self.theta = [model.theta] if hasattr(model, "theta") else []
        self.t_opt = torch.optim.Adam(self.theta, lr=0.01) if self.theta else None
        self.sampler = ArchSampler(0)

    def step(self, x, y, kind: str, aux: bool = True) -> None:
        model = self.model.train()
        if isinstance(model, PFLDSupernet):
            model.mode = self.mode
            sample = self.sampler.sample(model, TAU)
        else:
            sample = PathSample(torch.zeros(1))
        out, cost = model(x, sample)
        task_loss = (self.task.loss(out, y) if kind == "w" and aux
                     else self.task.arch_loss(out, y))
        loss = task_loss * (0.25 * torch.log(math.e * cost / 1e6).clamp_min(1) ** 0.6)
        optimizer = self.w_opt if kind == "w" else self.t_opt
        optimizer.zero_grad(set_to_none=True)
        if self.baseline:
            model.zero_grad(set_to_none=True)
            loss.backward()
        else:
            loss.backward(inputs=self.weights if kind == "w" else self.theta)
        optimizer.step()


def _rss_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def peak_step_mb(run) -> float:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")
    run()
    return (_rss_kb("VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 112, 112, generator=g)
    y = {"points": torch.rand(args.batch, 106, 2, generator=g),
         "angles": 30 * torch.randn(args.batch, 3, generator=g),
         "attributes": torch.zeros(args.batch, 6)}
    torch.manual_seed(0)
    costs = pfld_layer_costs("macs")
    steppers = {"baseline": Stepper(LoopSupernet(), True, None),
                "fbnas soft": Stepper(PFLDSupernet(costs, mode="soft"), False, "soft"),
                "fbnas single-path": Stepper(PFLDSupernet(costs, mode="single-path"), False,
                                             "single-path"),
                "fixed only": Stepper(FixedOnly(), False, None)}
    configs = [(name, kind, True) for name in ("baseline", "fbnas soft", "fbnas single-path")
               for kind in ("w", "theta")]
    configs += [("fbnas soft", "w", False), ("fixed only", "w", False)]
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    memory: dict[tuple, list[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for config in order:
            name, kind, aux = config
            stepper = steppers[name]
            for _ in range(args.warmup):
                stepper.step(x, y, kind, aux)
            start = time.perf_counter()
            for _ in range(args.steps):
                stepper.step(x, y, kind, aux)
            times[config].append((time.perf_counter() - start) / args.steps)
            memory[config].append(peak_step_mb(lambda s=stepper, k=kind, a=aux: s.step(x, y, k, a)))
    med = {c: statistics.median(v) for c, v in times.items()}
    print(f"batch {args.batch} at 112x112, {args.threads} thread(s), {args.rounds} rounds x "
          f"{args.steps} steps")
    print(f"{'configuration':<34} {'img/s':>14} {'x baseline':>18} {'peak MB':>8}")
    for config in configs[:6]:
        name, kind, _ = config
        ref = ("baseline", kind, True)
        ratios = [b / t for b, t in zip(times[ref], times[config], strict=True)]
        speeds = [args.batch / t for t in times[config]]
        print(f"{name + ' ' + kind:<34} {statistics.median(speeds):7.1f} "
              f"({min(speeds):.0f}-{max(speeds):.0f}) {statistics.median(ratios):6.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) {statistics.median(memory[config]):8.0f}")
    w_full = med[("fbnas soft", "w", True)]
    w_noaux = med[("fbnas soft", "w", False)]
    fixed = med[("fixed only", "w", False)]
    aux = w_full - w_noaux
    cand = w_noaux - fixed
    base_w = med[("baseline", "w", True)]
    bound = base_w / (fixed + aux)
    gain = base_w / w_full
    print(f"fbnas soft w step split: candidates {1000 * cand:.0f} ms, fixed backbone "
          f"{1000 * fixed:.0f} ms, auxiliary net {1000 * aux:.0f} ms")
    print(f"w step gain {gain:.2f}x of at most {bound:.2f}x (candidates free): "
          f"{100 * (gain - 1) / (bound - 1):.0f} % of the gain the split allows"
          if bound > 1 else f"w step gain {gain:.2f}x; the split allows none")


if __name__ == "__main__":
    main()
