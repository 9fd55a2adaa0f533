"""The error family of fbnas and the two helpers every error message uses.

Every exception fbnas raises for bad input derives from :class:`FbnasError`, so a caller
(the CLI, a notebook, a service) catches one type and shows its message, which names the
bad part (the file, stage, block, key, layer). Each subclass keeps the builtin base it had
(``ArchDefError`` is also a ``ValueError``), so ``except ValueError`` goes on working.

The standalone device runner (:mod:`fbnas.cost.runner`) is the one exception: it runs on
devices without fbnas and imports nothing of it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any


class FbnasError(Exception):
    """Base of every fbnas error caused by the input (a file, a setting, a name)."""


class ConfigError(FbnasError, ValueError):
    """Settings with an unknown key or a bad value (search, sandwich, width search)."""


def close_names(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6
                ) -> list[str]:
    """The ``n`` names of ``known`` closest to ``name`` (difflib's ratio >= ``cutoff``)."""
    return difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)


def did_you_mean(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the names closest to ``name``, or ``""``.

    Every "unknown name" message of fbnas ends with this hint, so they read alike.
    """
    close = close_names(name, known, n, cutoff)
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"; did you mean {listed}?"


def reject_unknown_keys(data: Mapping[str, Any], cls: type, source: str,
                        error: type[Exception] = ConfigError) -> None:
    """Raises ``error`` naming ``source`` for the first key of ``data`` that is not a field
    of the dataclass ``cls``, with the closest field names: every settings ``from_dict``
    of fbnas (recipes, search settings, sandwich training, width search) refuses unknown
    keys alike."""
    known = [f.name for f in fields(cls)]
    for key in data:
        if key not in known:
            raise error(f"{source}: unknown key {key!r}{did_you_mean(key, known, n=2)}")
