"""Channel rounding exactly as the mobile-vision builder does it.

The rule differs from timm's/MobileNet's ``_make_divisible`` (0.9 threshold, round half to
even): here halves round away from zero and a result below 95 % of the request gets one more
divisor added, so 17 -> 24 with divisor 8 (timm gives 16). Zoo models only come out
identical to the reference with this rule.
"""

from __future__ import annotations

import math


def round_half_away(value: float) -> int:
    """Rounds to the nearest integer, halves away from zero (Python 2's ``round``)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def round_channels(value: float, divisor: int, min_value: int | None = None) -> int:
    """Returns ``value`` rounded to a multiple of ``divisor`` by the reference rule.

    Examples (divisor 8): 12 -> 16, 20 -> 24, 100 -> 104, 27.3 -> 32, 4 -> 8.
    With divisor 1 a fractional value rounds to nearest (87.3 -> 87), it is not floored.

    Args:
        value: the requested channel count (may be fractional, e.g. ``in * expansion``).
        divisor: the channel granularity (``width_divisor``), >= 1.
        min_value: lower bound of the result; defaults to ``divisor``.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    if min_value is None:
        min_value = divisor
    result = int(value)
    if value % divisor != 0:
        result = int((round_half_away(value / divisor) or 1) * divisor)
        if result < 0.95 * value:
            result += divisor
    return max(result, min_value)


def scale_channels(out_channels: int, width_ratio: float, divisor: int) -> int:
    """Scales a block's output width as the builder does: only when the ratio is not 1."""
    if width_ratio == 1.0:
        return out_channels
    return round_channels(int(out_channels * width_ratio), divisor, divisor)
