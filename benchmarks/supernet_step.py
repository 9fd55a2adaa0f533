"""Supernet step throughput: fbnas's supernet against a plain mixed-op baseline.

What is timed is one optimisation step as the search runs it (forward with fresh Gumbel
noise, cost-aware loss, backward, optimizer step) on random images and labels:

* ``w`` steps update the weights (SGD), ``theta`` steps update θ (Adam);
* ``baseline``: the mixed op the public FBNet implementations write (a loop over candidates
  summing ``w_i * b_i(x)``, NCHW) and their θ step, which back-propagates into the weights
  too (``loss.backward()``, then only the θ optimizer steps), in a process with glibc's
  default allocator. Written here, not in the library; built from the same blocks and
  initialised with the same seed;
* ``baseline+malloc``: the same baseline in a process with fbnas's allocator setting
  (:func:`fbnas.train.memory.keep_freed_memory`), to separate what the setting gives from
  what the supernet's own code gives;
* ``fbnas``: :class:`fbnas.search.dnas.Supernet` as ``fbnas search dnas`` runs it
  (channels_last, mixture weights folded into the last BN, ``backward(inputs=...)`` so the θ
  step computes no weight gradients, the allocator setting), in ``soft`` and
  ``single-path`` mode;
* with ``--ablation``: fbnas with glibc's default allocator, and fbnas in NCHW.

Method: each group of configurations runs in a fresh process per round (the allocator
setting is process-wide; a fresh process also starts every round from the same memory
state). In it every configuration gets ``--warmup`` untimed steps, then timed steps (at least
``--steps`` and at least ``--min-seconds``); rounds rotate the order of the groups so that
machine noise hits all of them, and re-seed the RNG so that single-path configurations draw
the same paths. Reported: images/s as the median over rounds (min-max), and the ratio to the
baseline's step of the same kind, computed per round (median, min-max). Soft baseline steps
are the reference for single-path steps too.

Peak memory (Linux): after the timed steps, free heap memory is returned to the OS
(``malloc_trim``), the RSS is read and the process's peak-RSS mark is reset
(``/proc/self/clear_refs``); one more step runs and the peak RSS minus that RSS is reported,
the median over rounds. That is the resident memory a step needs on top of the model,
gradients and optimizer state (activations kept for backward, temporaries, allocator
slack), not a count of live tensors.

    python benchmarks/supernet_step.py --space fbnet_v1_cifar --resolution 32 --batch 64
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import multiprocessing
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
from fbnas.search.space import candidate_traces, get_space
from fbnas.train.memory import keep_freed_memory
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
class Group:
    """Models that run in one worker process, and that process's allocator."""

    name: str
    model: str  # "baseline" or "fbnas"
    channels_last: bool = True
    tuned_malloc: bool = True


@dataclass(frozen=True)
class Config:
    """One timed configuration: which group, which mode, which step."""

    group: str
    mode: str
    kind: str  # "w" or "theta"

    @property
    def name(self) -> str:
        return f"{self.group} {self.mode} {self.kind}"


GROUPS = {g.name: g for g in (
    Group("baseline", "baseline", channels_last=False, tuned_malloc=False),
    Group("baseline+malloc", "baseline", channels_last=False),
    Group("fbnas", "fbnas"),
    Group("fbnas default-malloc", "fbnas", tuned_malloc=False),
    Group("fbnas NCHW", "fbnas", channels_last=False),
)}
REFERENCES = ("baseline", "baseline+malloc")


def configs(ablation: bool) -> list[Config]:
    out = [Config(g, "soft", k) for g in REFERENCES for k in ("w", "theta")]
    out += [Config("fbnas", mode, k) for mode in ("soft", "single-path") for k in ("w", "theta")]
    if ablation:
        out += [Config(g, "soft", k) for g in ("fbnas default-malloc", "fbnas NCHW")
                for k in ("w", "theta")]
    return out


def build(group: Group, space: str, costs: LayerCosts, resolution: int) -> nn.Module:
    torch.manual_seed(0)
    if group.model == "baseline":
        return LoopSupernet(space, costs, resolution)
    return Supernet(space, costs, NUM_CLASSES, resolution, channels_last=group.channels_last)


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
            # As fbnas.search.engine does: only the stepped parameters' gradients.
            params = (self.model.weight_parameters() if kind == "w"
                      else self.model.arch_parameters())
            loss.backward(inputs=params)
        optimizer.step()


def _batch(batch: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 3, resolution, resolution, generator=g),
            torch.randint(0, NUM_CLASSES, (batch,), generator=g))


def time_config(stepper: Stepper, config: Config, x: torch.Tensor, y: torch.Tensor,
                warmup: int, steps: int, min_seconds: float, seed: int) -> float:
    """Images/s over at least ``steps`` steps and ``min_seconds``, after ``warmup`` untimed
    steps."""
    torch.manual_seed(seed)
    for _ in range(warmup):
        stepper.step(x, y, config.mode, config.kind)
    done, start = 0, time.perf_counter()
    while done < steps or time.perf_counter() - start < min_seconds:
        stepper.step(x, y, config.mode, config.kind)
        done += 1
    return done * x.shape[0] / (time.perf_counter() - start)


def run_group(group: Group, todo: list[Config], args: argparse.Namespace,
              seed: int) -> dict[str, tuple[float, float]]:
    """In a fresh process: {config name: (images/s, step MB)} for the group's configurations."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if group.tuned_malloc and not keep_freed_memory():
        raise RuntimeError("the allocator setting is not available here (glibc Linux only)")
    costs = layer_costs(args.space, "macs", resolution=args.resolution,
                        num_classes=NUM_CLASSES)
    stepper = Stepper(build(group, args.space, costs, args.resolution), costs,
                      group.model == "baseline")
    x, y = _batch(args.batch, args.resolution)
    rates = {c.name: time_config(stepper, c, x, y, args.warmup, args.steps, args.min_seconds,
                                 seed) for c in todo}
    out = {}
    for c in todo:
        torch.manual_seed(seed)
        with PeakRSS() as memory:
            stepper.step(x, y, c.mode, c.kind)
        out[c.name] = (rates[c.name], memory.step_mb)
    return out


def _worker(group: Group, todo: list[Config], args: argparse.Namespace, seed: int,
            conn) -> None:
    try:
        conn.send(run_group(group, todo, args, seed))
    except BaseException as exc:  # the parent reports it; a worker has no terminal of its own
        conn.send(exc)
    finally:
        conn.close()


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
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per configuration and round (the first steps of "
                             "a process page-fault their activations in)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ablation", action="store_true",
                        help="also time fbnas with glibc's default allocator and in NCHW")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    todo = configs(args.ablation)
    groups = list(dict.fromkeys(c.group for c in todo))
    context = multiprocessing.get_context("spawn")
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {c.name: [] for c in todo}
    memory: dict[str, list[float]] = {c.name: [] for c in todo}
    for r in range(args.rounds):
        for name in groups[r % len(groups):] + groups[:r % len(groups)]:
            mine = [c for c in todo if c.group == name]
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_worker, args=(GROUPS[name], mine, args, r, send))
            process.start()
            send.close()
            result = receive.recv()
            process.join()
            if isinstance(result, BaseException):
                raise RuntimeError(f"group {name!r} failed in round {r + 1}") from result
            for config in mine:
                rate, step_mb = result[config.name]
                rates[config.name].append(rate)
                memory[config.name].append(step_mb)
                print(f"round {r + 1}: {config.name:36s} {rate:8.2f} img/s {step_mb:7.0f} MB "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    load_after = os.getloadavg()

    threads = args.threads or torch.get_num_threads()
    print(f"\n{args.space} {args.resolution}px batch {args.batch}, torch {torch.__version__}, "
          f"{threads} threads, {_cpu_name()}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"{args.rounds} rounds")
    print(f"{'configuration':36s} {'images/s':>22s} {'x baseline':>18s} "
          f"{'x baseline+malloc':>18s} {'step MB':>8s}")
    results = []
    for config in todo:
        ratios = {ref: [a / b for a, b in zip(rates[config.name],
                                               rates[f"{ref} soft {config.kind}"], strict=True)]
                  for ref in REFERENCES}
        print(f"{config.name:36s} {_spread(rates[config.name], lambda v: f'{v:.2f}'):>22s} "
              + " ".join(f"{_spread(ratios[ref], lambda v: f'{v:.2f}'):>18s}"
                         for ref in REFERENCES)
              + f" {statistics.median(memory[config.name]):8.0f}")
        results.append({"config": {"group": config.group, "mode": config.mode,
                                   "kind": config.kind},
                        "images_per_s": rates[config.name], "ratio": ratios,
                        "step_mb": memory[config.name]})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"space": args.space, "resolution": args.resolution,
                       "batch": args.batch, "torch": torch.__version__,
                       "threads": threads, "cpu": _cpu_name(),
                       "load_before": load_before, "load_after": load_after,
                       "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
