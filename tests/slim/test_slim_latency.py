"""Latency over widths: per-block grids, multilinear interpolation, calibration, files."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from slim_width_helpers import TINY_SLIM_ARCH, synthetic_latency_table

from fbnas.cost.lut import BuildSettings, LatencyTableError, arch_items
from fbnas.slim import build_slim_model, extract_arch_spec
from fbnas.slim.errors import SlimConfigError
from fbnas.slim.latency import UnitGrid, WidthLatencyModel, build_width_latency, unit_dims

RESOLUTION = 16
LEVELS = (0.25, 0.5, 1.0)


def test_each_block_depends_on_the_dimensions_of_its_own_widths() -> None:
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    # stem out (0); the depthwise-separable block is tied to it; stage 2: out (1) and the
    # two hidden widths (2, 3); stage 3: out (4), hidden (5, 6); the last 1x1 conv (7).
    assert unit_dims(model) == [(0,), (0,), (0, 1, 2), (1, 3), (1, 4, 5), (4, 6), (4, 7),
                                (7,)]


def test_interpolation_is_exact_on_multilinear_functions_and_extrapolates_linearly() -> None:
    axes = ((8, 16, 32), (24, 48))

    def f(a: float, b: float) -> float:
        return 0.5 + 0.01 * a + 0.002 * b + 0.001 * a * b

    grid = UnitGrid("block", (0, 1), axes, tuple(f(a, b) for a, b in itertools.product(*axes)))
    for a, b in [(8, 24), (12, 30), (20, 48), (32, 40), (4, 16), (40, 60)]:
        assert grid.interpolate([a, b]) == pytest.approx(f(a, b))
    assert UnitGrid("head", (3,), ((16,),), (1.5,)).interpolate([8]) == 1.5
    with pytest.raises(ValueError, match="ascending and distinct"):
        UnitGrid("bad", (0,), ((16, 8),), (1.0, 2.0))
    with pytest.raises(ValueError, match="a grid of 3 points has 2 values"):
        UnitGrid("bad", (0,), ((8, 16, 24),), (1.0, 2.0))


def test_predictions_reproduce_the_table_for_any_width_vector(tmp_path: Path) -> None:
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    table = tmp_path / "lut.json"
    fake_ms = synthetic_latency_table(model, RESOLUTION, LEVELS, table)
    # Every entry is in the table already: nothing is timed, the calibration is fitted.
    predictor = build_width_latency(model, RESOLUTION, table, LEVELS,
                                    BuildSettings(rounds=1, extra_rounds=0))
    assert predictor.scale == pytest.approx(1.2) and predictor.offset_ms == pytest.approx(0.5)
    assert [u.dims for u in predictor.units] == unit_dims(model)
    assert predictor.units[-1].label == "head"
    rng = random.Random(0)
    for _ in range(8):  # off the grid, and below its lowest level (extrapolated)
        wm = [rng.uniform(0.1, 1.0) for _ in range(model.search_dim)]
        spec = extract_arch_spec(model, model.decode_ch(model.decode_wm(wm)))
        expected = sum(fake_ms(item) for item in arch_items(spec, RESOLUTION, 10).items)
        counts = model.channel_groups.flatten_ch(model.decode_wm(wm))
        assert sum(predictor.block_ms(counts)) == pytest.approx(expected, rel=1e-9)
        assert predictor.predict_wm(model, wm) == pytest.approx(1.2 * expected + 0.5)

    path = tmp_path / "widths.json"
    predictor.save(path)
    assert WidthLatencyModel.load(path) == predictor
    with pytest.raises(SlimConfigError, match="3 channel counts for a network of search_dim 8"):
        predictor.predict_counts([8, 8, 8])
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(LatencyTableError, match="not an fbnas width-latency file"):
        WidthLatencyModel.load(path)


def test_levels_must_include_the_full_width() -> None:
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    with pytest.raises(SlimConfigError, match="including 1.0"):
        build_width_latency(model, RESOLUTION, "unused.json", (0.25, 0.5))
