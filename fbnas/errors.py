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
import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


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


def parse_assignments(assignments: Iterable[str], source: str = "--set",
                      error: type[Exception] = ConfigError) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict, values read as YAML scalars (``lr=0.1``,
    ``tau_final=null``, ``topk=[1,3]``; text that is not YAML stays a string): what every
    ``--set`` of the CLI takes.

    Raises:
        error: a string without ``=`` or with an empty key, naming ``source``.
    """
    import yaml

    changes: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise error(f"{source} {text!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        changes[key.strip()] = value
    return changes


def check_field_types(settings: Any, error: type[Exception] = ConfigError) -> None:
    """Raises ``error`` for the first field of the dataclass instance ``settings`` whose
    value does not fit its annotation: ``int``, ``float`` (an int is accepted), ``bool``,
    ``str``, ``None``, ``Literal[...]`` and ``tuple[int, ...]``, alone or in a union.

    Settings read from YAML or JSON arrive untyped; checking them at the constructor names
    the key (``theta_lr must be float, got '1e-2'``) instead of failing deep in a run. YAML
    reads ``1e-2`` (no dot) as text, which the message points out.
    """
    hints = get_type_hints(type(settings))
    for f in fields(settings):
        value = getattr(settings, f.name)
        if not _fits(value, hints[f.name]):
            hint = hints[f.name]
            raise error(f"{f.name} must be {_describe_type(hint)}, got {value!r}"
                        f"{_yaml_number_hint(value, hint)}")


def _options(hint: Any) -> tuple[Any, ...]:
    return get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)


def _fits(value: Any, hint: Any) -> bool:
    for option in _options(hint):
        origin = get_origin(option)
        if option is type(None) and value is None:
            return True
        if origin is Literal and any(value == v and type(value) is type(v)
                                     for v in get_args(option)):
            return True
        if origin is tuple and isinstance(value, tuple):
            inner = get_args(option)[0] if get_args(option) else Any
            if inner is Any or all(_fits(v, inner) for v in value):
                return True
        if option is bool and isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(
                value, bool) and math.isfinite(value):
            return True
        if option is str and isinstance(value, str):
            return True
    return False


def _describe_type(hint: Any) -> str:
    words = []
    for option in _options(hint):
        origin = get_origin(option)
        if origin is Literal:
            words.append(f"one of {', '.join(map(repr, get_args(option)))}")
        elif origin is tuple:
            inner = get_args(option)[0] if get_args(option) else Any
            words.append(f"a list of {getattr(inner, '__name__', 'values')}s")
        elif option is type(None):
            words.append("null")
        else:
            words.append(getattr(option, "__name__", str(option)))
    return " or ".join(words)


def _yaml_number_hint(value: Any, hint: Any) -> str:
    if not isinstance(value, str) or float not in _options(hint):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (YAML reads a number without a dot, such as 1e-2, as text: write 1.0e-2)"
