"""Objectives: load a task's data once per worker, train and evaluate one trial's configuration.

A task's package (``numpy_mlp``, ``mynet``, ``finetune``) is imported by :func:`get_task` when the task is
first asked for (it registers its :class:`Task` then), so importing this package pulls in neither torch nor
timm.
"""

from objectives.task import OutOfTime
from objectives.task import Task
from objectives.task import TaskError
from objectives.task import TrialContext
from objectives.task import WouldOverrun
from objectives.task import get_task
from objectives.task import register
from objectives.task import task_names
from objectives.sources import DataError

__all__ = [
    "DataError",
    "OutOfTime",
    "Task",
    "TaskError",
    "TrialContext",
    "WouldOverrun",
    "get_task",
    "register",
    "task_names",
]

