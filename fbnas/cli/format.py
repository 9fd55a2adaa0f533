"""Plain-text tables and number formatting for the CLI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


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


def shorten(label: str, width: int) -> str:
    """``label`` in at most ``width`` characters: its first word (what is being done) kept
    whole and the rest cut in the middle, so ``calibration fbnet_v1_tiny_sample1`` reads
    ``calibration fbnet…sample1``, not ``alibration fbnet_v1_tiny_sample1``."""
    if len(label) <= width:
        return label
    first, sep, rest = label.partition(" ")
    if not sep or len(first) + 6 > width:  # one word, or no room for the rest: cut it
        first, rest = "", label
    room = width - len(first) - len(sep) - 1  # 1 for the ellipsis
    head = (room + 1) // 2
    return f"{first}{sep}{rest[:head]}…{rest[len(rest) - (room - head):]}"


def progress_bar(desc: str, width: int = 40, leave: bool = True
                 ) -> tuple[Any, Callable[[int, int, str], None]]:
    """A tqdm bar and the ``(done, total, label)`` callback that the latency-table
    builders and the block export call; the label shows as the bar's postfix."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="step", dynamic_ncols=True, mininterval=0.5,
               leave=leave)

    def update(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.set_postfix_str(shorten(label, width), refresh=False)
        bar.update(done - bar.n)

    return bar, update
