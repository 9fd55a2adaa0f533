"""The reference channel-rounding rule (not timm's make_divisible)."""

from __future__ import annotations

import pytest

from fbnas.arch import round_channels, scale_channels


@pytest.mark.parametrize(("value", "divisor", "expected"), [
    (12, 8, 16), (20, 8, 24), (100, 8, 104), (27.3, 8, 32), (4, 8, 8), (17, 8, 24),
    (16, 8, 16), (87.3, 1, 87), (87.5, 1, 88), (108, 8, 112), (0.2, 1, 1),
])
def test_round_channels_examples(value: float, divisor: int, expected: int) -> None:
    assert round_channels(value, divisor) == expected


def test_min_value_bounds_the_result() -> None:
    assert round_channels(3, 1, min_value=8) == 8


def test_scale_channels_rounds_only_when_the_ratio_is_not_one() -> None:
    assert scale_channels(17, 1.0, 8) == 17
    assert scale_channels(32, 0.5, 8) == 16
    assert scale_channels(24, 0.75, 8) == 24  # int(18) -> 16 is < 0.95 * 18 -> 24


def test_divisor_must_be_positive() -> None:
    with pytest.raises(ValueError, match="divisor"):
        round_channels(8, 0)
