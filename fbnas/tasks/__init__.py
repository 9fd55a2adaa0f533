"""Tasks: what a network is trained and searched *for* (head, losses, metrics, data).

The trainer, the search engine, export and the latency tables ask a :class:`Task`; none of
them knows whether it is classification or landmarks.
"""

from fbnas.tasks.base import Task
from fbnas.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask", "Task"]
