"""Atomic writes: all or nothing, and files as readable as any other file written here."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fbnas.io import atomic_write


def test_an_atomic_write_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    # mkstemp makes its temp file 0600; after the rename a run folder would mix private
    # and readable files.
    mask = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic = tmp_path / "atomic.txt"
        atomic_write(atomic, lambda fh: fh.write(b"x"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")

    def fail(fh) -> None:
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
