"""Trial checkpoints: where a study keeps them, checking that one loads, and keeping only the best few."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["CheckpointError", "KeepTopCheckpoints", "check_checkpoint", "checkpoint_path", "load_error"]


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not load; the message names the study, trial and file."""


def checkpoint_path(study_dir: Path, trial: FrozenTrial) -> Path | None:
    """The checkpoint a trial recorded, or ``None`` when it has none."""
    name = trial.user_attrs.get("checkpoint")
    return study_dir / name if name else None


def check_checkpoint(path: Path | None, *, what: str) -> Path:
    """Return ``path`` when it exists and loads (``.npz`` with NumPy, else ``torch.load(weights_only=True)``).

    Args:
        path: The checkpoint file (``None``: the trial recorded none).
        what: Who owns it, for the message, e.g. ``"trial 3 of 'mynet'"``.

    Raises:
        CheckpointError: naming ``what``, the file and why it is unusable.
    """
    if path is None:
        raise CheckpointError(f"{what} recorded no checkpoint")
    if not path.is_file():
        raise CheckpointError(
            f"{what}: checkpoint {path} is missing; only the best --keep-top trials keep one"
        )
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                for name in archive.files:
                    archive[name]
        else:
            import torch  # only torch tasks' checkpoints need it

            with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
    except Exception as exc:  # a corrupt file raises whatever its first bad byte triggers
        raise CheckpointError(f"{what}: checkpoint {path} does not load ({load_error(exc)})") from None
    return path


def load_error(exc: BaseException) -> str:
    """Why a weights file does not load, in one line (torch's own text spans lines and advises
    ``weights_only=False``, the unsafe choice for exactly such files)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # not plain tensors: code, foreign objects or random bytes
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        return f"not a plain state dict of tensors ({detail}); rpztune never unpickles anything else"
    first = " ".join(text.split()).split(". ")[0][:200] or "unreadable"  # torch appends paragraphs of advice
    return f"{type(exc).__name__}: {first}"


class KeepTopCheckpoints:
    """A study callback deleting the checkpoints of completed trials outside the best ``k``.

    The current best trial's checkpoint is never deleted (not even on a tie Optuna breaks differently);
    trials of other workers are seen through the storage, so every worker applies the same rule. A trial
    outside the best ``k`` stays outside (completed values never change), so each is cleaned up once.
    """

    def __init__(self, study_dir: Path, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"keep-top must be at least 1, but got {k=}.")
        self.study_dir = study_dir
        self.k = k
        self._gone: set[int] = set()  # numbers of trials whose checkpoints were deleted
        self._kth: float | None = None  # the k-th best completed value at the last call
        self._maximize = False

    def could_keep(self, value: float) -> bool:
        """Whether a trial completing with ``value`` can rank among the best ``k`` completed trials (ties
        with the ``k``-th included), as far as this callback has seen them: ``False`` means its checkpoint
        would be deleted. Trials completed since its last call can only make it say ``True`` too often."""
        if self._kth is None:
            return True
        return value >= self._kth if self._maximize else value <= self._kth

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self.k:
            return  # nothing to delete
        self._maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        sign = -1 if self._maximize else 1
        ranked = sorted(completed, key=lambda t: (sign * t.value, t.number))
        self._kth = ranked[self.k - 1].value
        stale = [t for t in ranked[self.k :] if t.number not in self._gone]
        # only a trial tied with the best can be Optuna's best among them: ask the storage only then
        best = study.best_trial.number if any(t.value == ranked[0].value for t in stale) else None
        for old in stale:
            if old.number == best:
                continue
            path = checkpoint_path(self.study_dir, old)
            if path is not None:
                path.unlink(missing_ok=True)
            self._gone.add(old.number)
