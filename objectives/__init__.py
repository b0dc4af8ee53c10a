"""Objectives: load a task's data once per worker, train and evaluate one trial's configuration.

A task's package (``numpy_mlp``, ``mynet``, ``finetune``) is imported by :func:`get_task` when the task is
first asked for (it registers its :class:`Task` then), so importing this package pulls in neither torch nor
timm.
"""

from objectives import task
from objectives.sources import DataError
from objectives.task import *  # noqa: F403 (the public names of task.py are the package's)

__all__ = ["DataError", *task.__all__]
