"""``rpztune confirm`` met through the real command: Ctrl-C and SIGTERM end its replicates FAIL with one line
and exit 130/143 (as ``run`` does), and two confirmations of one study at once share the queue."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rpz_cli import finish, rpztune, start

from search.engine.storage import get_storage
from search.selection.confirm import confirm_study_name

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.slow

# Unpruned trials of fixed size: their replicates train long enough (seconds) for a signal to land in one.
SEARCH = ["--seed", "5", "--set", "epochs=40", "--set", "depth=1", "--set", "width=32", "--pruner", "none"]
CONFIRM = ["confirm", "--study", "numpy-mlp", "--top", "2", "--folds", "5"]  # 10 replicates


@pytest.fixture(scope="module")
def searched(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real numpy-mlp study of 2 complete trials (no confirmation yet)."""
    work = tmp_path_factory.mktemp("searched")
    run = [*RUN, "numpy-mlp", "--trials", "2", "--data", str(data_dir), *SEARCH, "--quiet", "--threads", "1"]
    rpztune(*run, cwd=work)
    return work / "studies.db"


@pytest.fixture
def study_copy(searched: Path, tmp_path: Path) -> str:
    """This test's own copy of the searched study (SQLite's backup: the WAL's pages included)."""
    with sqlite3.connect(searched) as source, sqlite3.connect(tmp_path / "studies.db") as copy:
        source.backup(copy)
    return f"sqlite:///{tmp_path / 'studies.db'}"


def replicates(storage: str) -> list[optuna.trial.FrozenTrial]:
    name = confirm_study_name("numpy-mlp")
    try:
        return optuna.load_study(study_name=name, storage=get_storage(storage)).get_trials(deepcopy=False)
    except KeyError:  # the confirmation has not created its study yet
        return []


def running_with_worker(storage: str) -> list[optuna.trial.FrozenTrial]:
    return [t for t in replicates(storage) if t.state == TrialState.RUNNING and "worker" in t.user_attrs]


def wait_for_running(storage: str, n: int, *procs) -> None:
    """Until ``n`` replicates are RUNNING with their worker recorded (they train now)."""
    deadline = time.monotonic() + 300  # bounds a failure only: the state is what the test waits for
    while len(running_with_worker(storage)) < n:
        if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
            pytest.fail(f"{n} running replicates never seen; exits {[proc.poll() for proc in procs]}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("workers", "sig", "target"),
    [
        (1, signal.SIGINT, "group"),  # a terminal's Ctrl-C
        (1, signal.SIGTERM, "group"),
        (2, signal.SIGINT, "group"),
        (2, signal.SIGTERM, "group"),  # a service manager stopping the run
        (2, signal.SIGTERM, "parent"),  # `kill PID` of the command only
    ],
)
def test_confirm_interrupted_fails_its_replicates_with_one_line(
    workers, sig, target, study_copy, tmp_path
) -> None:
    proc = start(*CONFIRM, "--workers", str(workers), "--storage", study_copy, cwd=tmp_path)
    try:
        # one replicate training is enough for the signal to land in; waiting for two at once would depend
        # on both workers' starts overlapping, which a busy machine does not promise
        wait_for_running(study_copy, 1, proc)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    pids = {t.user_attrs["worker"]["pid"] for t in running_with_worker(study_copy)}
    if target == "group":
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    code, _, err = finish(proc)
    ctrl_c = sig == signal.SIGINT
    assert code == (130 if ctrl_c else 143), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rpztune confirm: " + ("interrupted" if ctrl_c else "terminated (SIGTERM)"))
    found = replicates(study_copy)
    assert not [t.number for t in found if t.state == TrialState.RUNNING], "no replicate is left RUNNING"
    failed = [t for t in found if t.state == TrialState.FAIL]
    assert failed, "the replicate the signal landed in ended FAIL"
    reason = f"interrupted ({'Ctrl-C' if ctrl_c else 'SIGTERM'})"
    assert [t.user_attrs.get("fail_reason") for t in failed] == [reason] * len(failed)
    assert len([t for t in found if t.state == TrialState.COMPLETE]) < 10, "the queue was not trained on"
    for pid in pids - {proc.pid}:  # the workers ended with the command, none trains on by itself
        status = Path(f"/proc/{pid}/status")
        with contextlib.suppress(FileNotFoundError):
            assert "zombie" in status.read_text(), f"confirmation worker {pid} outlived its command"


def test_two_confirms_at_once_share_the_queue_and_report_the_same_winner(study_copy, tmp_path) -> None:
    first = start(*CONFIRM, "--storage", study_copy, cwd=tmp_path)
    try:
        wait_for_running(study_copy, 1, first)
        second = start(*CONFIRM, "--storage", study_copy, cwd=tmp_path)
    except BaseException:
        os.killpg(first.pid, signal.SIGKILL)
        raise
    results = [finish(first), finish(second)]
    for code, out, err in results:
        assert code == 0, err
        assert "Traceback" not in err and "incomplete" not in err, err
        assert "confirmed ranking (folds: 5)" in out, out
    winners = [[line for line in out.splitlines() if line.startswith("winner: ")] for _, out, _ in results]
    assert winners[0] == winners[1]
    found = replicates(study_copy)
    assert not [t for t in found if t.state == TrialState.RUNNING]
    keys = [t.user_attrs["confirm_key"] for t in found if t.state == TrialState.COMPLETE]
    assert len(set(keys)) == 10, keys
    trained = [int(out.split("trained ", 1)[1].split()[0]) for _, out, _ in results]
    assert sum(trained) == len(keys), (trained, keys)  # each counts what it trained itself
