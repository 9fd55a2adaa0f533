"""Forward time of a slim network set to a width vs its extracted static subnet.

The slicing overhead ratio: a slim network at widths ``real_ch`` computes exactly what
``fbnas.slim.extract_subnet(model, real_ch)`` computes (checked here first), but each layer
slices its max-width weights on every call and checks its input width. Both sides run in
eval mode under ``torch.no_grad()`` on the same input, after warm-up; rounds alternate
which side goes first (ABBA) so that machine drift hits both; each round times ``--runs``
forward passes per side and keeps their median. Printed per model and width: the median
ms of each side over rounds, and the slim/static time ratio (median over rounds, min-max).

With ``--cost`` it also times the width API itself per call (decode, set_real_ch,
analytic cost, extraction of the arch def), which search loops pay per candidate.

    python benchmarks/slim_forward.py --rounds 5 --runs 20 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fbnas.export import calibrate_batchnorm
from fbnas.slim import (
    build_slim_model,
    extract_arch_spec,
    extract_subnet,
    subnet_cost,
)


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def compare(name: str, wm: float, resolution: int, batch: int, rounds: int,
            runs: int, warmup: int) -> dict[str, object]:
    """Times slim vs extracted static forward passes; returns the per-round figures."""
    torch.manual_seed(0)
    model = build_slim_model(name, num_classes=1000)
    real_ch = model.set_wm([wm] * model.search_dim)
    calibrate_batchnorm(model, (2, 3, resolution, resolution))
    model.eval()
    static = extract_subnet(model, real_ch).eval()
    x = torch.randn(batch, 3, resolution, resolution)
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-4)
        for _ in range(warmup):
            model(x)
            static(x)
        slim_ms, static_ms, ratios = [], [], []
        for r in range(rounds):
            order = [("slim", model), ("static", static)]
            if r % 2:
                order.reverse()
            got = {label: _median_ms(lambda m=m: m(x), runs) for label, m in order}
            slim_ms.append(got["slim"])
            static_ms.append(got["static"])
            ratios.append(got["slim"] / got["static"])
    return {"model": name, "wm": wm, "slim_ms": slim_ms, "static_ms": static_ms,
            "ratio": ratios}


def time_api(name: str, runs: int) -> dict[str, float]:
    """Median ms per call of the width API on a model built on the meta device."""
    with torch.device("meta"):
        model = build_slim_model(name)
    wm = [0.5] * model.search_dim
    real_ch = model.decode_ch(model.decode_wm(wm))
    subnet_cost(model, real_ch)  # caches the output positions (one meta forward)
    return {
        "decode_wm + decode_ch": _median_ms(lambda: model.decode_ch(model.decode_wm(wm)),
                                            runs),
        "set_real_ch": _median_ms(lambda: model.set_real_ch(real_ch), runs),
        "subnet_cost": _median_ms(lambda: subnet_cost(model, real_ch), runs),
        "extract_arch_spec": _median_ms(lambda: extract_arch_spec(model, real_ch),
                                        max(runs // 10, 3)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["slim_mbv2", "slim_mbv3", "slim_resnet18"])
    parser.add_argument("--wm", nargs="+", type=float, default=[0.5, 1.0],
                        help="uniform width multipliers to compare at")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="timed passes per side per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost", action="store_true", help="also time the width API")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"{args.resolution}x{args.resolution}, {args.rounds} rounds x {args.runs} runs")
    print("| model | wm | slim ms | static ms | slim / static |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for wm in args.wm:
            row = compare(name, wm, args.resolution, args.batch, args.rounds, args.runs,
                          args.warmup)
            print(f"| {name} | {wm} | {_spread(row['slim_ms'])} | {_spread(row['static_ms'])} "
                  f"| {_spread(row['ratio'])} |", flush=True)
    if args.cost:
        print("\n| model | " + " | ".join(time_api(args.models[0], 3)) + " |")
        print("|---|---|---|---|---|")
        for name in args.models:
            times = time_api(name, 50)
            print(f"| {name} | " + " | ".join(f"{t:.3f} ms" for t in times.values()) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
