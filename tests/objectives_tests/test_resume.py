"""Which endings of a trial delete its progress files (objectives/training/resume.py)."""

from __future__ import annotations

import optuna
import pytest

from objectives.training.resume import Resume, progress_path


@pytest.mark.parametrize(
    "error", [optuna.exceptions.StorageInternalError, optuna.exceptions.UpdateFinishedTrialError]
)
def test_resume_keeps_the_progress_when_the_storage_is_lost(tmp_path, error) -> None:
    own, predecessor = progress_path(tmp_path, 7), progress_path(tmp_path, 3)
    for path in (own, predecessor):
        path.write_bytes(b"state")
    with pytest.raises(error), Resume(own, stale=[predecessor]):
        raise error("connection lost")
    assert own.exists() and predecessor.exists(), "the retry on another worker resumes from them"


def test_resume_deletes_the_progress_when_the_trial_ends_here(tmp_path) -> None:
    own, predecessor = progress_path(tmp_path, 7), progress_path(tmp_path, 3)
    for path in (own, predecessor):
        path.write_bytes(b"state")
    with pytest.raises(ValueError), Resume(own, stale=[predecessor]):
        raise ValueError("a failing trial")
    assert not own.exists() and not predecessor.exists()
