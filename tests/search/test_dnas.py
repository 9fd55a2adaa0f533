"""FBNetV1 DNAS: supernet modes, costs, losses, derivation, bad input, exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fbnas import build_model
from fbnas.arch import ArchDefError
from fbnas.cost import arch_cost
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import (
    BuildSettings,
    LatencyTable,
    MissingEntriesError,
    arch_items,
    measure_table,
)
from fbnas.search.dnas import CostLoss, Supernet, layer_costs
from fbnas.search.dnas.search import DNASConfig, read_search_config, run_search
from fbnas.search.space import Candidate, LayerChoice, SearchSpace

SPACE = "fbnet_v1_cifar"


@pytest.fixture(scope="module")
def mac_costs():
    return layer_costs(SPACE, "macs", resolution=16, num_classes=10)


def test_layer_costs_add_up_to_the_analytic_network_cost(mac_costs) -> None:
    from fbnas.search import get_space

    space = get_space(SPACE)
    for seed in range(3):
        choices = space.sample(random.Random(seed))
        cost = arch_cost(space.arch_def(choices), 16, num_classes=10)
        assert mac_costs.network_cost(choices) == cost.macs
    params = layer_costs(SPACE, "params", resolution=16, num_classes=10)
    assert params.network_cost(choices) == cost.params
    assert mac_costs.cheapest < mac_costs.most_expensive


def test_supernet_soft_and_single_path(mac_costs) -> None:
    net = Supernet(SPACE, mac_costs, num_classes=10, resolution=16)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    calls = []
    for layer in net.layers:
        for c in layer.candidates:
            c.register_forward_hook(lambda m, i, o: calls.append(m))
    logits, cost = net(x, tau=1.0, mode="soft")
    assert logits.shape == (4, 10) and len(calls) == 22 * 9
    F.cross_entropy(logits, y).add(cost / 1e9).backward()
    assert net.theta.grad.abs().sum() > 0
    net.zero_grad()
    calls.clear()
    logits, cost = net(x, tau=1.0, mode="single-path")
    assert len(calls) == 22  # only the sampled candidate of each layer runs
    F.cross_entropy(logits, y).backward()
    assert net.theta.grad.abs().sum() > 0  # straight-through gradient to theta
    assert mac_costs.cheapest <= float(cost.detach()) <= mac_costs.most_expensive


def test_derived_architecture_builds_and_matches_its_cost(mac_costs) -> None:
    net = Supernet(SPACE, mac_costs, num_classes=10, resolution=16)
    with torch.no_grad():
        net.theta[:, 8] = 5.0  # prefer skip everywhere
    choices = net.derive()
    assert choices == [8] * 22
    model = build_model(net.arch_def(choices), num_classes=10)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    samples = net.sample_architectures(20, torch.Generator().manual_seed(0))
    assert sum(c.count(8) for c in samples) > 0.8 * 22 * 20


def test_loss_forms_by_hand() -> None:
    ce, cost = torch.tensor(2.0), torch.tensor(50.0)
    r = math.e * 50 / 10
    assert float(CostLoss(10.0, "mul")(ce, cost)) == pytest.approx(2 * 0.2 * math.log(r) ** 0.6)
    assert float(CostLoss(10.0, "log")(ce, cost)) == pytest.approx(0.2 * 2 * 0.6 * math.log(r))
    assert float(CostLoss(10.0, "add")(ce, cost)) == pytest.approx(2 + 0.2 * (r / math.e) ** 0.6)
    # the target term pulls from both sides and vanishes at the target
    with_target = CostLoss(10.0, "mul", target=50.0)
    assert float(with_target(ce, cost)) == pytest.approx(float(CostLoss(10.0)(ce, cost)))
    over = torch.tensor(80.0, requires_grad=True)
    with_target(ce, over).backward()
    under = torch.tensor(30.0, requires_grad=True)
    CostLoss(10.0, "add", target=50.0, target_weight=100.0)(ce, under).backward()
    assert over.grad > 0 and under.grad < 0
    with pytest.raises(ValueError, match="unknown loss form"):
        CostLoss(10.0, "pow")  # type: ignore[arg-type]


def test_latency_costs_come_from_the_table_and_missing_entries_fail() -> None:
    space = SearchSpace(
        "tiny", 16, prefix=((("conv_k3", 8, 2, 1),),),
        layers=tuple(LayerChoice(1, 8, 1, (Candidate("e1", "ir_k3", {"expansion": 1}),
                                            Candidate("skip", "skip"))) for _ in range(2)),
        suffix=())
    table = LatencyTable(DeviceInfo.current())
    measure_table(table, [arch_items(a, num_classes=10) for a in space.all_candidate_archs()],
                  BuildSettings(rounds=1, budget_s=0.02))
    costs = layer_costs(space, "latency", table, num_classes=10)
    for choices in ([0, 0], [0, 1], [1, 1]):
        predicted = table.predict(space.arch_def(choices), num_classes=10).predicted_ms
        assert costs.network_cost(choices) == pytest.approx(predicted)
    with pytest.raises(MissingEntriesError, match="search space fbnet_v1_cifar"):
        layer_costs(SPACE, "latency", table, resolution=16, num_classes=10)


def test_bad_spaces_and_targets_fail_before_training(tmp_path) -> None:
    with pytest.raises(ArchDefError, match="no searchable layers"):
        layer_costs(SearchSpace("empty", 16, (), (), ()), "macs")
    bogus = SearchSpace("bogus", 16, prefix=((("conv_k3", 8, 2, 1),),),
                        layers=(LayerChoice(1, 8, 1, (Candidate("x", "ir_k9"),)),), suffix=())
    with pytest.raises(ArchDefError, match="unknown op 'ir_k9'"):
        layer_costs(bogus, "macs")
    config = DNASConfig(epochs=2, warmup_epochs=0, cost="macs", target=1.0, resolution=16)
    with pytest.raises(ArchDefError, match="below the cheapest network"):
        run_search(SPACE, "digits?per_class=2", config, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()



def test_saved_settings_with_an_unknown_key_name_it_and_the_closest_setting() -> None:
    saved = {"epochs": 3, "warmup_epochs": 1}
    assert DNASConfig.from_dict(saved).epochs == 3
    with pytest.raises(ValueError, match="run.json: unknown key 'tau_0'; did you mean 'tau0'"):
        DNASConfig.from_dict({**saved, "tau_0": 2.0}, "run.json")


def test_settings_saved_before_the_engine_read_with_the_new_keys_defaulted(tmp_path) -> None:
    """search_config.json written before ``device``, ``amp`` and ``tensorboard`` (and the
    settings of issue 14) existed: such a run searched on the CPU, as it resumes."""
    new_keys = ("device", "amp", "tensorboard", "theta_optimizer", "theta_momentum",
                "target_form", "pull_on", "topk")
    old = {k: v for k, v in dataclasses.asdict(DNASConfig(epochs=3, warmup_epochs=1)).items()
           if k not in new_keys}
    path = tmp_path / "search_config.json"
    path.write_text(json.dumps({"space": SPACE, "data": "digits", **old}))
    run, config = read_search_config(path)
    assert run == {"space": SPACE, "data": "digits"}
    assert (config.device, config.amp, config.tensorboard) == ("cpu", False, True)
    assert (config.theta_optimizer, config.target_form, config.pull_on, config.topk) == (
        "adam", "square", "sample", (1,))
    engine = config.engine_config()
    assert (engine.epochs, engine.warmup_epochs, engine.tau_final) == (3, 1, None)
    assert config.tau_at(2) == engine.schedule().tau_at(2) == pytest.approx(5.0 * 0.956**2)

SEARCH_SCRIPT = """
import sys
from fbnas.search.dnas.search import DNASConfig, run_search
from fbnas.search.space import Candidate, LayerChoice, SearchSpace
candidates = (Candidate("e1", "ir_k3", {"expansion": 1}), Candidate("e3", "ir_k5",
              {"expansion": 3}), Candidate("skip", "skip"))
space = SearchSpace("tiny", 16, prefix=((("conv_k3", 8, 2, 1),),),
                    layers=(LayerChoice(1, 8, 1, candidates), LayerChoice(1, 16, 2, candidates),
                            LayerChoice(2, 16, 1, candidates)), suffix=())
config = DNASConfig(epochs=4, warmup_epochs=1, cost="macs", tau_final=0.5, batch_size=16,
                    mode="soft", resolution=16, num_samples=3)
run_search(space, "digits?per_class=6", config, sys.argv[1], resume=len(sys.argv) > 2)
"""


def test_killed_search_resumes_to_the_same_theta(tmp_path) -> None:
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(full)], check=True, timeout=600)
    proc = subprocess.Popen([sys.executable, str(script), str(killed)])
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search ended before it could be killed"
    subprocess.run([sys.executable, str(script), str(killed), "resume"], check=True,
                   timeout=600)
    theta_full = json.loads((full / "theta.json").read_text())["theta"]
    theta_resumed = json.loads((killed / "theta.json").read_text())["theta"]
    assert theta_resumed == theta_full
    assert (killed / "arch.json").read_text() == (full / "arch.json").read_text()
    record = json.loads((full / "arch.json").read_text())
    assert record["derived"] == "argmax" and len(record["choices"]) == 3
    assert len(list(Path(full / "samples").glob("arch_*.json"))) == 3
    lines = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [x["phase"] for x in lines] == ["warm-up", "search", "search", "search"]
    assert lines[-1]["tau"] == pytest.approx(0.5)


def test_a_space_file_search_keeps_its_definition_for_finetuning_and_resume(tmp_path) -> None:
    from fbnas.search.dnas.from_supernet import load_supernet_run

    candidates = (Candidate("e1", "ir_k3", {"expansion": 1}), Candidate("skip", "skip"))
    space = SearchSpace("file_space", 16, prefix=((("conv_k3", 8, 2, 1),),),
                        layers=(LayerChoice(1, 8, 1, candidates),
                                LayerChoice(2, 16, 2, candidates)), suffix=())
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(space.to_dict()))
    config = DNASConfig(epochs=1, warmup_epochs=0, cost="macs", batch_size=16,
                        resolution=16, num_samples=1)
    run_search(str(space_file), "digits?per_class=4", config, tmp_path / "run")
    space_file.unlink()  # the run holds the definition: it loads without the file
    loaded = load_supernet_run(tmp_path / "run")
    assert loaded.space == space and loaded.epochs_done == 1
    wider = dataclasses.replace(space, layers=(
        dataclasses.replace(space.layers[0], out_channels=16),) + space.layers[1:])
    with pytest.raises(ArchDefError, match="is a search of another space definition"):
        run_search(wider, "digits?per_class=4", dataclasses.replace(config, epochs=2),
                   tmp_path / "run", resume=True)


def test_search_dnas_cli_run_as_a_user(tmp_path, capsys) -> None:
    from fbnas.cli.main import main
    from fbnas.cost import count_params

    candidates = (Candidate("e1", "ir_k3", {"expansion": 1}), Candidate("skip", "skip"))
    space = SearchSpace("cli_space", 16, prefix=((("conv_k3", 8, 2, 1),),),
                        layers=(LayerChoice(1, 8, 1, candidates),), suffix=())
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(space.to_dict()))
    common = ["search", "dnas", "--space", str(space_file), "-d", "digits?per_class=4",
              "--cost", "macs", "--batch-size", "16", "-o", str(tmp_path / "run")]
    assert main([*common, "--epochs", "3"]) == 2  # the default warm-up is 10 epochs
    assert "--warmup-epochs 10 leaves no search epoch in --epochs 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*common, "--epochs", "2", "--warmup-epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: theta is still undecided" in err  # one θ epoch at the paper's θ lr
    record = json.loads((tmp_path / "run" / "arch.json").read_text())
    model = build_model(record["arch_def"], num_classes=10)
    assert record["num_classes"] == 10 and record["params"] == count_params(model)
    assert main(["info", str(tmp_path / "run" / "arch.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["params"] == record["params"]
    assert main([*common, "--epochs", "2", "--warmup-epochs", "1"]) == 2
    assert "already holds a search (last.pt); pass --resume" in capsys.readouterr().err
