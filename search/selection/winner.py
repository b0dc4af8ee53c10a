"""Find a study's winning (or a chosen) trial and its checkpoint; score it on a test split.

When the study has been confirmed (``rpztune confirm``: its study attribute ``confirm``), the winner is the
*confirmed* winner, chosen by :func:`choose_confirmed` from re-trainings on fresh folds or seeds
(:data:`RULE`); otherwise it is the trial with the best validation value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import objectives
from search.engine.checkpoints import check_checkpoint, checkpoint_path
from search.engine.study import StudyError, load_study, study_dir

__all__ = [
    "RULE",
    "Estimate",
    "Winner",
    "choose_confirmed",
    "complexity",
    "evaluate",
    "find_trial",
    "find_winner",
]

RULE = (
    "best mean over the confirmation replicates; every trial whose mean lies within one standard error of "
    "the difference (sqrt(se_best^2 + se_other^2), se = sd / sqrt(n)) of the best mean is tied with it, and "
    "among tied trials the simplest wins (fewest parameters, then fewest epochs), then the better mean, then "
    "the lower trial number"
)
_MNIST_INPUTS = 784


@dataclass(frozen=True)
class Estimate:
    """One configuration's confirmed figure: its replicates' values, their mean and spread.

    Args:
        trial: The search trial whose configuration was re-trained.
        values: One value per replicate (the task's metric, in the search's direction).
        epochs: The replicates' median best epoch (a refit trains this many epochs).
        complexity: Parameter count (the tie-breaker).
        search_value: The trial's own validation value in the search.
    """

    trial: int
    values: tuple[float, ...]
    epochs: int
    complexity: int
    search_value: float

    @property
    def n(self) -> int:
        """Number of replicates."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over the replicates."""
        return sum(self.values) / self.n

    @property
    def sd(self) -> float:
        """Sample standard deviation over the replicates (0 for one replicate)."""
        if self.n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def se(self) -> float:
        """Standard error of the mean."""
        return self.sd / math.sqrt(self.n)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (stored in the study's ``confirm`` attribute)."""
        return {**asdict(self), "values": list(self.values), "mean": self.mean, "sd": self.sd, "se": self.se}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Rebuild an estimate stored by :meth:`to_dict`."""
        return cls(
            int(data["trial"]), tuple(data["values"]), int(data["epochs"]), int(data["complexity"]),
            float(data["search_value"]),
        )  # fmt: skip


def choose_confirmed(estimates: list[Estimate], direction: str) -> tuple[Estimate, list[Estimate], str]:
    """Pick the confirmed winner by :data:`RULE`.

    Returns:
        The winner, every estimate ranked by mean (best first), and one sentence saying why it won.

    Raises:
        ValueError: without estimates.
    """
    if not estimates:
        raise ValueError("no confirmed estimate to choose from")
    sign = 1.0 if direction == "minimize" else -1.0
    ranked = sorted(estimates, key=lambda e: (sign * e.mean, e.trial))
    leader = ranked[0]
    tied = [e for e in ranked if abs(e.mean - leader.mean) <= _band(leader, e)]
    winner = min(tied, key=lambda e: (e.complexity, e.epochs, sign * e.mean, e.trial))
    others = [e for e in ranked if e is not winner]
    if winner is leader:
        why = f"best mean of {len(ranked)} confirmed trials"
        ties = [e for e in tied if e is not winner]
        if ties:
            names = ", ".join(str(e.trial) for e in ties)
            why += f"; tied within one standard error with trial(s) {names}, which are not simpler"
        elif others:
            gap = abs(others[0].mean - winner.mean)
            runner = others[0].trial
            why += f"; ahead of the runner-up (trial {runner}) by {gap:.4g}, beyond one standard error"
    else:
        gap = abs(winner.mean - leader.mean)
        why = (
            f"within one standard error of the best mean (trial {leader.trial}, {gap:.4g} apart, band "
            f"{_band(leader, winner):.4g}) and simpler: {winner.complexity} parameters and {winner.epochs} "
            f"epochs against {leader.complexity} and {leader.epochs}"
        )
    return winner, ranked, why


def _band(a: Estimate, b: Estimate) -> float:
    return math.sqrt(a.se**2 + b.se**2)


def complexity(trial: FrozenTrial) -> int:
    """A trial's parameter count: its ``n_params`` attribute, or a numpy-mlp's layer sizes."""
    if trial.user_attrs.get("n_params") is not None:
        return int(trial.user_attrs["n_params"])
    widths = (trial.user_attrs.get("config") or {}).get("widths")
    if widths is None:
        return 0
    sizes = [_MNIST_INPUTS, *widths, 1]
    return sum((i + 1) * o for i, o in zip(sizes, sizes[1:], strict=False))


class Winner:
    """A completed trial of a study together with its task and checkpoint file (``weights``: ``"trial"``, or
    ``"refit"`` when the trial's own checkpoint was not kept and its refit stands in)."""

    def __init__(
        self, study: optuna.Study, trial: FrozenTrial, checkpoint: Path, weights: str = "trial"
    ) -> None:
        self.study = study
        self.trial = trial
        self.checkpoint = checkpoint
        self.weights = weights
        self.task = objectives.get_task(str(study.user_attrs.get("task")))

    @property
    def confirmed(self) -> dict[str, Any] | None:
        """The study's confirmation record when this trial is its confirmed winner, else ``None``."""
        record = self.study.user_attrs.get("confirm")
        if not record or record.get("winner") != self.trial.number:
            return None
        return record

    def describe(self) -> str:
        """One line: which trial this is and why it won (its confirmed figure ± spread when confirmed)."""
        metric = self.study.user_attrs.get("metric", "value")
        head = f"trial {self.trial.number} of {self.study.study_name!r}"
        record = self.confirmed
        if record is None:
            stored = self.study.user_attrs.get("confirm")
            if stored:
                how = f"chosen by --trial; the confirmed winner is trial {stored['winner']}"
            elif self.trial.number != self.study.best_trial.number:
                best = self.study.best_trial.number
                how = f"chosen by --trial; the best validation value is trial {best}'s"
            else:
                how = "the best validation value; rpztune run (or confirm) re-trains the top trials"
            return f"{head}: single-split {metric} {self.trial.value:.4f}, unconfirmed ({how})"
        mine = next(e for e in record["estimates"] if e["trial"] == self.trial.number)
        versus = f"; {record['reference']['line']}" if record.get("reference") else ""
        return (
            f"{head}: confirmed {metric} {mine['mean']:.4f} ± {mine['sd']:.4f} (mean ± sd over "
            f"{len(mine['values'])} {record['scheme']}s; search value {self.trial.value:.4f}); won by the "
            f"noise-aware rule: {record['reason']}{versus}"
        )

    @property
    def data(self) -> str | None:
        """The data path the study was run on (``None``: the offline default)."""
        return self.study.user_attrs.get("data")

    @property
    def settings(self) -> dict[str, Any]:
        """The study's fixed settings (e.g. the pair of classes)."""
        return dict(self.study.user_attrs.get("settings", {}))


def find_trial(
    storage: str, study_name: str, trial_number: int | None = None
) -> tuple[optuna.Study, FrozenTrial]:
    """A study and its winner (the confirmed winner when confirmed, else the best trial) or trial
    ``trial_number``, which must be complete; its checkpoint is not checked.

    Raises:
        StudyError: when the study or trial does not exist or is not complete.
    """
    study = load_study(storage, study_name)
    if "task" not in study.user_attrs:
        raise StudyError(f"study {study_name!r} was not made by rpztune (it has no task)")
    confirmed = (study.user_attrs.get("confirm") or {}).get("winner")
    if trial_number is None and confirmed is None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise StudyError(f"study {study_name!r} has no completed trial yet")
        return study, study.best_trial
    trial_number = confirmed if trial_number is None else trial_number
    trials = study.get_trials(deepcopy=False)
    if not 0 <= trial_number < len(trials):
        raise StudyError(f"study {study_name!r} has no trial {trial_number} (it has {len(trials)})")
    trial = trials[trial_number]
    if trial.state != TrialState.COMPLETE:
        raise StudyError(f"trial {trial_number} of {study_name!r} is {trial.state.name}, not COMPLETE")
    return study, trial


def find_winner(
    storage: str, study_name: str, trial_number: int | None = None, *, checkpoints: str | Path | None = None
) -> Winner:
    """The winner of a study (its confirmed winner when ``rpztune confirm`` ran, else its best completed
    trial) or trial ``trial_number``, with a checkpoint that loads (the trial's, or its refit's when the
    trial's own was not kept).

    Raises:
        StudyError: when the study or trial does not exist or is not complete.
        CheckpointError: when the trial's checkpoint is missing or does not load (naming trial and file).
    """
    study, trial = find_trial(storage, study_name, trial_number)
    folder = study_dir(storage, study_name, checkpoints)
    path = checkpoint_path(folder, trial)
    refit = study.user_attrs.get(f"refit:{trial.number}")
    if refit and (path is None or not path.is_file()):
        # a confirmed winner may be outside --keep-top: its refit stands in for the trial's own weights
        path = folder / refit["checkpoint"]
        what, weights = f"the refit of trial {trial.number} of {study_name!r}", "refit"
    else:
        what, weights = f"trial {trial.number} of {study_name!r}", "trial"
    check_checkpoint(path, what=what)
    return Winner(study, trial, path, weights)


def evaluate(winner: Winner, data: str | None, refit: Path | None = None) -> dict[str, Any]:
    """Score the winner on the test split of ``data`` (the study's own data when ``None``) with the weights
    file ``refit`` (its refit's), by default its checkpoint; ``"weights"`` says which (trial or refit)."""
    path = winner.checkpoint if refit is None else refit
    result = winner.task.evaluate(winner.trial, path, data or winner.data, winner.settings)
    weights = winner.weights if refit is None else "refit"
    return {**result, "study": winner.study.study_name, "trial": winner.trial.number, "weights": weights}
