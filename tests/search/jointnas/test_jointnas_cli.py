"""`fbnas search jointnas` as a user runs it: real training on the local executor."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import yaml

from fbnas.cli.main import main
from fbnas.cost import arch_cost
from fbnas.cost.block_model import (
    CANDIDATES,
    BlockLatencyModel,
    TrainingBlock,
    key_features,
    model_path,
)
from fbnas.cost.block_sampling import block_ranges, head_ranges, sample_blocks
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyEntry, LatencyTable
from fbnas.search.jointnas.cost import PopulationCost, joint_networks
from fbnas.search.jointnas.space import JointSpace

TINY_SPACE = {
    "name": "tiny_joint",
    "num_classes": 10,
    "basic_args": {"width_divisor": 8},
    "resolution": 16,
    "stem": {"channels": 8, "stride": 2},
    "stages": [{"channels": [8, 16], "kernel": [3, 5], "expansion": 2, "stride": 2,
                "se": [False, True]}],
    "recipe": {"fixed": {"epochs": 2, "batch_size": 32, "label_smoothing": 0.0,
                         "random_crop": False, "workers": 0, "amp": False,
                         "channels_last": False},
               "optimizer": ["sgd", "adamw"], "lr": [0.003, 0.03]},
}

SETTINGS = {
    "data": "digits?per_class=5&val_per_class=5",
    "workers": 2,
    "final_candidates": 1,
    "coarse": {"calibration_candidates": 3, "calibration_epochs": [1], "rounds": 1,
               "pool_log2": 6, "batch": 1, "explore": 0.5, "heldout": 0},
    "fine": {"population": 8, "generations": 3, "parents": 2, "patience": 2, "initial": 2,
             "top_k": 2},
    "predictor": {"pretrain_samples": 64, "pretrain_epochs": 3, "frozen_epochs": 5,
                  "unfrozen_epochs": 5},
}


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(SETTINGS))
    return tmp_path


def synthetic_ms(key: str) -> float:
    """A latency that is a known function of the block's features (no timing here)."""
    f = key_features(key)
    return 0.01 * f["layers"] + 2e-8 * (f["macs_pointwise"] + f["macs_depthwise"]
                                        + f["macs_dense"]) + 1e-9 * f["bytes"]


def latency_files(folder, space: JointSpace):
    """A real table holding every other block of a few sampled candidates, with a real
    block latency model beside it (TABLE.model.json) fitted on blocks spread over the
    space's ranges: the table's blocks and the model's (``fbnas lut build --space``); the
    linear model only, as cross-validating the tree models takes ~20 s here."""
    device = DeviceInfo.current("torch", 1)
    nets = joint_networks(space, 4)
    keys = list(dict.fromkeys(k for n in nets for k in n.keys))
    table = LatencyTable(device)
    for key in keys[::2]:
        table.entries[key] = LatencyEntry([synthetic_ms(key)], 10)
    ranges = joint_networks(space, 16, start=4)
    sample = sample_blocks([*block_ranges(ranges), *head_ranges(ranges, widen=1.5)], 16,
                           seed=0)
    linear = [c for c in CANDIDATES if c.name == "linear"]  # fits in milliseconds
    model = BlockLatencyModel.fit([TrainingBlock(i.key, key_features(i.key),
                                                 synthetic_ms(i.key)) for i in sample],
                                  device, candidates=linear, folds=2)
    lut = folder / "lut.json"
    table.save(lut)
    model.save(model_path(lut))
    return lut, model_path(lut)


def test_search_trains_resumes_and_reuses(files, capsys) -> None:
    """The whole search under a latency budget priced by a table file plus the block
    latency model beside it; resumed; stage 2 reused under a tighter one priced by the
    model alone (--latency-model)."""
    out = files / "run"
    space = JointSpace(TINY_SPACE)
    lut, model = latency_files(files, space)
    pool = space.sample_batch(256, np.random.default_rng(0))
    latency = PopulationCost(space, LatencyTable.load(lut))(pool).latency_ms
    budget = float(np.quantile(latency, 0.8))
    args = ["search", "jointnas", "--space", str(files / "space.yaml"), "--config",
            str(files / "settings.yaml"), "--max-ms", str(budget), "--lut", str(lut),
            "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    share = re.findall(r"latency costs: (\d+) of (\d+) distinct blocks priced predicted by "
                       r"the block latency model", captured.err)
    assert share and all(0 < int(n) < int(m) for n, m in share), captured.err
    chosen = tuple(json.loads((out / "result.json").read_text())["chosen"])
    assert PopulationCost(space, LatencyTable.load(lut)).one(chosen).latency_ms[0] <= budget
    assert "calibration: 1 of 2 epochs" in captured.err
    assert "round 1/1: pool" in captured.err
    assert "final: predicted" in captured.err
    assert "chosen: predicted" in captured.out
    arch = json.loads((out / "arch.json").read_text())
    assert arch["input_size"] == 16
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["epochs"] == 2 and recipe["optimizer"] in ("sgd", "adamw")
    first = json.loads((out / "result.json").read_text())

    assert main(args) == 0  # resumed: every candidate from the store
    assert json.loads((out / "result.json").read_text())["chosen"] == first["chosen"]
    capsys.readouterr()

    small = min(arch_cost(json.loads((out / "arch.json").read_text()), num_classes=10).macs,
                10**9)
    model_only = PopulationCost(space, LatencyTable.load(lut))
    model_only.latency.entries.clear()  # what --latency-model alone prices with
    tight = float(np.quantile(model_only(pool).latency_ms, 0.5))
    assert main(["search", "jointnas", "--reuse", str(out), "--max-macs", str(small),
                 "--max-ms", str(tight), "--latency-model", str(model), "--set", "lut=null",
                 "--out", str(files / "reused")]) == 0
    reused = capsys.readouterr()
    assert "(no training)" in reused.err
    assert re.search(r"latency costs: (\d+) of \1 distinct blocks", reused.err), reused.err
    assert arch_cost(json.loads((files / "reused" / "arch.json").read_text()),
                     num_classes=10).macs <= small
    again = tuple(json.loads((files / "reused" / "result.json").read_text())["chosen"])
    assert model_only.one(again).latency_ms[0] <= tight


def test_bad_input_is_one_error_line(files, capsys) -> None:
    base = ["search", "jointnas", "--space", str(files / "space.yaml"), "--config",
            str(files / "settings.yaml")]
    assert main([*base, "--max-macs", "100", "--out", str(files / "a")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: no candidate of the Sobol pool")
    assert not [line for line in capsys.readouterr().err.splitlines() if "Traceback" in line]
    assert "MACs range from" in errors[0] and not (files / "a").exists()
    assert main([*base, "--set", "coarse.roundz=2", "--out", str(files / "b")]) == 2
    assert "unknown key 'roundz'" in capsys.readouterr().err
    assert main([*base, "--max-ms", "5", "--out", str(files / "b")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ")
    assert errors[0].endswith("--max-ms needs a latency table or a block latency model: give "
                              "--lut FILE and/or --latency-model FILE (fbnas lut build --space "
                              "SPACE --model-sample N builds both)")
    assert not (files / "b").exists()
    assert main([*base, "--set", "coarse.roundz=2", "--out", str(files / "b")]) == 2
    assert "unknown key 'roundz'" in capsys.readouterr().err
    bad = dict(TINY_SPACE, stages=[{**TINY_SPACE["stages"][0], "kernel": [3, 4]}])
    (files / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["search", "jointnas", "--space", str(files / "bad.yaml"), "--config",
                 str(files / "settings.yaml"), "--out", str(files / "c")]) == 2
    assert "stage1.kernel: value 4 is not accepted" in capsys.readouterr().err


def test_a_foreign_store_in_the_run_folder_is_refused_and_kept(files, capsys) -> None:
    out = files / "run"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"not a database, somebody's notes\n")
    assert main(["search", "jointnas", "--space", str(files / "space.yaml"), "--config",
                 str(files / "settings.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "results.sqlite" in err and "Traceback" not in err
    assert (out / "results.sqlite").read_bytes() == b"not a database, somebody's notes\n"


def test_lut_build_on_a_joint_space_measures_sampled_candidates(files, capsys) -> None:
    """The table of sampled candidates' blocks prices the candidates it holds; the block
    latency model beside it (``--model-sample``, seconds of fitting; run as a user, see
    docs/jointnas.md) prices the rest, as the search test above checks with a fitted one."""
    space_file, lut = str(files / "space.yaml"), files / "lut.json"
    assert main(["lut", "build", "--space", space_file, "-r", "32", "--out", str(lut)]) == 2
    assert "--resolution: the candidates of the joint space" in capsys.readouterr().err
    assert main(["lut", "build", "--space", space_file, "--rounds", "1", "--calibrate-on",
                 "0", "--no-normalise", "--out", str(lut)]) == 0
    space = JointSpace(TINY_SPACE)
    networks = joint_networks(space, 32)
    table = LatencyTable.load(lut)
    assert set(table.entries) == {k for n in networks for k in n.keys}
    assert table.model is None
    rng = random.Random(0)  # the candidates joint_networks sampled, priced by the table
    samples = np.array([space.sample(rng) for _ in range(32)], dtype=np.int64)
    cost = PopulationCost(space, table)
    assert np.all(cost(samples).latency_ms > 0) and cost.latency_share()[0] == 0
