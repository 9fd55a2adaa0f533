"""Does a DNAS search run on CUDA, and does it search like the CPU one? Timings of both.

Runs the same short search (soft and single-path; same seed, data and settings) on the CPU,
on CUDA, and on CUDA with bfloat16 autocast, and records per run: the wall time, the
derived architecture, θ at the end, its entropy, the argmax path's validation top-1 and
the expected cost. θ is compared with the CPU run's loosely (the largest difference; the
derived choices need not agree: GPU convolutions sum in another order, and the search
amplifies tiny differences over epochs). The architecture samples are drawn on the CPU
stream on both devices, so the first steps see the same samples.

Writes ``OUT/gpu_check.json`` and prints a table. Without CUDA it says so and exits 0.

    python benchmarks/gpu_search_check.py --out bench_out/gpu_check [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from fbnas.search.dnas.search import DNASConfig, run_search


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_run(name: str, config: DNASConfig, args: argparse.Namespace) -> dict:
    out = args.out / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    if config.device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = run_search(args.space, args.data, config, out)
    if config.device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    last = result.history[-1]
    theta = json.loads((out / "theta.json").read_text())["theta"]
    record = {"name": name, "device": config.device, "amp": config.amp, "mode": config.mode,
              "seconds": seconds, "seconds_per_epoch": seconds / config.epochs,
              "choices": result.choice_names, "cost": result.cost, "entropy": last["entropy"],
              "val_top1": last["val_top1"], "expected_cost": last["expected_cost"],
              "theta": theta}
    log(f"{name}: {seconds:.1f} s, val top-1 {last['val_top1']:.1%}, entropy "
        f"{last['entropy']:.3f}, derived {', '.join(result.choice_names)}")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/gpu_check"))
    parser.add_argument("--space", default="fbnet_v1_tiny")
    parser.add_argument("--data", default="digits?per_class=60")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the CPU runs (default: torch's)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        log("gpu_search_check: CUDA is not available on this machine; nothing to check "
            "(run it where a GPU is)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = DNASConfig(epochs=args.epochs, warmup_epochs=1, batch_size=args.batch_size,
                      cost="macs", theta_lr=0.1, tau_final=1.0, seed=args.seed,
                      resolution=args.resolution, num_samples=2, tensorboard=False)
    log(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; {args.space} at "
        f"{args.resolution}px on {args.data}, {args.epochs} epochs")
    # CUDA start-up and cuDNN's first kernels, outside the timings
    one_run("warmup", replace(base, epochs=2, device="cuda"), args)
    runs = []
    for mode in ("soft", "single-path"):
        config = replace(base, mode=mode)  # type: ignore[arg-type]
        cpu = one_run(f"{mode}_cpu", config, args)
        runs.append(cpu)
        for amp in (False, True):
            gpu = one_run(f"{mode}_cuda{'_amp' if amp else ''}",
                          replace(config, device="cuda", amp=amp), args)
            diff = (torch.tensor(gpu["theta"]) - torch.tensor(cpu["theta"])).abs()
            gpu["theta_max_abs_diff_vs_cpu"] = float(diff.max())
            gpu["theta_max_abs_vs_cpu"] = float(torch.tensor(cpu["theta"]).abs().max())
            gpu["same_choices_as_cpu"] = gpu["choices"] == cpu["choices"]
            gpu["speedup_vs_cpu"] = cpu["seconds"] / gpu["seconds"]
            runs.append(gpu)
    (args.out / "gpu_check.json").write_text(json.dumps(runs, indent=1))
    print(f"{'run':<22}{'s/epoch':>9}{'val top1':>10}{'entropy':>9}{'|dθ| max':>10}"
          f"{'same arch':>10}")
    for run in runs:
        diff = run.get("theta_max_abs_diff_vs_cpu")
        same = run.get("same_choices_as_cpu")
        print(f"{run['name']:<22}{run['seconds_per_epoch']:>9.2f}{run['val_top1']:>10.1%}"
              f"{run['entropy']:>9.3f}{'' if diff is None else f'{diff:.2e}':>10}"
              f"{'' if same is None else str(same):>10}")
    print(f"wrote {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
