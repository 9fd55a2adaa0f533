"""DMaskingNAS latency: the expectation over option pairs, from the table and the model."""

from __future__ import annotations

import pytest
import torch

from fbnas.cost.block_model import CANDIDATES, BlockLatencyModel, TrainingBlock, key_features
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyEntry, LatencyTable, arch_items
from fbnas.search.dmasking.latency import MaskedLatency
from fbnas.search.dmasking.space import DMaskingSpace
from fbnas.search.dmasking.supernet import MaskedSupernet

SPACE = {
    "name": "lat", "resolutions": [8, 16], "width_divisor": 4,
    "stages": [
        {"kind": "conv", "blocks": 1, "stride": 2, "widths": [8]},
        {"kind": "ir", "blocks": 1, "stride": 2, "widths": [8, 16], "expansions": [1, 3],
         "kernels": [3, 5]},
        {"kind": "ir", "blocks": 1, "stride": 2, "widths": [12, 16], "expansions": [2]},
        {"kind": "ir_pool", "blocks": 1, "stride": 1, "widths": [32], "expansions": [2]},
    ],
}


def synthetic_ms(key: str) -> float:
    f = key_features(key)
    return 0.01 * f["layers"] + 2e-7 * (f["macs_pointwise"] + f["macs_depthwise"]
                                        + f["macs_dense"])


@pytest.fixture(scope="module")
def priced():
    space = DMaskingSpace.from_dict(SPACE)
    probe = MaskedSupernet(space, 10)
    device = DeviceInfo.current("torch", 1)
    keys = sorted({k for choice in probe.sample_architectures(20, torch.Generator()
                                                              .manual_seed(0))
                   for k in arch_items(probe.arch_def(choice), None, 10).keys})
    table = LatencyTable(device)
    for key in keys[::2]:  # half measured; the block latency model answers the rest
        table.entries[key] = LatencyEntry([synthetic_ms(key)], 10)
    table.attach_model(BlockLatencyModel.fit(
        [TrainingBlock(k, key_features(k), synthetic_ms(k)) for k in keys], device,
        candidates=CANDIDATES[:1], folds=2))  # the linear model: the test is not about it
    latency = MaskedLatency(table)
    return MaskedSupernet(space, 10, "latency", latency), table


def test_one_hot_expected_latency_is_the_tables_prediction_of_the_derived_network(priced):
    net, table = priced
    generator = torch.Generator().manual_seed(1)
    for choice in net.sample_architectures(4, generator):
        arch = net.arch_def(choice)
        assert net.choice_cost(choice) == pytest.approx(
            table.predict(arch, arch["input_size"], 10).predicted_ms, rel=1e-5)


def test_expected_latency_is_the_pairwise_expectation_and_differentiable(priced):
    net, _ = priced
    weights = torch.softmax(torch.randn(len(net.groups), net.width), -1).masked_fill(
        net.theta_mask, 0.0).requires_grad_(True)
    expected = net.cost_of(weights)
    expected.backward()
    assert weights.grad[~net.theta_mask].abs().sum() > 0
    # Brute force: Σ over every architecture of its probability times its latency.
    total = 0.0
    sizes = [len(g.options) for g in net.groups]
    for flat in range(int(torch.tensor(sizes).prod())):
        choice, rest = [], flat
        for size in sizes:
            choice.append(rest % size)
            rest //= size
        p = float(torch.prod(torch.stack([weights[g, c].detach() for g, c in enumerate(choice)])))
        total += p * net.choice_cost(choice)
    assert float(expected) == pytest.approx(total, rel=1e-4)


def test_the_model_answers_a_batch_as_it_answers_each_key(priced):
    # The set-up prices every combination with one regressor call (predict_many); the
    # answers must be the per-key ones, the table's own entries untouched.
    net, table = priced
    keys = sorted({k for choice in net.sample_architectures(6, torch.Generator().manual_seed(5))
                   for k in arch_items(net.arch_def(choice), None, 10).keys})
    rows = [key_features(k) for k in keys]
    batch = table.model.predict_many(rows)
    for key, row, answer in zip(keys, rows, batch, strict=True):
        assert answer.ms == pytest.approx(table.model.predict_features(row).ms, rel=1e-9)
        if key in table:
            assert table.lookup(key) == table.entry_ms(table.entries[key])
        else:
            assert table.lookup(key) == pytest.approx(answer.ms, rel=1e-9)
