"""Tasks: what a network is trained and searched *for* (head, losses, metrics, data).

The trainer, the search engine, export and the latency tables ask a :class:`Task`; none of
them knows whether it is classification or landmarks.
"""

from fbnas.tasks.base import Objective, RecipeTerms, Task
from fbnas.tasks.classification import ClassificationTask, distill_loss
from fbnas.tasks.registry import recorded_task, register_task, task_from_dict, unregister_task

__all__ = [
    "ClassificationTask",
    "Objective",
    "RecipeTerms",
    "Task",
    "distill_loss",
    "recorded_task",
    "register_task",
    "task_from_dict",
    "unregister_task",
]
