"""Width search: evolution under a cost target, outputs every fbnas command accepts, CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
import torch
from slim_width_helpers import TINY_SLIM_ARCH, synthetic_latency_table, tiny_recipe

import fbnas
from fbnas.cli.main import main
from fbnas.cost import count_macs
from fbnas.data import open_datasets
from fbnas.export.checkpoint import load_model_from_checkpoint
from fbnas.search.evolution import InfeasibleConstraintError
from fbnas.slim import build_slim_model, subnet_cost
from fbnas.slim.latency import build_width_latency
from fbnas.slim.search import (
    InfeasibleTargetError,
    MacsConstraint,
    WidthSearchConfig,
    evolve_widths,
)
from fbnas.slim.train import SandwichConfig, SandwichTrainer
from fbnas.train import evaluate

DATA = "digits?per_class=30"
RESOLUTION = 16


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One thread: the 2-core test machine is shared; more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A briefly sandwich-trained tiny slim network: (arch file, best checkpoint)."""
    folder = tmp_path_factory.mktemp("slim_run")
    arch = folder / "tiny_slim.json"
    arch.write_text(json.dumps(TINY_SLIM_ARCH))
    config = tiny_recipe(epochs=2, batch_size=32)
    threads = torch.get_num_threads()  # module scope: set up before _one_thread
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        data = open_datasets(DATA, RESOLUTION, config.augment)
        model = build_slim_model(arch, num_classes=10)
        SandwichTrainer(model, config, data, SandwichConfig(bn_batches=2),
                        out_dir=folder / "run", device="cpu", tensorboard=False).fit()
    finally:
        torch.set_num_threads(threads)
    return arch, folder / "run" / "best.pt"


def _macs(model, w: float) -> float:
    return subnet_cost(model, model.decode_ch(model.decode_wm([w] * model.search_dim)),
                       RESOLUTION).macs


def test_evolution_keeps_every_candidate_under_the_target_and_improves_on_random() -> None:
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    target = _macs(model, 0.6)
    constraint = MacsConstraint(model, RESOLUTION, target)
    config = WidthSearchConfig(population=8, generations=4, parents=3, min_wm=0.3, seed=1)

    def accuracy(wm) -> float:  # a stand-in that prefers wide late layers
        return sum(w * (1 + d) for d, w in enumerate(wm))

    result = evolve_widths(model, constraint, accuracy, config)
    assert all(c.cost <= target for c in result.evaluated)
    assert len({c.ch for c in result.evaluated}) == len(result.evaluated)  # no repeats
    initial = max(c.top1 for c in result.evaluated if c.generation == 0)
    assert result.best.top1 > initial and result.best.generation > 0
    assert result.best.cost > 0.8 * target  # a larger network scores better: it uses the budget
    front = result.pareto_front()
    assert front[-1] == result.best and all(a.cost < b.cost and a.top1 < b.top1
                                            for a, b in itertools.pairwise(front))
    again = evolve_widths(model, constraint, accuracy, config)
    assert again.best == result.best  # seeded
    # The candidates of this seed, pinned when the search moved onto
    # fbnas.search.evolution (they equal the earlier private loop's): same seed, same run.
    lines = "".join(json.dumps(c.to_dict()) + "\n" for c in result.evaluated)
    assert len(result.evaluated) == 41 and result.best.ch == (16, 8, 40, 88, 16, 80, 56, 64)
    assert hashlib.sha256(lines.encode()).hexdigest() == (
        "d93d161626e89e3a85dcc76d43cedefdb9cef71a00625a2ed5ff88b18668ccd4")


def test_a_target_below_the_smallest_trained_network_fails_clearly() -> None:
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    floor = _macs(model, 0.35)
    with pytest.raises(InfeasibleTargetError, match=r"smallest network the search may try "
                       r"\(wm = 0.35 everywhere\) costs"):
        evolve_widths(model, MacsConstraint(model, RESOLUTION, floor - 1), lambda wm: 0.0,
                      WidthSearchConfig(min_wm=0.35))
    with pytest.raises(ValueError, match="parents \\(5\\) must not exceed population \\(4\\)"):
        WidthSearchConfig(population=4, parents=5)
    # Only the smallest network fits: the random draws' failure names the cheapest cost.
    with pytest.raises(InfeasibleTargetError, match=f"50 random draws and 1 initial "
                       f"sample\\(s\\) found only 1 feasible sample\\(s\\) under the target "
                       f"{floor:g} MACs .*the cheapest cost seen is {floor:g} MACs") as info:
        evolve_widths(model, MacsConstraint(model, RESOLUTION, floor), lambda wm: 0.0,
                      WidthSearchConfig(min_wm=0.35, max_draws=50))
    assert isinstance(info.value, InfeasibleConstraintError)


def test_cli_searches_under_a_macs_target_and_writes_a_usable_subnet(
        trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arch, checkpoint = trained
    model = build_slim_model(arch, num_classes=10)
    target = _macs(model, 0.7)
    out = tmp_path / "search"
    code = main(["search", "width", "--model", str(arch), "--data", DATA, "--target-macs",
                 str(target), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--population", "6", "--generations", "2", "--bn-batches", "2",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "best of" in capsys.readouterr().out
    record = json.loads((out / "arch.json").read_text())
    assert record["cost"] <= target and record["macs"] == record["cost"]
    assert len(record["wm"]) == model.search_dim and record["resolution"] == RESOLUTION
    candidates = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    assert max(c["top1"] for c in candidates) == record["top1"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # The arch file builds like any fbnas arch def, with the searched widths' MACs ...
    static = fbnas.build_model(out / "arch.json", num_classes=10)
    assert count_macs(static, RESOLUTION) == record["macs"]
    # ... and the subnet's weights (with its recalibrated BN) score what the search saw.
    subnet = load_model_from_checkpoint(out / "subnet.pt")
    data = open_datasets(DATA, RESOLUTION)
    loader = torch.utils.data.DataLoader(data.val, batch_size=128)
    assert evaluate(subnet, loader, torch.device("cpu")).top1 == pytest.approx(record["top1"])


def test_cli_searches_under_a_latency_target(trained: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    arch, checkpoint = trained
    model = build_slim_model(arch, num_classes=10)
    levels = (0.25, 0.5, 1.0)
    synthetic_latency_table(model, RESOLUTION, levels, tmp_path / "lut.json")
    predictor = build_width_latency(model, RESOLUTION, tmp_path / "lut.json", levels)
    predictor.save(tmp_path / "widths.json")
    target = predictor.predict_wm(model, [0.6] * model.search_dim)
    out = tmp_path / "search"
    common = ["search", "width", "--model", str(arch), "--data", DATA, "--checkpoint",
              str(checkpoint), "--out", str(out), "--population", "4", "--generations", "1",
              "--bn-batches", "1", "--val-batches", "1", "--device", "cpu",
              "--latency-model", str(tmp_path / "widths.json")]
    assert main([*common, "--target-ms", str(target)]) == 0, capsys.readouterr().err
    record = json.loads((out / "arch.json").read_text())
    assert record["cost_unit"] == "ms" and record["cost"] <= target

    assert main([*common, "--target-ms", "0.01"]) == 2
    assert "no width vector meets the target 0.01 ms" in capsys.readouterr().err
    assert main([*common, "--target-ms", "1", "--target-macs", "1"]) == 2
    assert "exactly one of --target-macs and --target-ms" in capsys.readouterr().err
