"""Task names -> how to read a recorded task back (run folders, checkpoints).

A run records its task as plain data (``{"name": "classification", "num_classes": 10,
"topk": [1, 5], ...}``); :func:`task_from_dict` turns that back into the task, so ``fbnas
eval``, export and resuming rebuild the right head and metrics. A new task registers its
reader once with :func:`register_task`. Runs written before tasks were recorded are
classification runs: :func:`recorded_task` returns None for them and callers fall back to
the classifier of the run's class count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fbnas.errors import ConfigError, did_you_mean
from fbnas.tasks.base import Task
from fbnas.tasks.classification import ClassificationTask

TaskReader = Callable[[Mapping[str, Any], str], Task]
"""``(recorded dict, source for messages) -> task``."""

_READERS: dict[str, TaskReader] = {}


def register_task(name: str, reader: TaskReader) -> None:
    """Makes recorded tasks named ``name`` readable (a duplicate name is an error)."""
    if name in _READERS:
        raise ValueError(f"task {name!r} is already registered")
    _READERS[name] = reader


def unregister_task(name: str) -> None:
    """Removes a task reader (for tests and plugins that replace their own)."""
    del _READERS[name]


def task_from_dict(data: Mapping[str, Any], source: str = "task") -> Task:
    """The task recorded as ``data`` (:meth:`Task.to_dict`).

    Raises:
        ConfigError: no ``name``, an unknown name (with the closest ones) or bad settings,
            naming ``source``.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise ConfigError(f"{source} must be a dict with a task 'name', got {data!r}")
    reader = _READERS.get(data["name"])
    if reader is None:
        raise ConfigError(f"{source}: unknown task {data['name']!r}"
                          f"{did_you_mean(data['name'], _READERS)} (register it with "
                          f"fbnas.tasks.register_task)")
    return reader(data, source)


def recorded_task(state: Mapping[str, Any], source: str = "checkpoint") -> Task | None:
    """The task a checkpoint or ``run.json`` records (``state["task"]``, else
    ``state["run_info"]["task"]``); None when it records none (written before tasks were
    recorded: a classification run)."""
    data = state.get("task")
    if data is None:
        data = (state.get("run_info") or {}).get("task")
    if data is None:
        return None
    return task_from_dict(data, f"{source} task")


register_task("classification", lambda data, source: ClassificationTask.from_dict(data, source))


def _read_landmarks(data: Mapping[str, Any], source: str) -> Task:
    # Imported when a landmark run is read: the landmark head registers only then.
    from fbnas.tasks.landmarks.task import LandmarkTask

    return LandmarkTask.from_dict(data, source)


register_task("landmarks", _read_landmarks)
