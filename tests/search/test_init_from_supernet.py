"""``fbnas train ARCH --init-from-supernet RUN``: a derived subnet starts from its supernet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fbnas import build_model
from fbnas.arch import ArchDefError
from fbnas.cli.main import main
from fbnas.search.dnas import subnet_state_dict
from fbnas.search.dnas.from_supernet import init_from_supernet, load_supernet_run, match_choices
from fbnas.search.dnas.search import DNASConfig, run_search
from fbnas.search.space import SPACES, Candidate, LayerChoice, SearchSpace
from fbnas.train import read_checkpoint

CANDIDATES = (Candidate("e1", "ir_k3", {"expansion": 1}),
              Candidate("e3", "ir_k5", {"expansion": 3}), Candidate("skip", "skip"))
SPACE = SearchSpace("tiny_init_test", 16, prefix=((("conv_k3", 8, 2, 1),),),
                    layers=(LayerChoice(1, 8, 1, CANDIDATES), LayerChoice(1, 16, 2, CANDIDATES),
                            LayerChoice(2, 16, 1, CANDIDATES)),
                    suffix=((("conv_k1", 32, 1, 1),),))
DATA = "digits?per_class=8"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """A short single-path search of a tiny registered space (registered for the CLI)."""
    SPACES[SPACE.name] = SPACE
    try:
        out = tmp_path_factory.mktemp("search") / "run"
        config = DNASConfig(epochs=2, warmup_epochs=1, cost="macs", tau_final=0.5,
                            batch_size=16, mode="single-path", resolution=16, num_samples=2)
        result = run_search(SPACE.name, DATA, config, out)
        yield out, result
    finally:
        SPACES.pop(SPACE.name, None)


def _path_forward(supernet, choices: list[int], x: torch.Tensor) -> torch.Tensor:
    weights = torch.zeros_like(supernet.theta)
    weights[torch.arange(len(choices)), torch.tensor(choices)] = 1.0
    return supernet(x, weights=weights, indices=choices)[0]


@pytest.mark.parametrize("arch_file", ["arch.json", "samples/arch_01.json"])
def test_subnet_computes_what_its_supernet_path_computes(run, arch_file: str) -> None:
    out, result = run
    loaded = load_supernet_run(out)
    assert loaded.epochs_done == 2 and loaded.space == SPACE
    model = build_model(out / arch_file, num_classes=10)
    choices = init_from_supernet(model, loaded)
    record = json.loads((out / arch_file).read_text())
    assert SPACE.choice_names(choices) == record["choices"]
    model.eval()
    loaded.supernet.eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _path_forward(loaded.supernet, choices, x),
                                   rtol=1e-4, atol=1e-5)
    # the reloaded supernet is the trained one, not a fresh initialisation
    torch.testing.assert_close(loaded.supernet.theta, result.supernet.theta)


def test_paths_that_are_not_in_the_supernet_are_refused_naming_the_layer() -> None:
    arch = SPACE.arch_def([0, 1, 2])
    arch["blocks"][1][1][4] = {"expansion": 4}  # layer 1: ir_k5 e4 is no candidate
    with pytest.raises(ArchDefError, match=r"layer 1 \(block xif1_1\): ir_k5 .* not one of "
                                           r"its candidates \(e1, e3, skip\)"):
        match_choices(SPACE, arch)
    arch = SPACE.arch_def([0, 1, 2])
    arch["blocks"][-1][0][1] = 64  # the fixed head conv
    with pytest.raises(ArchDefError, match="fixed block xif3_0: conv_k1 .*differs"):
        match_choices(SPACE, arch)
    with pytest.raises(ArchDefError, match="has 4 blocks"):
        match_choices(SPACE, {"blocks": SPACE.arch_def([0, 0, 0])["blocks"][:-1]})
    assert match_choices(SPACE, SPACE.arch_def([2, 0, 1])) == [2, 0, 1]


def test_cli_fine_tunes_from_the_supernet_weights(run, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out, _ = run
    # A vanishing learning rate: the weights after one epoch are still the supernet's.
    code = main(["train", str(out / "arch.json"), "--data", DATA, "--out",
                 str(tmp_path / "ft"), "--init-from-supernet", str(out), "--epochs", "1",
                 "--batch-size", "16", "--lr", "1e-12", "--resolution", "16",
                 "--set", "workers=0", "--set", "weight_decay=0", "--no-tensorboard",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "started from the supernet's weights after 2 search epochs, path" in err
    loaded = load_supernet_run(out)
    state = read_checkpoint(tmp_path / "ft" / "last.pt")
    assert state["run_info"]["init_from_supernet"] == str(out)
    expected = subnet_state_dict(loaded.supernet,
                                 match_choices(SPACE, state["arch_def"]))
    convs = [k for k in expected if k.endswith("conv.weight")]
    assert convs
    for key in convs:
        torch.testing.assert_close(state["model"][key], expected[key], rtol=0, atol=1e-6)


def test_cli_errors_name_the_problem(run, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    out, _ = run
    common = ["--data", DATA, "--epochs", "1", "--resolution", "16", "--no-tensorboard",
              "--no-progress"]
    bad = json.loads((out / "arch.json").read_text())
    bad["arch_def"]["blocks"][1][0] = ["ir_k3", 8, 1, 1, {"expansion": 4}]  # layer 0
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    assert main(["train", str(bad_file), "--out", str(tmp_path / "a"),
                 "--init-from-supernet", str(out), *common]) == 2
    assert "layer 0 (block xif1_0)" in capsys.readouterr().err

    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    (empty / "search_config.json").write_text((out / "search_config.json").read_text())
    assert main(["train", str(out / "arch.json"), "--out", str(tmp_path / "b"),
                 "--init-from-supernet", str(empty), *common]) == 2
    assert "has no last.pt" in capsys.readouterr().err

    assert main(["train", str(out / "arch.json"), "--out", str(tmp_path / "c"),
                 "--init-from-supernet", str(out), "--init-from", str(out / "last.pt"),
                 *common]) == 2
    assert "at most one of --init-from and --init-from-supernet" in \
        capsys.readouterr().err
