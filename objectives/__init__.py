"""Objectives: load a task's data once per worker, train and evaluate one trial's configuration.

The task modules (``numpy_mlp``, ``mynet``, ``finetune``) are imported on first use (``get_task``, or
``objectives.mynet.objective``), so importing this package pulls in neither torch nor timm.
"""

import importlib
import importlib.util
from typing import Any

from objectives.task import OutOfTime
from objectives.task import Task
from objectives.task import TaskError
from objectives.task import TrialContext
from objectives.task import WouldOverrun
from objectives.task import get_task
from objectives.task import register
from objectives.task import task_names
from objectives.mnist import DataError

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


def __getattr__(name: str) -> Any:
    # PEP 562: ``objectives.mynet.objective`` keeps working after a bare ``import objectives``.
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
