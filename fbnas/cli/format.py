"""Plain-text tables and number formatting for the CLI."""

from __future__ import annotations

from collections.abc import Sequence


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23M' (K/M/G/T)."""
    if n is None:
        return "-"
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          align_right: Sequence[bool] | None = None) -> str:
    """A fixed-width text table; numeric columns right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align_right is None:
        align_right = [bool(rows) and isinstance(rows[0][i], (int, float)) for i in
                       range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(values, widths, align_right, strict=True)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)
