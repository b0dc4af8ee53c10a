"""Objectives: load a task's data once per worker, train and evaluate one trial's configuration."""

from . import numpy_mlp  # noqa: F401  (registers the task)
from . import mynet  # noqa: F401  (registers the task)
from . import finetune  # noqa: F401  (registers the task)
from ._registry import Task
from ._registry import TaskError
from ._registry import TrialContext
from ._registry import get_task
from ._registry import register
from ._registry import task_names
from .data import DataError

__all__ = ["DataError", "Task", "TaskError", "TrialContext", "get_task", "register", "task_names"]
