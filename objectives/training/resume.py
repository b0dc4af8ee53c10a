"""Resuming a retried trial where its failed predecessor stopped.

After every epoch a torch trial saves its whole training state (weights, optimiser, schedule, random
state, curves, best epoch so far) to ``trial-NNNNN.progress.pt`` beside its checkpoint. When a worker dies
mid-trial, the engine fails the trial and Optuna's retry callback re-queues its parameters as a new trial
whose ``retry_history`` system attribute names it; that retry loads the predecessor's file and continues
from the epoch after the last one saved. Used as a context manager, :class:`Resume` deletes the progress
files of the trial and its predecessors when the trial ends in any way but the death of its process or the
loss of its storage.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import torch

from objectives.optuna_internals import trial_id
from objectives.training.fit import save_state
from objectives.training.memory import track_peak_rss

__all__ = ["Resume", "predecessors", "progress_path", "resumable"]

# A trial ending with one of these has not ended for the storage: it stays RUNNING until the heartbeats of
# its worker are missed, then is failed and retried elsewhere (search/engine/heartbeat.py), like a dead
# worker's.
_STORAGE_LOST = (
    optuna.exceptions.StorageInternalError,
    optuna.exceptions.UpdateFinishedTrialError,
    sqlalchemy.exc.DBAPIError,
)


def resumable(train: Callable[..., float]) -> Callable[..., float]:
    """A torch task's objective ``(trial, data, space, context)`` from ``train(trial, data, space, context,
    resume)``: a retry of a trial whose worker died continues from its predecessor's last saved epoch
    (``resume``), and the trial records its peak memory."""

    @functools.wraps(train)
    def objective(trial: optuna.Trial, data: Any, space: Any, context: Any) -> float:
        with context.resume(trial) as resume, track_peak_rss(trial):
            return train(trial, data, space, context, resume)

    return objective


def progress_path(checkpoint_dir: Path, number: int) -> Path:
    """Where trial ``number`` keeps its resumable training state."""
    return checkpoint_dir / f"trial-{number:05d}.progress.pt"


def predecessors(system_attrs: dict[str, Any]) -> list[int]:
    """The failed trials a retry descends from, oldest first (empty for a fresh trial)."""
    return [int(n) for n in system_attrs.get("retry_history", [])]


@dataclass
class Resume:
    """One trial's resumable state: what it starts from, and where it saves its own.

    Attributes:
        path: This trial's progress file.
        state: The last state its failed predecessor saved (``None`` for a fresh start).
        source: ``{"trial": N, "epoch": E}`` of that state, or ``None``.
        stale: The predecessors' progress files, deleted with this trial's own when it ends.
        seed: The trial's random seed, once :meth:`draw_seed` has set it; saved with every state.
    """

    path: Path
    state: dict[str, Any] | None = None
    source: dict[str, int] | None = None
    stale: list[Path] = field(default_factory=list)
    seed: int | None = None

    def __enter__(self) -> Resume:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is not None and issubclass(exc_type, _STORAGE_LOST):
            return  # the storage is out of reach, or another worker failed the trial: its retry needs them
        for path in [*self.stale, self.path]:
            path.unlink(missing_ok=True)

    @classmethod
    def for_trial(cls, trial: optuna.Trial, checkpoint_dir: Path) -> Resume:
        """The resume record of ``trial``; a retry's predecessor file that fails to load is reported.

        The source is also stored as the trial's ``resumed_from`` user attribute, and a load failure as
        ``resume_error``; either way the trial runs.
        """
        history = predecessors(trial.storage.get_trial_system_attrs(trial_id(trial)))
        resume = cls(progress_path(checkpoint_dir, trial.number))
        resume.stale = [progress_path(checkpoint_dir, number) for number in history]
        if not history:
            return resume
        previous = progress_path(checkpoint_dir, history[-1])
        if not previous.exists():
            return resume
        try:
            state = torch.load(previous, map_location="cpu", weights_only=True)
            epoch = int(state["epoch"])
        except Exception as exc:  # a truncated or foreign file: start over, and say why
            reason = f"cannot resume from {previous.name}: {type(exc).__name__}: {exc}"
            warnings.warn(reason, stacklevel=2)
            trial.set_user_attr("resume_error", reason)
            return resume
        resume.state, resume.source = state, {"trial": history[-1], "epoch": epoch}
        trial.set_user_attr("resumed_from", resume.source)
        return resume

    def draw_seed(self, trial: optuna.Trial) -> int:
        """The trial's random seed, also stored as its ``seed`` user attribute: the study's seed and the trial
        number make it, or a retry takes its predecessor's (it continues that run)."""
        if self.state is not None:
            self.seed = int(self.state["seed"])
        else:
            self.seed = int(trial.study.user_attrs.get("seed", 0)) * 100_003 + trial.number
        trial.set_user_attr("seed", self.seed)
        return self.seed

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` and the seed atomically: tensors, numbers, strings, lists and dicts of them, with
        ``epoch``."""
        save_state({**state, "seed": self.seed}, self.path)
