"""``fbnas search dnas`` on a latency table that lacks blocks says how many of the space's
blocks the block latency model prices (issue 15): a search on predicted latencies is never
silent about it."""

from __future__ import annotations

import json
import re

from fbnas.cost.block_model import BlockLatencyModel, TrainingBlock, key_features, model_path
from fbnas.cost.block_sampling import block_ranges, head_ranges, sample_blocks
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyEntry, LatencyTable
from fbnas.search.space import Candidate, LayerChoice, SearchSpace, space_networks

SPACE = SearchSpace("share_space", 16, prefix=((("conv_k3", 8, 2, 1),),),
                    layers=(LayerChoice(1, 8, 1, (Candidate("e1", "ir_k3", {"expansion": 1}),
                                                  Candidate("skip", "skip"))),
                            LayerChoice(2, 16, 2, (Candidate("e3", "ir_k3", {"expansion": 3}),
                                                   Candidate("k5", "ir_k5",
                                                             {"expansion": 1})))),
                    suffix=())


def synthetic_ms(key: str) -> float:
    """A latency that is a known function of the block's features (no timing here)."""
    f = key_features(key)
    return 0.01 * f["layers"] + 2e-8 * (f["macs_pointwise"] + f["macs_depthwise"]
                                        + f["macs_dense"]) + 1e-9 * f["bytes"]


def test_the_search_names_the_share_of_blocks_the_model_prices(tmp_path, run_cli) -> None:
    device = DeviceInfo.current("torch", 1)
    nets, _ = space_networks(SPACE, 16, 1, 0, 10)
    keys = list(dict.fromkeys(k for n in nets for k in n.keys))
    table = LatencyTable(device)
    held = keys[::2]  # every other block measured, the rest left to the model
    for key in held:
        table.entries[key] = LatencyEntry([synthetic_ms(key)], 10)
    sample = sample_blocks([*block_ranges(nets, widen=1.5), *head_ranges(nets, widen=1.5)],
                           24, seed=0)
    model = BlockLatencyModel.fit([TrainingBlock(i.key, key_features(i.key),
                                                 synthetic_ms(i.key)) for i in sample],
                                  device, folds=3)
    lut = tmp_path / "lut.json"
    table.save(lut)
    model.save(model_path(lut))
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(SPACE.to_dict()))

    result = run_cli("search", "dnas", "--space", space_file, "-d", "digits?per_class=2",
                     "--lut", lut, "--cost", "latency", "--epochs", "1",
                     "--set", "warmup_epochs=0", "--set", "batch_size=16",
                     "--set", "tensorboard=false", "-o", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    line = re.search(r"latency costs: (\d+) of (\d+) distinct blocks of the space predicted "
                     r"by the block latency model", result.stderr)
    assert line, result.stderr
    assert (int(line[1]), int(line[2])) == (len(keys) - len(held), len(keys))
