"""Objectives: load a task's data once per worker, train and evaluate one trial's configuration.

The task modules (``numpy_mlp``, ``mynet``, ``finetune``) are imported on first use (``get_task``, or
``objectives.mynet``), so importing this package pulls in neither torch nor timm.
"""

import importlib
import importlib.util
from typing import Any

from ._registry import OutOfTime
from ._registry import Task
from ._registry import TaskError
from ._registry import TrialContext
from ._registry import WouldOverrun
from ._registry import get_task
from ._registry import register
from ._registry import task_names
from .data import DataError

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
    # PEP 562: ``objectives.mynet`` keeps working after a bare ``import objectives``.
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
