"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import yaml


def fsync_dir(folder: Path) -> None:
    """Makes a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


YAML_SUFFIXES = (".yaml", ".yml")


def read_json_or_yaml(path: Path) -> Any:
    """Parses a user's data file: YAML for ``.yaml``/``.yml`` (``yaml.safe_load``: an
    untrusted file never runs code), JSON otherwise.

    Raises:
        ValueError: the text does not parse (the parser's message); callers name the file.
    """
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text) if path.suffix.lower() in YAML_SUFFIXES else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(str(exc)) from None


def read_json_file(path: str | os.PathLike, what: str, error: type[Exception],
                   remedy: str = "") -> Any:
    """The parsed JSON of a file fbnas wrote (a table, a model, a grid), or ``error``
    naming ``what`` and the path: missing, or corrupted/truncated (with ``remedy``, e.g.
    "rebuild it", after the parser's message).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        hint = f"; {remedy}" if remedy else ""
        raise error(f"{what} {str(path)!r} is corrupted or truncated ({exc}){hint}") from None


def file_mode() -> int:
    """The mode ``open()`` gives a new file now (0666 less the umask).

    ``mkstemp`` makes its temp file 0600; without this, a run folder would mix private
    (atomically written) and readable files. The umask is read from /proc where it is
    (toggling it would race with other threads creating files), else by setting it back.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write`` on a temp file beside ``path``, flushes, fsyncs, renames over ``path``.

    A failure (or a kill) leaves the previous ``path`` intact and no temp file behind
    (except after SIGKILL, when a hidden ``.NAME.*.tmp`` may remain).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))
