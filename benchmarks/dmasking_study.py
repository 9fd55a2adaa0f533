"""Does DMaskingNAS work? Its network against random ones and the slim width search's.

Issue 16 item 8, on the hard digits proxy (``digits?per_class=20``, the ``digits_hard``
recipe, shortened to ``--epochs``) at one MACs budget (``--target``), in the
``dmasking_digits`` space:

* **DMasking**: ``run_search`` with the ``demo`` settings and the target (seed 0), the
  derived network trained from scratch;
* **random**: ``--random`` architectures of the same space drawn uniformly (widths,
  expansions, kernels, resolution) and kept when their MACs are within ±5 % of the target;
* **slim**: the space's widest network (kernel 5, resolution 32) sandwich-trained as a slim
  network, then the slim width search (:func:`fbnas.slim.search.evolve_widths`) under
  MACs <= target; its best subnet trained from scratch.

Every architecture is trained with ``--seeds`` seeds; reported: val top-1 (final epoch)
mean ± std per architecture, and the mean over the random ones. Also printed: the
DMasking convergence checks of item 7 (derived MACs against the target; the noise-free
expected cost at the final τ against the argmax's MACs).

    python benchmarks/dmasking_study.py --target 6e5 --epochs 15 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from fbnas.cost.analytic import arch_cost
from fbnas.data import open_datasets
from fbnas.search.dmasking.search import DMaskingConfig, load_config, run_search
from fbnas.search.dmasking.space import load_dmasking_space
from fbnas.search.dmasking.supernet import MaskedSupernet
from fbnas.train import Trainer, load_recipe
from fbnas.zoo.model import build_model

DATA = "digits?per_class=20"


def train(arch: dict, seed: int, epochs: int) -> float:
    config = load_recipe("digits_hard").replace(seed=seed, epochs=epochs,
                                                resolution=arch["input_size"])
    data = open_datasets(DATA, config.resolution, config.augment)
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=data.num_classes)
    history = Trainer(model, config, data, tensorboard=False).fit()
    return float(history[-1]["val_top1"])


def random_archs(net: MaskedSupernet, target: float, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(20000):
        choice = [rng.randrange(len(g.options)) for g in net.groups]
        if abs(net.choice_cost(choice) / target - 1) <= 0.05:
            out.append(net.arch_def(choice))
            if len(out) == count:
                return out
    raise SystemExit(f"only {len(out)} random architectures within 5 % of {target:g}")


def slim_arch(space, target: float, epochs: int, out: Path) -> dict:
    from fbnas.arch.unify import unify_arch_def
    from fbnas.slim.extract import extract_arch_spec
    from fbnas.slim.models import SlimFBNet
    from fbnas.slim.search import MacsConstraint, WidthEvaluator, WidthSearchConfig, evolve_widths
    from fbnas.slim.train import SandwichTrainer

    arch = space.max_arch_def()
    config = load_recipe("digits_hard").replace(seed=0, epochs=epochs, resolution=32)
    data = open_datasets(DATA, 32, config.augment)
    torch.manual_seed(0)
    model = SlimFBNet(unify_arch_def(arch), num_classes=data.num_classes, resolution=32)
    SandwichTrainer(model, config, data, tensorboard=False).fit()
    evaluator = WidthEvaluator(model, open_datasets(DATA, 32), bn_batches=5)
    result = evolve_widths(model, MacsConstraint(model, 32, target), evaluator,
                           WidthSearchConfig(population=12, generations=4))
    real_ch = model.decode_ch(model.decode_wm(result.best.wm))
    found = extract_arch_spec(model, real_ch).to_arch_def()
    (out / "slim_arch.json").write_text(json.dumps(found, indent=1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=6e5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--random", type=int, default=5)
    parser.add_argument("--search-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dmasking_study"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    space = load_dmasking_space("dmasking_digits")
    start = time.perf_counter()

    config = DMaskingConfig.from_dict({**load_config("demo").to_dict(), "target": args.target,
                                       "epochs": args.search_epochs, "tensorboard": False})
    result = run_search(space, DATA, config, args.out / "search")
    net = result.supernet
    argmax = net.derive()
    checks = {
        "derived_macs": arch_cost(result.arch_def, result.arch_def["input_size"], 10).macs,
        "derived": json.loads((args.out / "search" / "arch.json").read_text())["derived"],
        "argmax_macs": net.choice_cost(argmax),
        "noise_free_at_final_tau": net.noise_free_cost(config.final_tau()),
        "final_tau": config.final_tau(),
    }
    print("search checks:", json.dumps(checks), f"({time.perf_counter() - start:.0f} s)",
          flush=True)

    archs = {"dmasking": result.arch_def}
    for i, arch in enumerate(random_archs(MaskedSupernet(space, 10), args.target, args.random,
                                          seed=123)):
        archs[f"random {i}"] = arch
    archs["slim width search"] = slim_arch(space, args.target, args.epochs, args.out)
    print(f"slim done ({time.perf_counter() - start:.0f} s)", flush=True)

    rows = {}
    for name, arch in archs.items():
        accs = [train(arch, seed, args.epochs) for seed in args.seeds]
        macs = arch_cost(arch, arch["input_size"], 10).macs
        rows[name] = (macs, arch["input_size"], accs)
        print(f"{name}: {macs / 1e3:.0f}K MACs @ {arch['input_size']}px, val top-1 "
              f"{statistics.mean(accs):.1f} ± {statistics.pstdev(accs):.1f} % {accs} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    (args.out / "results.json").write_text(json.dumps({"checks": checks, "rows": rows,
                                                       "archs": archs}, indent=1))
    print("\n| network | MACs | resolution | val top-1 % (mean ± std over seeds) |")
    print("|---|---|---|---|")
    for name, (macs, res, accs) in rows.items():
        print(f"| {name} | {macs / 1e3:.0f}K | {res} | {statistics.mean(accs):.1f} ± "
              f"{statistics.pstdev(accs):.1f} |")
    randoms = [statistics.mean(a) for n, (_, _, a) in rows.items() if n.startswith("random")]
    print(f"| random (mean of {len(randoms)}) | | | {statistics.mean(randoms):.1f} |")


if __name__ == "__main__":
    main()
