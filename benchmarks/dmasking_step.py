"""DMasking supernet step: flat in the number of width options, unlike one candidate each.

Issue 16 item 9. One search step (Gumbel sample, forward, cost-aware loss, backward of the
weights and θ, SGD step) on random 32x32 images, for

* ``masked k``: :class:`fbnas.search.dmasking.supernet.MaskedSupernet` with k width
  options per layer (output widths and hidden widths), one weight tensor at the widest;
* ``per-candidate k``: an FBNetV1-style supernet of the same macro-architecture holding one
  inverted-residual candidate per width option of each layer (its output zero-padded to
  the widest width), summed with Gumbel weights — written here, not in the library.

Each (configuration, round) runs in a fresh process (spawn): ``--warmup`` untimed steps,
then ``--steps`` timed ones (median), and the peak resident memory of one more step over
the RSS before it (VmHWM after ``clear_refs``, as ``supernet_step.py`` reads it). Rounds
rotate the order of the configurations. Reported: median step time and step memory over
rounds (min-max), and each one's ratio to its own family's k = 2.

    python benchmarks/dmasking_step.py --rounds 3 --steps 5
    python benchmarks/dmasking_step.py --interleaved --rounds 3 --steps 5   # time, one process
"""

from __future__ import annotations

import argparse
import ctypes
import math
import multiprocessing
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

MACRO = [  # (kind, blocks, stride, max width, expansion) of the benchmark network
    ("conv", 1, 2, 16, 1), ("ir", 1, 1, 16, 3), ("ir", 2, 2, 32, 4), ("ir", 2, 2, 48, 4),
    ("ir", 1, 1, 64, 4), ("ir_pool", 1, 1, 128, 2),
]


def width_options(top: int, k: int, divisor: int = 4) -> list[int]:
    """k widths evenly spread over (0, top], multiples of ``divisor``, the last = top."""
    return sorted({max(divisor, int(round(top * (i + 1) / k / divisor)) * divisor)
                   for i in range(k)} | {top})


def masked_space(k: int) -> dict:
    stages = []
    for kind, blocks, stride, top, e in MACRO:
        # The stem shares its width with the first stage (a residual add ties them).
        widths = [top] if kind == "ir_pool" else width_options(top, k)
        exps = [e] if kind == "conv" or kind == "ir_pool" else [
            round(e * (i + 1) / k, 4) for i in range(k)]
        stages.append({"kind": kind, "blocks": blocks, "stride": stride, "widths": widths,
                       "expansions": exps, "kernels": [3]})
    return {"name": f"bench_k{k}", "resolutions": [32], "width_divisor": 4,
            "stages": stages}


class PaddedMixedOp(nn.Module):
    """FBNetV1-style: one inverted residual per width option, zero-padded, Gumbel-summed."""

    def __init__(self, in_channels: int, widths: list[int], stride: int, e: float) -> None:
        super().__init__()
        from fbnas.blocks import BLOCKS

        op = BLOCKS.get("ir_k3")
        self.top = max(widths)
        self.candidates = nn.ModuleList(
            op.plan(in_channels, w, stride, {"expansion": e}, {"width_divisor": 4}).build()
            for w in widths)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = None
        for w, cand in zip(weights, self.candidates, strict=True):
            y = cand(x)
            y = F.pad(y, (0, 0, 0, 0, 0, self.top - y.shape[1])) * w
            out = y if out is None else out + y
        return out


class PerCandidateSupernet(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        from fbnas.blocks import BLOCKS

        layers: list[nn.Module] = []
        channels = 3
        self.searched: list[bool] = []
        for kind, blocks, stride, top, e in MACRO:
            for b in range(blocks):
                s = stride if b == 0 else 1
                if kind == "conv":
                    layers.append(BLOCKS.get("conv_k3").plan(channels, top, s, {}, {}).build())
                    self.searched.append(False)
                elif kind == "ir_pool":
                    layers.append(BLOCKS.get("ir_pool").plan(channels, top, s, {"expansion": e},
                                                             {}).build())
                    self.searched.append(False)
                else:
                    layers.append(PaddedMixedOp(channels, width_options(top, k), s, e))
                    self.searched.append(True)
                channels = top
        self.layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(channels, 10)
        self.theta = nn.Parameter(torch.zeros(sum(self.searched), k))

    def forward(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        g = F.gumbel_softmax(self.theta, tau=tau, dim=-1)
        i = 0
        for layer, searched in zip(self.layers, self.searched, strict=True):
            if searched:
                x = layer(x, g[i, : len(layer.candidates)])
                i += 1
            else:
                x = layer(x)
        return self.classifier(x.mean((2, 3)))


def _rss_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _worker(family: str, k: int, args: argparse.Namespace, queue) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    if family == "masked":
        from fbnas.search.dmasking.space import DMaskingSpace
        from fbnas.search.dmasking.supernet import MaskedSupernet

        net = MaskedSupernet(DMaskingSpace.from_dict(masked_space(k)), 10)
        generator = torch.Generator().manual_seed(1)

        def forward() -> tuple[torch.Tensor, torch.Tensor]:
            return net(x, net.sample(generator, 5.0))
    else:
        net = PerCandidateSupernet(k).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)

        def forward() -> tuple[torch.Tensor, torch.Tensor]:
            return net(xc, 5.0), torch.zeros(())

    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        logits, cost = forward()
        loss = F.cross_entropy(logits, y) * (1 + 1e-9 * cost)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")
    step()
    peak = (_rss_kb("VmHWM") - before) / 1024
    params = sum(p.numel() for p in net.parameters())
    queue.put((statistics.median(times), peak, params))


def interleaved(ks: list[int], args: argparse.Namespace) -> None:
    """Time of the masked supernets of every k in one process, alternating step by step.

    Why: across processes the step times on a loaded machine spread ×3 or more within one
    configuration; steps of k = 2 and k = 8 alternated in one process see the same load,
    so their ratio (min and median) is the one to read for the ≤ 1.15 time goal.
    """
    from fbnas.search.dmasking.space import DMaskingSpace
    from fbnas.search.dmasking.supernet import MaskedSupernet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    steps = {}
    for k in ks:
        net = MaskedSupernet(DMaskingSpace.from_dict(masked_space(k)), 10)
        generator = torch.Generator().manual_seed(1)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step(net=net, generator=generator, opt=opt) -> None:
            logits, cost = net(x, net.sample(generator, 5.0))
            loss = F.cross_entropy(logits, y) * (1 + 1e-9 * cost)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[k] = step
        for _ in range(args.warmup):
            step()
    times: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(args.steps * args.rounds):
        for k in ks:
            start = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - start)
    print(f"\nmasked, one process, {args.steps * args.rounds} alternated steps per k, "
          f"batch {args.batch}, {args.threads} thread(s)")
    print("| k | min ms | median ms | min ratio | median ratio |")
    print("|---|---|---|---|---|")
    base = times[ks[0]]
    for k in ks:
        t = times[k]
        print(f"| {k} | {1000 * min(t):.1f} | {1000 * statistics.median(t):.1f} | "
              f"{min(t) / min(base):.2f} | {statistics.median(t) / statistics.median(base):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2,4,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--interleaved", action="store_true",
                        help="masked only, one process, k alternated step by step (time)")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    if args.interleaved:
        interleaved(ks, args)
        return
    configs = [(f, k) for f in ("masked", "per-candidate") for k in ks]
    results: dict[tuple[str, int], list[tuple[float, float, int]]] = {c: [] for c in configs}
    ctx = multiprocessing.get_context("spawn")
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for family, k in order:
            queue = ctx.Queue()
            proc = ctx.Process(target=_worker, args=(family, k, args, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                raise SystemExit(f"{family} k={k} failed (exit {proc.exitcode})")
            results[(family, k)].append(queue.get())
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    def spread(values: list[float], fmt: str) -> str:
        return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-"
                f"{max(values):{fmt}})")

    print(f"\nbatch {args.batch}, 32x32, {args.threads} thread(s), {args.rounds} rounds x "
          f"{args.steps} steps; ratios to the family's k={ks[0]}, per round (median)")
    print("| supernet | k | params | step ms | step memory MB | time ratio | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for family, k in configs:
        rows = results[(family, k)]
        base = results[(family, ks[0])]
        t_ratio = [a[0] / b[0] for a, b in zip(rows, base, strict=True)]
        m_ratio = [a[1] / b[1] if b[1] > 0 else math.nan for a, b in zip(rows, base,
                                                                            strict=True)]
        print(f"| {family} | {k} | {rows[0][2]:,} | {spread([1000 * t for t, _, _ in rows], '.1f')}"
              f" | {spread([m for _, m, _ in rows], '.1f')} | {spread(t_ratio, '.2f')} | "
              f"{spread(m_ratio, '.2f')} |")


if __name__ == "__main__":
    main()
