"""One error family: every fbnas exception derives from FbnasError, and the CLI prints any
of them as one ``error:`` line with exit status 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import fbnas
from fbnas.cli.main import main
from fbnas.errors import FbnasError, did_you_mean, reject_unknown_keys

STANDALONE = {"fbnas.cost.runner"}
"""Runs on devices without fbnas: imports nothing of it, so it keeps its own error type."""


def fbnas_exception_classes() -> list[type]:
    found = {}
    for info in pkgutil.walk_packages(fbnas.__path__, "fbnas."):
        if info.name in STANDALONE or info.name == "fbnas.__main__":
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("fbnas"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


def test_every_fbnas_exception_derives_from_fbnas_error() -> None:
    classes = fbnas_exception_classes()
    assert len(classes) >= 10  # the walk found the family
    assert [c.__qualname__ for c in classes if not issubclass(c, FbnasError)] == []


def message_only(cls: type) -> bool:
    try:
        return str(cls("m")) == "m"
    except (TypeError, ValueError):  # takes other arguments (MissingEntriesError: the keys,
        # the place; TimedOut: a number of seconds)
        return False


@pytest.mark.parametrize("error", [c for c in fbnas_exception_classes() if message_only(c)],
                         ids=lambda c: c.__qualname__)
def test_the_cli_prints_any_fbnas_error_as_one_line_with_exit_status_2(error, capsys) -> None:
    # RunFolderError, a ValueError missing from the CLI's list, used to end in a traceback
    from fbnas.cli.main import cli

    @cli.command("raise-for-test")
    def raise_for_test() -> None:
        raise error("the bad part, named")

    try:
        code = main(["raise-for-test"])
    finally:
        del cli.commands["raise-for-test"]
    err = capsys.readouterr().err
    assert code == 2 and err == "error: the bad part, named\n"


def test_did_you_mean_formats_one_two_or_three_names() -> None:
    assert did_you_mean("ir_k4", ["ir_k3", "ir_k5", "conv"], n=1) in (
        "; did you mean 'ir_k3'?", "; did you mean 'ir_k5'?")
    assert did_you_mean("ir_k4", ["ir_k3", "ir_k5", "conv"], n=2) == \
        "; did you mean 'ir_k5' or 'ir_k3'?"  # closest first (ties: the later one)
    assert did_you_mean("ir", ["irf", "ir_k3", "ir_k5"], n=3, cutoff=0.3).count(",") == 1
    assert did_you_mean("zzz", ["ir_k3"]) == ""


def test_unknown_keys_are_refused_with_the_closest_name() -> None:
    from dataclasses import dataclass

    @dataclass
    class Settings:
        epochs: int = 1
        warmup_epochs: int = 0

    reject_unknown_keys({"epochs": 3}, Settings, "s.yaml")
    with pytest.raises(FbnasError, match=r"s.yaml: unknown key 'epoch'; did you mean 'epochs'"):
        reject_unknown_keys({"epoch": 3}, Settings, "s.yaml")
