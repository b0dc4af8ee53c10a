"""Live progress: one line per worker (trial, epoch, metric, elapsed) on a terminal, silence otherwise.

Workers send small tuples through a queue (or call the board directly when running in-process); only
the parent process draws, with one tqdm bar per worker.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

__all__ = ["ProgressBoard", "WorkerProgress"]


class ProgressBoard:
    """Draws one line per worker on stderr when it is a terminal; does nothing otherwise."""

    def __init__(self, n_workers: int, metric: str, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.metric = metric
        self.best: float | None = None
        self.done = 0
        self._bars = [
            tqdm(
                total=0,
                position=i,
                leave=False,
                file=sys.stderr,
                bar_format="{desc}",
                disable=not self.enabled,
            )
            for i in range(n_workers)
        ]
        self._started = [time.monotonic()] * n_workers

    def update(self, event: tuple[Any, ...]) -> None:
        """Apply one event: ``("start"|"epoch", worker, trial, epoch, value)`` or ``("done", worker, trial,
        state, value, best)``."""
        kind, worker, trial = event[:3]
        if not self.enabled or not 0 <= worker < len(self._bars):
            return
        if kind == "start":
            self._started[worker] = time.monotonic()
            text = f"trial {trial} starting"
        elif kind == "epoch":
            epoch, value = event[3:5]
            text = f"trial {trial} epoch {epoch} {self.metric} {value:.4f}"
        else:
            state, value, best = event[3:6]
            self.done += 1
            self.best = best
            text = f"trial {trial} {state.lower()}" + ("" if value is None else f" {self.metric} {value:.4f}")
        elapsed = time.monotonic() - self._started[worker]
        best = "" if self.best is None else f" | best {self.best:.4f}, {self.done} done"
        self._bars[worker].set_description_str(f"worker {worker}: {text} ({elapsed:.0f}s){best}")

    def close(self) -> None:
        """Remove the lines."""
        for bar in self._bars:
            bar.close()


class WorkerProgress:
    """A worker's side: turns reports and finished trials into board events sent through ``send``."""

    def __init__(self, worker: int, send: Any) -> None:
        self.worker = worker
        self.send = send

    def started(self, trial_number: int) -> None:
        """A trial began."""
        self.send(("start", self.worker, trial_number))

    def epoch(self, trial_number: int, epoch: int, value: float) -> None:
        """An epoch was reported (``TrialContext.progress``)."""
        self.send(("epoch", self.worker, trial_number, epoch, float(value)))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A study callback: a trial finished."""
        try:
            best = study.best_value
        except ValueError:
            best = None
        value = trial.value if trial.state == TrialState.COMPLETE else None
        self.send(("done", self.worker, trial.number, trial.state.name, value, best))
