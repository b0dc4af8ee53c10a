"""The task registry: one :class:`Task` per searchable task (``numpy-mlp``, ``mynet``, ``finetune``).

A task is one package under ``objectives/`` whose ``__init__`` builds its :class:`Task`, hooks included
(:mod:`objectives.hooks`), and registers it, as timm's ``@register_model`` fills its registry; the engine
looks a task up by name and asks it, never the other way round."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from objectives.hooks import Confirmation, Ensembling, Exporter, Refit
from spaces import Space

if TYPE_CHECKING:
    from objectives.training.resume import Resume  # imports torch: only torch tasks resume

__all__ = [
    "BudgetShares",
    "DeadlineReached",
    "OutOfTime",
    "Task",
    "TaskError",
    "TrialContext",
    "WouldOverrun",
    "get_task",
    "register",
    "task_names",
]


class TaskError(ValueError):
    """An unknown task name."""


class OutOfTime(optuna.TrialPruned):
    """A trial pruned before training because not even its first rung can end by the run's deadline: the
    worker that drew it starts no more trials (drawing on would prune one configuration after another)."""


class WouldOverrun(optuna.TrialPruned):
    """A trial pruned before training because, though its first rung could end by the run's deadline, not
    all its rungs can: only a finished trial can win. Its worker draws again (a cheaper configuration may
    fit), and stops after a few such trials in a row (``search.engine.workers.LATE_STARTS``)."""


class DeadlineReached(OutOfTime):
    """A trial stopped by the run's deadline before it had a valid value (no complete epoch, rung or
    schedule): it is pruned with the reason, and its worker starts no more trials. A trial that has a valid
    value when the deadline comes completes with it instead (see :meth:`TrialContext.out_of_time`)."""


@dataclass(frozen=True)
class BudgetShares:
    """How ``run --timeout T`` splits T between the pipeline's stages (``search/pipeline``).

    Each stage gets its share of the time still left when it starts, over the shares of the stages still
    to run, so a stage that ends early (or a slower machine) moves time on to the next. Shares follow what
    a stage costs in the task: a finetune probe's confirmation replicate takes seconds, a mynet one a whole
    schedule.

    Args:
        search: The search's share.
        confirm: Confirmation of the top trials (and the reference) on fresh folds or seeds.
        refit: Retraining the confirmed winner on all its images.
        top: The most trials confirmed (fewer when their replicates would not fit the confirm share).
        overhead_s: Seconds a confirmation or refit spends before it trains (starting processes, importing
            torch, loading the data), added to its estimate.
    """

    search: float = 0.7
    confirm: float = 0.2
    refit: float = 0.1
    top: int = 3
    overhead_s: float = 5.0


@dataclass(frozen=True)
class Task:
    """Everything the study engine needs to search one task.

    Args:
        name: The CLI name, e.g. ``"numpy-mlp"``.
        space: The default search space.
        metric: Name of the objective value, e.g. ``"val_error"``.
        direction: ``"minimize"`` or ``"maximize"``.
        load_data: ``(data_path, settings) -> data``; called once per worker. ``data`` must have
            ``source`` and ``fingerprint`` attributes.
        objective: ``(trial, data, space, context) -> value``; reports every epoch, raises
            ``optuna.TrialPruned`` when told, writes the best epoch's checkpoint into
            ``context.checkpoint_dir`` and names it in the trial's ``checkpoint`` user attribute.
        evaluate: ``(trial, checkpoint_path, data_path, settings) -> dict`` of test-split figures.
        max_epochs: ``space -> int``, the largest epoch count a trial can report (pruners' budget;
            default: the largest ``epochs`` the space can draw).
        max_threads: Most BLAS/torch threads a worker should use (``None``: as many as it is given);
            small matrices run slower with more threads.
        baseline: Parameters of a known-good configuration, enqueued as a new study's first trial so the
            search starts from it (keys the space does not draw, or cannot reach, are left out); the pruner
            never stops it.
        default_pruner: The pruner a study gets when none is named (``"asha"``; numpy-mlp: ``"none"``).
        confirmation: How it re-trains a configuration on fresh folds or seeds (``None``: no ``confirm``).
        refit: How it retrains its winner on all its images (``None``: no ``refit``).
        exporter: How it writes its winner as the lab's files (``None``: no ``export``).
        ensembling: How it averages confirmed configurations (``None``: no ``--ensemble``).
        budget: How ``run --timeout`` splits its budget between search, confirmation and refit.
        data_subfolder: The folder holding its data inside a data folder holding every task's
            (``submit --data DIR``; ``None``: ``DIR`` itself).
    """

    name: str
    space: Space
    metric: str
    direction: str
    load_data: Callable[[str | None, dict[str, Any]], Any]
    objective: Callable[[optuna.Trial, Any, Space, TrialContext], float]
    evaluate: Callable[[optuna.trial.FrozenTrial, Path, str | None, dict[str, Any]], dict[str, Any]]
    max_epochs: Callable[[Space], int] = lambda space: int(space.largest("epochs"))
    max_threads: int | None = None
    baseline: Mapping[str, Any] | None = None
    default_pruner: str = "asha"
    confirmation: Confirmation | None = None
    refit: Refit | None = None
    exporter: Exporter | None = None
    ensembling: Ensembling | None = None
    budget: BudgetShares = BudgetShares()
    data_subfolder: str | None = None


_TASKS: dict[str, Task] = {}
# The built-in tasks register themselves when their package is first imported, so a process imports only
# the task it runs (numpy-mlp needs no torch; mynet no timm) and the CLI starts without any of them.
_BUILTIN = {
    "numpy-mlp": "objectives.numpy_mlp",
    "mynet": "objectives.mynet",
    "finetune": "objectives.finetune",
}


@dataclass(frozen=True)
class TrialContext:
    """What the engine hands every trial besides the trial itself.

    Args:
        checkpoint_dir: The study's checkpoint folder; a trial writes ``trial-NNNNN.*`` there (atomically)
            and names the file in its ``checkpoint`` user attribute.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (torch tasks; numpy-mlp ignores it).
        metric: The name of the reported value (for messages).
        progress: Called as ``progress(trial_number, epoch, value)`` after every report (live display).
        keeps: Called as ``keeps(trial, value)``: whether a trial completing with ``value`` can be among the
            checkpoints the study keeps (``None``: every trial's checkpoint is kept).
        deadline: ``time.time()`` after which the run starts no new trial (``--timeout``; ``None``: none).
        timeout: The run's ``--timeout`` in seconds (``None``: none).
    """

    checkpoint_dir: Path
    device: str = "auto"
    metric: str = "value"
    progress: Callable[[int, int, float], None] | None = None
    keeps: Callable[[optuna.Trial, float], bool] | None = None
    deadline: float | None = None
    timeout: float | None = None

    def seconds_left(self) -> float | None:
        """Seconds until the run's deadline (``None`` without ``--timeout``)."""
        return None if self.deadline is None else self.deadline - time.time()

    def out_of_time(self) -> bool:
        """Whether the run's deadline has passed. Trials check it every epoch and every few seconds of long
        work (batches, feature extraction), whatever their plan estimated: a trial that finds it passed
        ends with what it has -- completed with its best epoch so far when that is a valid value, else
        pruned with :class:`DeadlineReached` -- and records ``deadline_stop`` (where it stopped)."""
        return self.deadline is not None and time.time() >= self.deadline

    def stopped_by_deadline(self, trial: optuna.Trial, where: str) -> None:
        """Record on ``trial`` that the deadline ended it ``where`` (e.g. ``"in epoch 4 of 9"``); the run
        prints it when the budget ends."""
        trial.set_user_attr("deadline_stop", where)

    def keeps_checkpoint(self, trial: optuna.Trial, value: float) -> bool:
        """Whether ``trial``, completing with ``value``, should write its final checkpoint: ``False`` when
        the study keeps only its best few and ``value`` ranks behind them (the file would be deleted as
        soon as the trial completes)."""
        return self.keeps is None or self.keeps(trial, value)

    def report(self, trial: optuna.Trial, value: float, epoch: int) -> None:
        """Report an epoch's validation metric, and stop the trial when the pruner says so.

        The study's baseline trial (``Task.baseline``) is never stopped: it is the reference every other
        trial is pruned against, and its one-cycle warm-up makes its first epochs look poor.

        Raises:
            optuna.TrialPruned: with the epoch and value in its message.
        """
        trial.report(value, epoch)
        if self.progress is not None:
            self.progress(trial.number, epoch, value)
        # should_prune() also records the value in ASHA's rungs, so the baseline still competes there
        if trial.should_prune() and not trial.user_attrs.get("baseline"):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.metric} {value:.4f}")

    def resume(self, trial: optuna.Trial) -> Resume:
        """Where ``trial`` saves its progress each epoch, and the state it starts from when it retries a
        trial whose worker died (see :mod:`objectives.training.resume`)."""
        from objectives.training.resume import Resume

        return Resume.for_trial(trial, self.checkpoint_dir)

    @staticmethod
    def pruned(
        trial: optuna.Trial,
        curves: dict[str, list[float]],
        reason: str,
        *,
        error: type[optuna.TrialPruned] = optuna.TrialPruned,
    ) -> optuna.TrialPruned:
        """Record a stopping trial's curves, epochs run and reason; the caller raises what it returns
        (an ``error``: :class:`OutOfTime` or :class:`WouldOverrun` stop a timed trial before training)."""
        trial.set_user_attr("curves", curves)
        trial.set_user_attr("pruned_epoch", max((len(values) for values in curves.values()), default=0))
        trial.set_user_attr("prune_reason", reason)
        return error(reason)


def register(task: Task) -> Task:
    """Add ``task`` to the registry; a second task of the same name is an error."""
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        TaskError: naming the valid tasks.
    """
    if name not in _TASKS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}") from None


def task_names() -> list[str]:
    """Names of all registered tasks (the built-in ones whether imported yet or not)."""
    return sorted(set(_TASKS) | set(_BUILTIN))
