"""Supernet step throughput: fbnas's supernet against a plain mixed-op baseline.

What is timed is one optimisation step as the search runs it (forward with fresh Gumbel
noise, cost-aware loss, backward, optimizer step) on random images and labels:

* ``w`` steps update the weights (SGD), ``theta`` steps update θ (Adam);
* ``baseline``: the mixed op the public FBNet implementations write (a loop over candidates
  summing ``w_i * b_i(x)``, NCHW) and their θ step, which back-propagates into the weights
  too (``loss.backward()``, then only the θ optimizer steps). Written here, not in the
  library; it is built from the same blocks and initialised with the same seed;
* ``fbnas``: :class:`fbnas.search.dnas.Supernet` as the search uses it (fused candidates,
  channels_last, ``backward(inputs=...)`` so the θ step computes no weight gradients), in
  ``soft`` and ``single-path`` mode;
* with ``--ablation``, the library supernet with fusion and/or channels_last switched off,
  to see what each part contributes.

Method: every configuration gets ``--warmup`` untimed steps, then timed steps (at least
``--steps`` and at least ``--min-seconds``) per round; rounds interleave the configurations
(in a rotated order) so that machine noise hits all of them, and each round re-seeds the RNG
so that single-path configurations draw the same paths. Reported: images/s as the median over
rounds (min-max), and the ratio to the baseline's step of the same kind, computed per round
(median, min-max). Soft baseline steps are the reference for single-path steps too.

Peak memory (Linux): around each configuration's timed steps, free heap memory is returned to
the OS (``malloc_trim``), the RSS is read and the process's peak-RSS mark is reset
(``/proc/self/clear_refs``); reported is the peak RSS minus that RSS, the median over rounds.
That is the resident memory a step needs on top of the model, gradients and optimizer state
(activations kept for backward, temporaries, allocator slack), not a count of live tensors.

    python benchmarks/supernet_step.py --space fbnet_v1_cifar --resolution 32 --batch 64
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fbnas.builder import build_plan
from fbnas.search.dnas import CostLoss, LayerCosts, Supernet, layer_costs
from fbnas.search.dnas.supernet import candidate_traces
from fbnas.search.space import get_space
from fbnas.zoo.model import ClsConvHead

NUM_CLASSES = 10
TAU = 5.0


# --------------------------------------------------------------------------- the baseline


class LoopMixedOp(nn.Module):
    """Σ_i w_i b_i(x), one candidate after the other (as the public implementations do)."""

    def __init__(self, candidates: list[nn.Module], costs: tuple[float, ...]) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(candidates)
        self.register_buffer("costs", torch.tensor(costs), persistent=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * candidate(x) for w, candidate in zip(weights, self.candidates,
                                                             strict=True))


class LoopSupernet(nn.Module):
    """The baseline supernet: NCHW, a loop per layer, soft Gumbel weights."""

    def __init__(self, space: str, costs: LayerCosts, resolution: int) -> None:
        super().__init__()
        layers, prefix, suffix, _ = candidate_traces(get_space(space), resolution)
        self.costs = costs
        self.stem = nn.Sequential(*[build_plan(t) for t in prefix])
        self.layers = nn.ModuleList(
            LoopMixedOp([build_plan(t) for t in row], cost_row)
            for row, cost_row in zip(layers, costs.per_layer, strict=True))
        self.tail = nn.Sequential(*[build_plan(t) for t in suffix])
        last = suffix[-1] if suffix else layers[-1][0]
        self.head = ClsConvHead(last.out_channels, NUM_CLASSES)
        self.theta = nn.Parameter(torch.zeros(len(layers), len(layers[0])))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "theta"]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def forward(self, x: torch.Tensor, tau: float, mode: str) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
        weights = F.gumbel_softmax(self.theta, tau=tau, hard=False, dim=-1)
        x = self.stem(x)
        cost = x.new_tensor(self.costs.fixed)
        for w, layer in zip(weights, self.layers, strict=True):
            x = layer(x, w)
            cost = cost + (w * layer.costs).sum()
        return self.head(self.tail(x)), cost


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Config:
    """One timed configuration: which model, which mode, which step."""

    name: str
    model: str
    mode: str
    kind: str  # "w" or "theta"

    @property
    def reference(self) -> str:
        """The baseline configuration this one is compared with."""
        return f"baseline soft {self.kind}"


MODELS: dict[str, dict[str, bool]] = {
    "fbnas": {"fuse": True, "channels_last": True},
    "fbnas unfused": {"fuse": False, "channels_last": True},
    "fbnas NCHW": {"fuse": True, "channels_last": False},
    "fbnas unfused NCHW": {"fuse": False, "channels_last": False},
}


def configs(ablation: bool) -> list[Config]:
    out = [Config(f"baseline soft {k}", "baseline", "soft", k) for k in ("w", "theta")]
    for mode in ("soft", "single-path"):
        out += [Config(f"fbnas {mode} {k}", "fbnas", mode, k) for k in ("w", "theta")]
    if ablation:
        for model in ("fbnas unfused NCHW", "fbnas unfused", "fbnas NCHW"):
            out += [Config(f"{model} soft {k}", model, "soft", k) for k in ("w", "theta")]
    return out


def build(model: str, space: str, costs: LayerCosts, resolution: int) -> nn.Module:
    torch.manual_seed(0)
    if model == "baseline":
        return LoopSupernet(space, costs, resolution)
    return Supernet(space, costs, NUM_CLASSES, resolution, **MODELS[model])


class Stepper:
    """One model with its two optimizers, stepping as its search does."""

    def __init__(self, model: nn.Module, costs: LayerCosts, baseline: bool) -> None:
        self.model = model
        self.baseline = baseline
        self.criterion = CostLoss(costs.cheapest)
        self.w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.01, momentum=0.9,
                                     weight_decay=1e-4)
        self.theta_opt = torch.optim.Adam(model.arch_parameters(), lr=0.01,
                                          weight_decay=5e-4)

    def step(self, x: torch.Tensor, y: torch.Tensor, mode: str, kind: str) -> None:
        self.model.train()
        logits, cost = self.model(x, tau=TAU, mode=mode)
        loss = self.criterion(F.cross_entropy(logits, y), cost)
        optimizer = self.w_opt if kind == "w" else self.theta_opt
        optimizer.zero_grad(set_to_none=True)
        if self.baseline:
            self.model.zero_grad(set_to_none=True)
            loss.backward()  # every gradient, whichever optimizer steps
        else:
            # As fbnas.search.dnas.search does: only the stepped parameters' gradients.
            params = (self.model.weight_parameters() if kind == "w"
                      else self.model.arch_parameters())
            loss.backward(inputs=params)
        optimizer.step()


def _batch(batch: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 3, resolution, resolution, generator=g),
            torch.randint(0, NUM_CLASSES, (batch,), generator=g))


def time_config(stepper: Stepper, config: Config, x: torch.Tensor, y: torch.Tensor,
                warmup: int, steps: int, min_seconds: float, seed: int) -> tuple[float, float]:
    """(images/s, peak step MB) over at least ``steps`` steps and ``min_seconds``, after
    ``warmup`` untimed steps."""
    torch.manual_seed(seed)
    for _ in range(warmup):
        stepper.step(x, y, config.mode, config.kind)
    with PeakRSS() as memory:
        done, start = 0, time.perf_counter()
        while done < steps or time.perf_counter() - start < min_seconds:
            stepper.step(x, y, config.mode, config.kind)
            done += 1
        elapsed = time.perf_counter() - start
    return done * x.shape[0] / elapsed, memory.step_mb


# --------------------------------------------------------------------------- memory


def _rss_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRSS:
    """Peak resident memory growth (MB) over a block of code (Linux, glibc)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL("libc.so.6")
        self.step_mb = math.nan

    def __enter__(self) -> PeakRSS:
        self.libc.malloc_trim(0)  # freed memory of earlier configurations leaves the RSS
        self.before = _rss_kb("VmRSS")
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc: object) -> None:
        self.step_mb = (_rss_kb("VmHWM") - self.before) / 1024


# --------------------------------------------------------------------------- report


def _spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fbnet_v1_cifar")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="least timed steps per round")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="least timed seconds per configuration and round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ablation", action="store_true",
                        help="also time the library supernet without fusion/channels_last")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    costs = layer_costs(args.space, "macs", resolution=args.resolution,
                        num_classes=NUM_CLASSES)
    todo = configs(args.ablation)
    steppers = {m: Stepper(build(m, args.space, costs, args.resolution), costs,
                           m == "baseline")
                for m in dict.fromkeys(c.model for c in todo)}
    x, y = _batch(args.batch, args.resolution)
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {c.name: [] for c in todo}
    memory: dict[str, list[float]] = {c.name: [] for c in todo}
    for r in range(args.rounds):
        order = todo[r % len(todo):] + todo[:r % len(todo)]
        for config in order:
            rate, step_mb = time_config(steppers[config.model], config, x, y, args.warmup,
                                        args.steps, args.min_seconds, seed=r)
            rates[config.name].append(rate)
            memory[config.name].append(step_mb)
            print(f"round {r + 1}: {config.name:32s} {rate:8.2f} img/s {step_mb:7.0f} MB "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    load_after = os.getloadavg()

    print(f"\n{args.space} {args.resolution}px batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {_cpu_name()}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"{args.rounds} rounds")
    print(f"{'configuration':32s} {'images/s':>24s} {'x baseline':>22s} {'step MB':>9s}")
    results = []
    for config in todo:
        ref = rates[config.reference]
        ratios = [a / b for a, b in zip(rates[config.name], ref, strict=True)]
        print(f"{config.name:32s} {_spread(rates[config.name], lambda v: f'{v:.2f}'):>24s} "
              f"{_spread(ratios, lambda v: f'{v:.2f}'):>22s} "
              f"{statistics.median(memory[config.name]):9.0f}")
        results.append({"config": config.__dict__, "images_per_s": rates[config.name],
                        "ratio": ratios, "step_mb": memory[config.name]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"space": args.space, "resolution": args.resolution,
                       "batch": args.batch, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu": _cpu_name(),
                       "load_before": load_before, "load_after": load_after,
                       "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
