"""Analytic params and MACs of width vectors equal those counted on the extracted subnet."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbnas.cost import count_macs, count_params
from fbnas.slim import (
    SLIM_MODELS,
    build_slim_model,
    extract_arch_spec,
    module_costs,
    subnet_cost,
)
from fbnas.zoo import FBNet

RESOLUTION = 64


@functools.cache
def _meta_model(name: str):
    # Shapes are all that costs need: the meta device holds no weights and computes nothing.
    with torch.device("meta"):
        return build_slim_model(name, num_classes=10)


def _counted(model, real_ch) -> tuple[int, int]:
    spec = extract_arch_spec(model, real_ch)
    with torch.device("meta"):
        subnet = FBNet(spec, num_classes=10)
    return count_params(subnet), count_macs(subnet, RESOLUTION)


@pytest.mark.parametrize("name", sorted(SLIM_MODELS))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_analytic_cost_equals_the_counted_subnet(name: str, data: st.DataObject) -> None:
    model = _meta_model(name)
    wm = data.draw(st.lists(st.floats(0.01, 1.0), min_size=model.search_dim,
                            max_size=model.search_dim), label="wm")
    real_ch = model.decode_ch(model.decode_wm(wm))
    cost = subnet_cost(model, real_ch, RESOLUTION)
    assert (cost.params, cost.macs) == _counted(model, real_ch)


def test_full_width_cost_is_the_zoo_figure() -> None:
    # mnv2 at 224: the zoo model's params and MACs (with a 1000-class head).
    with torch.device("meta"):
        model = build_slim_model("slim_mbv2")
    cost = subnet_cost(model)
    assert (cost.params, cost.macs) == (count_params(model), count_macs(model, 224))
    assert cost.macs == 300774272


def test_module_costs_name_each_module_with_its_active_shape() -> None:
    model = _meta_model("slim_mbv3")
    real_ch = model.decode_ch(model.decode_wm([0.5] * model.search_dim))
    rows = {row.name: row for row in module_costs(model, real_ch, RESOLUTION)}
    stem = rows["stages.0.blocks.0.conv"]
    # 3 -> 8 channels, 3x3, stride 2 at 64x64: 32x32 outputs of 27-term dot products
    assert (stem.kind, stem.in_channels, stem.out_channels, stem.stride) == ("conv", 3, 8, (2, 2))
    assert (stem.positions, stem.macs, stem.params) == (32 * 32, 32 * 32 * 8 * 27, 8 * 27 + 8)
    assert rows["stages.0.blocks.0.bn"].params == 16 and rows["stages.0.blocks.0.bn"].macs == 0
    dw = rows["stages.3.blocks.0.dw.conv"]
    assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (5, 5)
    assert sum(r.macs for r in rows.values()) == subnet_cost(model, real_ch, RESOLUTION).macs
