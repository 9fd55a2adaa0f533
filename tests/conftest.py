"""Shared fixtures: the reference data beside the checkout, tiny arch defs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_arch() -> dict:
    """A small valid arch def touching the main op families (32x32 input friendly)."""
    return {
        "input_size": 32,
        "basic_args": {"width_divisor": 8},
        "blocks": [
            [("conv_k3_hs", 8, 2, 1)],
            [("ir_k3", 8, 1, 1, {"expansion": 1})],
            [("ir_k5_sehsig_hs", 16, 2, 2, {"expansion": 4}, {"zero_last_bn_gamma": True})],
            [("skip", 24, 2, 1), ("ir_k3_g2", 24, 1, 1, {"expansion": 1}, {"pwl_groups": 2})],
            [("ir_pool_hs", 64, 1, 1, {"expansion": 6})],
        ],
    }
