"""Block latency models: features from keys, space-filling samples, fit/save/refit, the
table's fallback, bad files. Latencies here are a known function of the features (no
timing asserts); the measured accuracy lives in benchmarks/latency_model.py."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import torch

from fbnas.cost import count_params
from fbnas.cost.block_model import (
    CANDIDATES,
    BlockLatencyModel,
    BlockModelError,
    TrainingBlock,
    key_features,
    model_path,
    parse_block_key,
    parse_head_key,
)
from fbnas.cost.block_sampling import (
    BlockRange,
    HeadRange,
    block_ranges,
    head_count,
    head_ranges,
    range_from_dict,
    sample_blocks,
)
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import (
    LatencyEntry,
    LatencyTable,
    MissingEntriesError,
    arch_items,
    block_key,
    head_key,
)
from fbnas.errors import ConfigError

TINY = {"input_size": 32, "blocks": [
    [("conv_k3", 8, 2, 1)],
    [("ir_k3", 8, 1, 2, {"expansion": 3}), ("ir_k5_hs", 16, 2, 1, {"expansion": 4})],
    [("skip", 16, 1, 1), ("conv_k1", 32, 1, 1)],
]}
RANGES = [
    BlockRange("ir_k3", (16, 16), 1, (8, 48), (8, 48), 8, same_channels=True,
               numeric={"expansion": (1.0, 6.0)}),
    BlockRange("ir_k5_se", (16, 16), 2, (8, 32), (16, 64), 8,
               numeric={"expansion": (1.0, 6.0)}),
    BlockRange("conv_k3", (32, 32), 1, (8, 32), (8, 32), 8),
    BlockRange("ir_k3_hs", (8, 8), 1, (16, 64), (16, 64), 8, numeric={"expansion": (2, 6)}),
]


def synthetic_ms(features: dict) -> float:
    """A latency that is a known function of the block: what the tests fit against."""
    return (0.004 * features["layers"] + 2e-8 * features["macs_pointwise"]
            + 5e-8 * features["macs_depthwise"] + 3e-8 * features["macs_dense"]
            + 1e-9 * features["bytes"])


def training(items) -> list[TrainingBlock]:
    out = []
    for item in items:
        features = key_features(item.key)
        out.append(TrainingBlock(item.key, features, synthetic_ms(features)))
    return out


@pytest.fixture(scope="module")
def sample():
    return sample_blocks(RANGES, 48, seed=0)


@pytest.fixture(scope="module")
def model(sample) -> BlockLatencyModel:
    return BlockLatencyModel.fit(training(sample), DeviceInfo.current(), folds=3)


# --------------------------------------------------------------------------- features


def test_keys_parse_and_their_blocks_give_hand_computed_features() -> None:
    op, c, hw, out, stride, options = parse_block_key(
        'ir_k5_hs|40x28x28|72|s2|dw_args={"padding":[1,1]},expansion=5,zero_last_bn_gamma=true')
    assert (op, c, hw, out, stride) == ("ir_k5_hs", 40, (28, 28), 72, 2)
    assert options == {"dw_args": {"padding": [1, 1]}, "expansion": 5,
                       "zero_last_bn_gamma": True}
    keys = list(arch_items(TINY).keys)
    conv = key_features(keys[0])  # conv_k3 3 -> 8, stride 2, 32x32: conv, BN, ReLU
    assert conv["family"] == "conv"
    assert (conv["in_h"], conv["out_h"], conv["stride"], conv["kernel"]) == (32, 16, 2, 3)
    assert conv["macs"] == conv["macs_dense"] == 16 * 16 * 8 * 3 * 9
    assert conv["layers"] == 3 and conv["act_relu"] == 1 and conv["depthwise"] == 0
    # bytes: every layer's input and output (conv, BN, ReLU: 3 + 5 maps) and the weights
    params = count_params(arch_items(TINY).items[0].build())
    assert conv["params"] == params
    assert conv["bytes"] == 4 * (3 * 32 * 32 + 5 * 8 * 16 * 16 + params)
    ir = key_features(keys[1])  # ir_k3 8 -> 8, expansion 3, 16x16: residual
    assert ir["family"] == "irf" and ir["hidden_channels"] == 24 and ir["depthwise"] == 1
    assert ir["residual"] == 1 and ir["se"] == 0
    assert ir["macs_pointwise"] == 2 * 16 * 16 * 8 * 24 and ir["macs_depthwise"] == 16 * 16 * 24 * 9
    hs = key_features(keys[3])  # ir_k5_hs: hard-swish activations, not their inner ReLU6
    assert hs["act_hswish"] == 2 and hs["act_relu"] == 0 and hs["kernel"] == 5
    se = key_features("ir_k3_se|16x8x8|16|s1|expansion=4")
    assert se["se"] == 1 and se["act_other"] == 1  # the sigmoid gate
    with pytest.raises(BlockModelError, match="not a block key"):
        parse_block_key("cls_head|32x8x8|1000")
    with pytest.raises(BlockModelError, match="'no_such_op' is not registered"):
        parse_block_key("no_such_op|8x8x8|8|s1|")


# --------------------------------------------------------------------------- sampling


def test_samples_fill_the_ranges_reproducibly(sample) -> None:
    assert len(sample) == len({i.key for i in sample}) == 48
    assert [i.key for i in sample_blocks(RANGES, 48, seed=0)] == [i.key for i in sample]
    assert [i.key for i in sample_blocks(RANGES, 48, seed=1)] != [i.key for i in sample]
    per_op = {}
    for item in sample:
        op, c, hw, out, stride, options = parse_block_key(item.key)
        (r,) = [r for r in RANGES if r.op == op]
        assert (hw, stride) == (r.in_hw, r.stride)
        assert r.in_channels[0] <= c <= r.in_channels[1] and c % 8 == 0
        assert out == c if r.same_channels else r.out_channels[0] <= out <= r.out_channels[1]
        if "expansion" in r.numeric:
            low, high = r.numeric["expansion"]
            assert low <= options.get("expansion", 6) <= high
        assert item.input_shape == (1, c, *hw)
        assert block_key(item.build.args[0], {}) == item.key  # the key names that block
        per_op.setdefault(op, set()).add((c, out))
    # a Latin hypercube: every range gets about a quarter, spread over its channels
    assert all(10 <= sum(parse_block_key(i.key)[0] == op for i in sample) <= 14 for op in per_op)
    assert all(len(v) >= 5 for v in per_op.values())


def test_ranges_come_from_the_networks_blocks() -> None:
    wide = {**TINY, "blocks": [[("conv_k3", 8, 2, 1)],
                               [("ir_k3", 16, 1, 2, {"expansion": 5})]]}
    ranges = {(r.op, r.in_hw): r for r in block_ranges([arch_items(TINY), arch_items(wide)])}
    ir = ranges[("ir_k3", (16, 16))]
    assert ir.in_channels == (8, 16) and ir.out_channels == (8, 16)
    assert ir.numeric == {"expansion": (3, 5)} and ir.channel_step == 8
    assert ir.options == {"width_divisor": 1} and not ir.same_channels
    assert all(r.op != "cls_head" for r in ranges.values())
    assert BlockRange.from_dict(ir.to_dict()) == ir
    with pytest.raises(ConfigError, match="unknown key 'in_channel'; did you mean"):
        BlockRange.from_dict({"op": "ir_k3", "in_hw": 8, "in_channel": [8, 16]})


# --------------------------------------------------------------------------- the model


def test_the_regressor_is_chosen_by_cross_validated_accuracy(model, sample) -> None:
    assert set(model.cv_errors) == {c.name for c in CANDIDATES}
    assert model.candidate.name == min(model.cv_errors, key=model.cv_errors.get)
    unseen = sample_blocks(RANGES, 24, seed=5)
    errors = [abs(model.predict_key(i.key).ms / synthetic_ms(key_features(i.key)) - 1)
              for i in unseen if i.key not in {b.key for b in model.blocks}]
    assert len(errors) >= 15 and sorted(errors)[int(0.8 * len(errors))] < 0.10


def test_a_saved_model_refits_to_the_same_predictions(model, tmp_path, caplog) -> None:
    path = tmp_path / "lut.model.json"
    model.save(path)
    data = json.loads(path.read_text())
    assert data["regressor"]["name"] == model.candidate.name
    assert len(data["blocks"]) == 48 and data["versions"]["scikit-learn"]
    with caplog.at_level(logging.WARNING):
        loaded = BlockLatencyModel.load(path, expect=model.device)
    assert caplog.text == ""
    key = "ir_k3|24x16x16|24|s1|expansion=2.5"
    assert loaded.predict_key(key).ms == model.predict_key(key).ms


def test_features_outside_the_training_ranges_are_flagged(model) -> None:
    inside = model.predict_key("ir_k3|24x16x16|24|s1|expansion=2.5")
    assert inside.extrapolated == ()
    outside = model.predict_key("ir_k3|24x64x64|24|s1|expansion=2.5")
    assert any(e.startswith("in_h=64 (trained 8-32)") for e in outside.extrapolated)
    other_family = model.predict_key("mobileone|16x16x16|16|s1|")
    assert other_family.extrapolated[0].startswith("family 'mobileone' (trained: conv, irf)")


def test_bad_model_files(model, tmp_path, caplog) -> None:
    path = tmp_path / "m.json"
    model.save(path)
    data = json.loads(path.read_text())
    foreign = dict(data, device={**data["device"], "cpu": "Snapdragon 8 Gen 3",
                                 "backend": "onnxruntime"},
                   versions={**data["versions"], "scikit-learn": "0.24.0"})
    path.write_text(json.dumps(foreign))
    with caplog.at_level(logging.WARNING):
        BlockLatencyModel.load(path, expect=model.device)
    assert "cpu: 'Snapdragon 8 Gen 3'" in caplog.text and "backend: 'onnxruntime'" in caplog.text
    assert "scikit-learn 0.24.0 when fitted" in caplog.text
    path.write_text(json.dumps(data)[:500])
    with pytest.raises(BlockModelError, match="corrupted or truncated"):
        BlockLatencyModel.load(path)
    for broken, message in (({**data, "format": "x"}, "not an fbnas block latency model"),
                            ({**data, "features_version": 0}, "other block features"),
                            ({**data, "blocks": data["blocks"][:3]}, "3 training blocks"),
                            ({**data, "regressor": {**data["regressor"], "name": "svm"}},
                             "unknown regressor")):
        path.write_text(json.dumps(broken))
        with pytest.raises(BlockModelError, match=message):
            BlockLatencyModel.load(path)
    path.write_text(json.dumps(data))
    with pytest.raises(BlockModelError, match="batch 1 blocks, the table holds batch 4"):
        BlockLatencyModel.load(path, batch=4)
    with pytest.raises(BlockModelError, match="at least 8 measured blocks"):
        BlockLatencyModel.fit(model.blocks[:5], model.device)


# --------------------------------------------------------------------------- the table


def partial_table(model: BlockLatencyModel) -> tuple[LatencyTable, list[str]]:
    """A table holding TINY's first block and its head (synthetic times), with ``model``."""
    keys = list(dict.fromkeys(arch_items(TINY).keys))
    table = LatencyTable(DeviceInfo.current())
    for key in (keys[0], keys[-1]):
        table.entries[key] = LatencyEntry([0.05], 10)
    table.attach_model(model)
    return table, keys


def test_the_table_answers_measured_blocks_and_the_model_the_rest(model) -> None:
    table, keys = partial_table(model)
    prediction = table.predict(arch_items(TINY))
    assert prediction.model_blocks == ("xif1_0", "xif1_1", "xif1_2", "xif2_0", "xif2_1")
    assert prediction.sum_ms == pytest.approx(
        0.1 + sum(model.predict_key(k).ms for k in arch_items(TINY).keys[1:-1]))
    assert table.lookup(keys[0]) == 0.05 and table.missing(keys) == []
    assert table.unmeasured(keys) == keys[1:-1]
    # the skip and the 1x1 conv are unlike any training block: flagged, the others not
    assert [e.split(":")[0] for e in prediction.extrapolated] == ["xif2_0", "xif2_1"]
    assert "family 'skip' (trained: conv, irf)" in prediction.extrapolated[0]
    assert "kernel=1 (trained 3-5)" in prediction.extrapolated[1]
    # at 128x128 the blocks lie outside the model's training ranges: the prediction says so
    big = arch_items(TINY, 128)
    for key in (big.keys[0], big.keys[-1]):
        table.entries[key] = LatencyEntry([0.5], 10)
    flagged = table.predict(big).extrapolated
    assert len(flagged) == 5 and flagged[0].startswith("xif1_0: in_h=64 (trained 8-32)")
    table.entries[keys[0]].busy = True  # a busy entry: the model answers it, too
    assert table.predict(arch_items(TINY)).model_blocks[0] == "xif0_0"
    # the head is no block the model can describe: still missing without an entry
    del table.entries[keys[-1]]
    with pytest.raises(MissingEntriesError, match="cls_head"):
        table.predict(arch_items(TINY))
    table.attach_model(None)
    assert table.missing(keys) == keys


def test_a_model_beside_the_table_is_loaded_with_it(model, tmp_path, caplog) -> None:
    table, keys = partial_table(model)
    path = tmp_path / "lut.json"
    table.save(path)
    assert LatencyTable.load(path).model is None
    model.save(model_path(path))
    assert model_path(path).name == "lut.model.json"
    loaded = LatencyTable.load(path)
    assert loaded.predict(arch_items(TINY)).sum_ms == pytest.approx(
        table.predict(arch_items(TINY)).sum_ms)
    elsewhere = tmp_path / "other.json"
    model_path(path).rename(elsewhere)
    assert LatencyTable.load(path, model=elsewhere).model is not None
    with pytest.raises(BlockModelError, match="does not exist"):
        LatencyTable.load(path, model=tmp_path / "nope.json")
    # a model of another batch size does not answer for a table of batch 1
    replace(model, batch=2).save(model_path(path))
    with pytest.raises(BlockModelError, match="batch 2 blocks"):
        LatencyTable.load(path)


# --------------------------------------------------------------------------- the CLI


def test_cli_builds_a_model_beside_the_table_and_latency_says_what_it_answered(
        tmp_path, capsys) -> None:
    from fbnas.cli.main import main

    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY))
    out = tmp_path / "lut.json"
    assert main(["lut", "build", str(arch), "--rounds", "1", "--calibrate-on", "1",
                 "--model-sample", "16", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "sampled for the block latency model" in captured.err
    assert f"block latency model -> {model_path(out)}" in captured.out
    table = LatencyTable.load(out)
    assert table.model is not None and len(table.model.blocks) >= 16
    wider = tmp_path / "wider.json"
    blocks = [list(stage) for stage in TINY["blocks"]]
    blocks[1][0] = ("ir_k3", 8, 1, 2, {"expansion": 2})  # a width option the table lacks
    wider.write_text(json.dumps({**TINY, "blocks": blocks}))
    assert main(["latency", str(wider), "--lut", str(out), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["model_blocks"] == ["xif1_0", "xif1_1"] and record["blocks"] == 7
    assert main(["latency", str(wider), "--lut", str(out)]) == 0
    assert "2/7" in capsys.readouterr().out
    # refit on the table's own entries, to another file, and use that one
    refit = tmp_path / "refit.json"
    assert main(["lut", "fit-model", str(out), "--out", str(refit)]) == 0
    assert "cross-validated error" in capsys.readouterr().out
    model_path(out).unlink()
    assert main(["latency", str(wider), "--lut", str(out), "--json"]) == 2
    assert "no entry for 1 block(s)" in capsys.readouterr().err
    assert main(["latency", str(wider), "--lut", str(out), "--latency-model", str(refit),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model_blocks"] == ["xif1_0", "xif1_1"]
    refit.write_text("{")
    assert main(["latency", str(wider), "--lut", str(out), "--latency-model", str(refit)]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err


def test_a_search_space_the_table_does_not_cover_gets_latency_costs(model) -> None:
    from fbnas.search.dnas import layer_costs
    from fbnas.search.space import Candidate, LayerChoice, SearchSpace

    # FBNetV2-style width options: more widths than the table holds
    space = SearchSpace(
        "widths", 32, prefix=((("conv_k3", 8, 2, 1),),),
        layers=tuple(LayerChoice(1, width, 1, (Candidate("e3", "ir_k3", {"expansion": 3}),
                                                Candidate("e5", "ir_k3", {"expansion": 5})))
                     for width in (16, 24)),
        suffix=())
    archs = [arch_items(a, num_classes=10) for a in space.all_candidate_archs()]
    table = LatencyTable(DeviceInfo.current())
    for arch in archs:  # the table holds the stem and the head only
        for key in (arch.keys[0], arch.keys[-1]):
            table.entries[key] = LatencyEntry([0.05], 10)
    with pytest.raises(MissingEntriesError):
        layer_costs(space, "latency", table, num_classes=10)
    table.attach_model(model)
    costs = layer_costs(space, "latency", table, num_classes=10)
    for choices in ([0, 0], [0, 1], [1, 1]):
        prediction = table.predict(space.arch_def(choices), num_classes=10)
        assert prediction.model_blocks == ("xif1_0", "xif1_1")
        assert costs.network_cost(choices) == pytest.approx(prediction.predicted_ms)


# --------------------------------------------------------------------------- heads

HEAD_RANGES = [HeadRange("cls_head", (16, 256), (2, 8), (2, 8), 8,
                         numeric={"num_classes": (10, 1000)})]


@pytest.fixture(scope="module")
def head_sample():
    return sample_blocks(RANGES + HEAD_RANGES, 120, seed=0)


@pytest.fixture(scope="module")
def head_model(head_sample) -> BlockLatencyModel:
    return BlockLatencyModel.fit(training(head_sample), DeviceInfo.current(), folds=3)


def test_head_keys_parse_and_get_hand_computed_features() -> None:
    from fbnas.arch.spec import HeadSpec
    from fbnas.builder import FBNetBuilder

    assert parse_head_key("cls_head|1984x3x3|1000") == ("cls_head", 1984, (3, 3),
                                                        {"num_classes": 1000})
    trace = FBNetBuilder().trace_head(HeadSpec("cls_head", {"num_classes": 7}), 24, (5, 4))
    assert parse_head_key(head_key(trace)) == ("cls_head", 24, (5, 4), {"num_classes": 7})
    head = key_features("cls_head|1984x3x3|1000")  # pool, then a 1x1 conv with bias
    assert head["family"] == "head:cls_head"
    assert (head["in_channels"], head["in_h"], head["out_channels"]) == (1984, 3, 1000)
    assert (head["out_h"], head["stride"], head["kernel"], head["residual"]) == (1, 1, 1, 0)
    assert head["macs"] == head["macs_pointwise"] == 1984 * 1000 and head["layers"] == 2
    assert head["params"] == 1984 * 1000 + 1000
    assert head["bytes"] == 4 * (1984 * 9 + 1984 + 1984 + 1000 + head["params"])
    for bad, message in (("cls_head|32x8x8", "not a head key"),
                         ("cls_head|32x8|10", "not a head key"),
                         ("cls_head|32x8x8|10,20", "2 values for the required options"),
                         ("ir_k3|8x8x8|8|s1|", "not a head key")):
        with pytest.raises(BlockModelError, match=message):
            parse_head_key(bad)


def test_samples_include_a_share_of_heads_over_the_head_ranges(head_sample) -> None:
    assert [head_count(n) for n in (0, 8, 16, 60, 120, 1000)] == [0, 2, 4, 5, 6, 50]
    assert head_count(10, with_blocks=False) == 10
    heads = [i for i in head_sample if i.key.startswith("cls_head|")]
    assert len(head_sample) == 120 and len(heads) == 6
    assert head_sample[-6:] == heads and heads[0].label == "model_sample:head0"
    assert [i.key for i in sample_blocks(RANGES + HEAD_RANGES, 120, seed=0)] == [
        i.key for i in head_sample]
    # the blocks are the sample of the block ranges alone, one block per head fewer
    assert [i.key for i in head_sample[:-6]] == [i.key for i in sample_blocks(RANGES, 114)]
    for item in heads:
        op, c, (h, w), options = parse_head_key(item.key)
        assert 16 <= c <= 256 and c % 8 == 0 and 2 <= h == w <= 8
        assert 10 <= options["num_classes"] <= 1000
        assert item.input_shape == (1, c, h, w)
        assert tuple(item.build()(torch.zeros(item.input_shape)).shape) == (
            1, options["num_classes"])
    assert len({parse_head_key(i.key)[1] for i in heads}) >= 5  # spread, not one head
    only_heads = sample_blocks(HEAD_RANGES, 4)
    assert len(only_heads) == 4 and all(i.key.startswith("cls_head|") for i in only_heads)


def test_head_ranges_come_from_the_networks_heads() -> None:
    wide = {**TINY, "blocks": [[("conv_k3", 8, 2, 1)], [("ir_k3", 48, 1, 2)]]}
    tiny, other = arch_items(TINY, num_classes=10), arch_items(wide, 64, num_classes=100)
    [head] = head_ranges([tiny, other])
    assert (head.op, head.in_channels, head.in_h, head.in_w) == ("cls_head", (32, 48),
                                                                 (8, 32), (8, 32))
    assert head.numeric == {"num_classes": (10, 100)} and head.channel_step == 8
    [widened] = head_ranges([tiny], widen=1.5)
    assert widened.in_channels == (16, 48) and widened.in_h == (5, 12)
    assert widened.numeric == {"num_classes": (6, 15)}
    assert range_from_dict(head.to_dict()) == head
    assert range_from_dict(RANGES[0].to_dict()) == RANGES[0]
    with pytest.raises(ConfigError, match="unknown key 'classes'"):
        range_from_dict({"op": "cls_head", "in_channels": 8, "in_h": 4, "classes": 3})
    with pytest.raises(ValueError, match="in_h must be 1 <= low <= high"):
        HeadRange("cls_head", (8, 8), (4, 2), (4, 4))


def test_a_model_trained_with_heads_answers_unseen_heads(head_model, head_sample) -> None:
    assert head_model.has_heads and "head:cls_head" in head_model.families
    seen = {b.key for b in head_model.blocks}
    unseen = [i.key for i in sample_blocks(HEAD_RANGES, 12, seed=7) if i.key not in seen]
    errors = [abs(head_model.predict_key(k).ms / synthetic_ms(key_features(k)) - 1)
              for k in unseen]
    assert len(errors) >= 10 and sorted(errors)[int(0.8 * len(errors))] < 0.25
    assert all(head_model.predict_key(k).extrapolated == () for k in unseen)
    # heads are checked against the training heads, blocks against the training blocks
    outside = head_model.predict_key("cls_head|1024x7x7|100").extrapolated
    assert outside == ("in_channels=1024 (trained 16-256)",
                       "hidden_channels=1024 (trained 16-1000)")
    assert head_model.predict_key("cls_head|64x16x16|100").extrapolated[0].startswith(
        "in_h=16 (trained 2-8)")
    assert head_model.predict_key("ir_k3|24x16x16|24|s1|expansion=2.5").extrapolated == ()
    assert any(e.startswith("out_channels=1000 (trained")
               for e in head_model.predict_key("conv_k3|16x32x32|1000|s1|").extrapolated)


def test_the_table_predicts_a_missing_head_with_the_model(head_model, model) -> None:
    table, keys = partial_table(head_model)
    del table.entries[keys[-1]]  # the head: cls_head|32x8x8|1000
    prediction = table.predict(arch_items(TINY))
    assert prediction.model_blocks == ("xif1_0", "xif1_1", "xif1_2", "xif2_0", "xif2_1",
                                       "head")
    assert dict(prediction.block_ms)["head"] == head_model.predict_key(keys[-1]).ms
    assert not any(e.startswith("head:") for e in prediction.extrapolated)
    assert table.missing(keys) == []
    # a head out of the sampled ranges is answered and flagged
    big = table.predict(arch_items(TINY, num_classes=5000))
    assert big.model_blocks[-1] == "head"
    assert big.extrapolated[-1].startswith("head: ")
    assert "out_channels=5000 (trained 10-1000)" in big.extrapolated[-1]
    # a model fitted without heads (files from before) leaves the head missing, and says why
    table.attach_model(model)
    assert table.missing(keys) == [keys[-1]]
    with pytest.raises(MissingEntriesError, match="fitted without heads") as error:
        table.predict(arch_items(TINY))
    assert error.value.missing == [keys[-1]]
    with pytest.raises(BlockModelError, match="fitted without heads"):
        model.predict_key(keys[-1])


def test_an_old_model_file_without_heads_still_loads(model, tmp_path) -> None:
    path = tmp_path / "old.model.json"
    model.save(path)
    loaded = BlockLatencyModel.load(path)
    assert not loaded.has_heads and loaded.head_ranges is None
    key = "ir_k3|24x16x16|24|s1|expansion=2.5"
    assert loaded.predict_key(key).ms == model.predict_key(key).ms


def test_a_table_with_head_entries_fits_a_model_that_has_seen_heads(head_sample) -> None:
    table = LatencyTable(DeviceInfo.current())
    for block in training(head_sample):
        table.entries[block.key] = LatencyEntry([block.ms], 10)
    table.entries["no_such_head|8x2x2|3"] = LatencyEntry([0.1], 10)
    blocks = table.training_blocks()
    assert len(blocks) == 120 and sum(b.features["family"] == "head:cls_head"
                                      for b in blocks) == 6


@pytest.mark.parametrize("key", [
    "ir_k5_hs|40x28x28|72|s2|expansion=5,se_args=\"se_hsig\"",
    "ir_k3|16x14x14|16|s1|expansion=3",
    "conv_k3_hs|3x32x32|16|s2|",
])
def test_activations_passed_through_give_the_features_of_running_them(key) -> None:
    # block_features lets leaf activations pass their input through (only shapes are
    # read; on the meta device they are slow): the features must be those of running them.
    from fbnas.cost.block_model import block_features, key_module

    fast, chw = key_module(key)
    real, _ = key_module(key)
    for m in real.modules():  # an own forward: block_features leaves it alone
        m.forward = type(m).forward.__get__(m)
    op = key.split("|", 1)[0]
    assert block_features(fast, (1, *chw), op) == block_features(real, (1, *chw), op)
    assert all("forward" not in m.__dict__ for m in fast.modules())  # restored
