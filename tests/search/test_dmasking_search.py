"""DMaskingNAS on the engine, through the CLI: target, resume, plots, init from the supernet."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from fbnas.search.dmasking.from_supernet import init_from_masked_supernet, load_masked_run
from fbnas.zoo.model import build_model

SPACE = {
    "name": "tiny", "resolutions": [8, 12, 16], "width_divisor": 4,
    "stages": [
        {"kind": "conv", "blocks": 1, "stride": 2, "widths": [4, 8], "act": "hswish"},
        {"kind": "ir", "blocks": 2, "stride": 2, "widths": {"min": 8, "max": 16, "step": 4},
         "expansions": [1, 2, 4], "kernels": [3, 5], "se": True, "act": "hswish"},
        {"kind": "ir_pool", "blocks": 1, "stride": 1, "widths": [32], "expansions": [2]},
    ],
}
DATA = "digits?per_class=6"
TARGET = 20000.0


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


def test_search_meets_the_target_resumes_and_inits_a_derived_network(run_cli, space_file,
                                                                      tmp_path) -> None:
    out = tmp_path / "run"
    args = ["search", "dmasking", "--space", space_file, "--data", DATA, "--config", "demo",
            "--target-macs", str(TARGET), "--warmup-epochs", "0", "--batch-size", "20",
            "--set", "tau_final=0.2", "--no-tensorboard", "--out", out]
    first = run_cli(*args, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    resumed = run_cli(*args, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert (out / "widths.png").stat().st_size > 0 and (out / "curves.png").is_file()
    record = json.loads((out / "arch.json").read_text())
    # Item 7: the derived network meets the MACs target within ±10 % (counted on it).
    assert abs(record["macs"] / TARGET - 1) <= 0.10, record["derived"]
    assert record["predicted_cost"] == record["macs"]  # one-hot effective = counted
    net, epochs = load_masked_run(out)
    assert epochs == 2
    # (The noise-free expected cost at the final tau against the argmax's MACs needs a
    # decided theta, which 2 epochs do not give: benchmarks/dmasking_study.py checks it.)
    # --init-from-supernet: the derived network computes what the supernet's one-hot does.
    model = build_model(record["arch_def"], num_classes=10)
    names, _ = init_from_masked_supernet(model, out)
    assert names == record["choices"]
    x = torch.randn(4, 3, 16, 16)
    model.eval(), net.eval()
    with torch.no_grad():
        ours, _ = net(x, net.fixed_sample(record["choice"]))
        theirs = model(net._subsample(x, record["resolution"]))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_target_outside_the_cost_range_is_refused_before_training(run_cli, space_file,
                                                                    tmp_path) -> None:
    result = run_cli("search", "dmasking", "--space", space_file, "--data", DATA,
                     "--target-macs", "1e9", "--epochs", "2", "--warmup-epochs", "1",
                     "--out", tmp_path / "run")
    assert result.returncode != 0
    assert "outside the cost range of space 'tiny'" in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_space_show_writes_the_space_back_readable(run_cli, tmp_path) -> None:
    result = run_cli("space", "show", "fbnet_v2", "--yaml")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["resolutions"] == [128, 160, 192, 224]
    assert data["stages"][6]["widths"][0] == 112 and data["stages"][6]["channels"] == 216
    path = tmp_path / "mine.yaml"
    path.write_text(result.stdout)
    assert run_cli("space", "show", path).returncode == 0
