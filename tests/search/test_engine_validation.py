"""The engine validates the derived path inside the supernet with batch statistics, leaving
the running statistics untouched."""

from __future__ import annotations

import torch
from torch import nn

from fbnas.search.engine import batch_statistics


def test_batch_statistics_normalise_per_batch_and_leave_running_stats_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, momentum=None))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3, 6, 6) * 5 + 3
    with batch_statistics(net):
        y = net(x)
        assert not net[0].training and net[1].training
    # per-channel mean 0 / variance 1 over the batch: batch statistics, not running ones
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not net[1].training and net[1].momentum == 0.1 and net[2].momentum is None
