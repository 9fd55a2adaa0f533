"""Typed block options: checking user values against a dataclass or a signature.

Every op's options are declared with types (a frozen dataclass for the built-in families, a
keyword signature for users' own ops). Values from arch defs are checked against those
types before anything is built, so a mistyped option fails with a message naming the key
instead of a stack trace from inside torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from fbnas.arch.errors import ArchDefError
from fbnas.arch.spec import FrozenKwargs, thaw

_MISSING = object()


@dataclass(frozen=True)
class OptionSchema:
    """Name -> (type annotation, default) of the options an op accepts."""

    fields: Mapping[str, tuple[Any, Any]]

    @classmethod
    def from_dataclass(cls, options_type: type) -> OptionSchema:
        hints = typing.get_type_hints(options_type)
        fields = {}
        for f in dataclasses.fields(options_type):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = _MISSING
            fields[f.name] = (hints[f.name], default)
        return cls(fields)

    @classmethod
    def from_signature(cls, factory: Callable, skip: int = 3) -> OptionSchema:
        """Options of a factory ``f(in_channels, out_channels, stride, *, opt: T = d)``."""
        params = list(inspect.signature(factory).parameters.values())[skip:]
        try:
            hints = typing.get_type_hints(factory)
        except Exception:  # noqa: BLE001 - unresolvable hints: fall back to no checking
            hints = {}
        fields = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{factory.__qualname__}: block factories need explicit "
                                f"keyword options, not *args/**kwargs ({p.name})")
            default = _MISSING if p.default is p.empty else p.default
            fields[p.name] = (hints.get(p.name, Any), default)
        return cls(fields)

    def required(self) -> list[str]:
        return [name for name, (_, default) in self.fields.items() if default is _MISSING]


def type_name(annotation: Any) -> str:
    """A short human name for an annotation (``int``, ``bool``, ``'relu' | dict``)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return "any value"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if annotation is float:
        return "finite float"
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return "dict"
    args = typing.get_args(annotation)
    if origin in (tuple, list) and args:
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return f"list of {type_name(args[0])}"
        return f"[{', '.join(type_name(a) for a in args)}]"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(annotation, "__name__", str(annotation))


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (plain data from JSON/YAML/Python) fits ``annotation``."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if not args:
            return True
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            matches(v, a) for v, a in zip(value, args, strict=True))
    if origin in (dict, Mapping) or annotation in (dict, Mapping) or (
        origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)
    ):
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_options(
    schema: OptionSchema, values: Mapping[str, Any], *, prefix: str = ""
) -> dict[str, Any]:
    """Returns ``values`` checked against ``schema`` with defaults filled in.

    Raises:
        ArchDefError: naming the key for an unknown option, a wrong type or a missing one.
    """
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key not in schema.fields:
            known = ", ".join(sorted(schema.fields)) or "none"
            raise ArchDefError(f"unknown option {prefix + key!r} (accepted: {known})",
                               key=prefix + key)
        annotation, _ = schema.fields[key]
        if not matches(value, annotation):
            raise ArchDefError(f"option {prefix + key!r} must be {type_name(annotation)}, "
                               f"got {thaw(value)!r}", key=prefix + key)
        result[key] = value
    for key, (_, default) in schema.fields.items():
        if key not in result:
            if default is _MISSING:
                raise ArchDefError(f"missing required option {prefix + key!r}",
                                   key=prefix + key)
            result[key] = default
    return result


NamedArgs = str | Mapping[str, Any] | None
"""The reference's ``*_args`` form: a name, a dict with ``name`` and options, or None."""


def named_args(value: NamedArgs, key: str) -> FrozenKwargs | None:
    """Unifies a ``*_args`` value to ``{"name": ..., **options}`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return FrozenKwargs({"name": value})
    if not isinstance(value, Mapping):
        raise ArchDefError(f"option {key!r} must be a name or a dict with 'name', got "
                           f"{value!r}", key=key)
    if "name" not in value or not isinstance(value["name"], str):
        raise ArchDefError(f"option {key!r} needs a string 'name', got {thaw(value)!r}",
                           key=key)
    return FrozenKwargs(value)
