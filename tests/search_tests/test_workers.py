"""Parallel workers for real: worker processes, PostgreSQL, SIGKILL, SIGINT and an 8-worker SQLite stress."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rpz_cli import finish, start

from search.engine.recovery import recover_orphans, trials_lost_with, worker_identity
from search.engine.storage import get_storage

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.slow  # real worker processes training (3-32 s each)

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--set", "epochs=3", "--set", "depth=0", "--quiet"]  # trials of a few tens of milliseconds
ONE_SPLIT = ["--set", "folds=1"]  # numpy-mlp trials as long as these tests are sized for (not 5 folds)
QUICK += ONE_SPLIT


def start_numpy_mlp(
    data_dir: Path, tmp_path: Path, *options: str, trials: int, workers: int = 1
) -> subprocess.Popen:
    """Start ``rpztune run numpy-mlp [--workers W] --trials T --data DATA_DIR OPTIONS`` in ``tmp_path``."""
    parallel = ["--workers", str(workers)] if workers > 1 else []
    argv = [*RUN, "numpy-mlp", *parallel, "--trials", str(trials), "--data", str(data_dir), *options]
    return start(*argv, cwd=tmp_path)


def states(storage: str, study: str) -> dict[int, TrialState]:
    s = optuna.load_study(study_name=study, storage=get_storage(storage))
    return {t.number: t.state for t in s.get_trials(deepcopy=False)}


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """The test PostgreSQL server (``$RPZTUNE_PG_URL``, started by ``make test``); run without it, the
    server is started here and stopped afterwards (one that was already running is left alone)."""
    url = os.environ.get("RPZTUNE_PG_URL")
    script = str(ROOT / "scripts" / "postgres-test-server.sh")
    started_here = False
    if not url:
        was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
        result = subprocess.run([script], capture_output=True, text=True)
        url = result.stdout.strip() if result.returncode == 0 else ""
        started_here = bool(url) and not was_running
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("no PostgreSQL test server (scripts/postgres-test-server.sh failed)")
        pytest.skip("no PostgreSQL test server")
    try:
        yield url
    finally:
        if started_here:
            subprocess.run([script, "stop"], capture_output=True)


def test_two_workers_on_postgresql_account_for_every_trial(pg_url, data_dir, tmp_path) -> None:
    study = f"pg-{os.getpid()}-{time.time_ns()}"
    common = ["--storage", pg_url, "--study", study, "--checkpoints", str(tmp_path)]
    code, out, err = finish(
        start_numpy_mlp(
            data_dir,
            tmp_path,
            *common,
            *QUICK,
            # trials of ~0.5 s, unpruned: QUICK's could all be run before the second worker has started
            *["--set", "epochs=50", "--pruner", "none"],
            trials=12,
            workers=2,
        )
    )
    assert code == 0, err
    found = states(pg_url, study)
    assert sorted(found) == list(range(12))
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in found.values()), found
    workers = {
        t.user_attrs["worker"]["pid"] for t in optuna.load_study(study_name=study, storage=pg_url).trials
    }
    assert len(workers) == 2, "both worker processes ran trials"

    # A second machine joins with `rpztune worker`: task, space and data path come from the study.
    code, out, err = finish(start("worker", *common, "--trials", "4", "--quiet", cwd=tmp_path))
    assert code == 0, err
    assert len(states(pg_url, study)) == 16

    # A worker whose data differs from the study's refuses with one clear line.
    other = tmp_path / "other.npz"
    import numpy as np

    with np.load(data_dir / "mnist" / "full-mnist.npz") as npz:
        np.savez(other, **{k: npz[k][::2] for k in npz.files})
    code, out, err = finish(start("worker", *common, "--data", str(other), "--trials", "2", cwd=tmp_path))
    assert code == 2
    assert "fingerprint" in err and "Traceback" not in err
    assert len(states(pg_url, study)) == 16, "a refused worker must not touch the study"


def test_sigkill_of_a_worker_fails_and_retries_its_trial_and_completes_the_total(data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    # Trials of several seconds (no pruning, small batches of a wide net; a fixed modest learning rate, so
    # none diverges and ends at once) so that the kill lands mid-trial.
    epochs = 60
    slow = ["--pruner", "none", "--quiet"]
    settings = (f"epochs={epochs}", "depth=1", "width=256", "augment_shift=0", "batch_size=16", "lr=0.01")
    for setting in settings:
        slow += ["--set", setting]
    slow += ONE_SPLIT
    proc = start_numpy_mlp(data_dir, tmp_path, "--storage", storage, *slow, trials=4, workers=2)
    victim, seen, running_before = None, [], set()
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if not (tmp_path / "studies.db").exists():
            continue
        try:
            running = optuna.load_study(study_name="numpy-mlp", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,)
            )
        except Exception as error:  # the study may not exist yet
            seen.append(repr(error)[:200])
            continue
        seen.append(str([(t.number, len(t.intermediate_values)) for t in running]))
        for trial in running:
            # Running at two polls 0.5 s apart: its parameters are drawn (milliseconds; the retry must
            # repeat them all, asserted below), and its epochs (written behind in its first seconds, so not
            # visible yet) last several seconds more, so the kill lands mid-trial.
            if "worker" in trial.user_attrs and trial.number in running_before:
                victim = trial
                break
        running_before = {t.number for t in running}
    if victim is None:
        if proc.poll() is None:  # killpg of an exited run's empty group raises
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"no trial seen mid-training; polls: {seen[-20:]}; exit {proc.returncode}; {err[-2000:]}")
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    code, out, err = finish(proc)
    assert code == 0, err
    assert f"exited with code -{int(signal.SIGKILL)}" in err

    study = optuna.load_study(study_name="numpy-mlp", storage=storage)
    trials = study.get_trials(deepcopy=False)
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL and "died" in killed.user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4, "the study completes its total despite the kill"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    with sqlite3.connect(tmp_path / "studies.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_retry_of_a_killed_mynet_trial_resumes_from_its_last_epoch(data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    tiny = ["--set", "stages=1", "--set", "channels=8", "--set", "head=flatten", "--set", "fc_layers=0"]
    proc = start(
        *RUN, "mynet", "--trials", "1", "--workers", "2", "--device", "cpu", "--pruner", "none",
        "--data", str(data_dir), "--storage", storage, "--set", "epochs=12", *tiny, "--quiet", cwd=tmp_path,
    )  # fmt: skip
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        try:
            running = optuna.load_study(study_name="mynet", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,)
            )
        except Exception:  # the study may not exist yet
            continue
        victim = next((t for t in running if len(t.intermediate_values) >= 2), None)
    assert victim is not None, "no trial ever reached its second epoch"
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    code, _, err = finish(proc)
    assert code == 0, err

    trials = optuna.load_study(study_name="mynet", storage=storage).get_trials(deepcopy=False)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert trials[victim.number].state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == victim.number and resumed["epoch"] >= len(victim.intermediate_values)
    assert list(retry.intermediate_values) == list(range(1, 13)), "every epoch is reported once"
    assert retry.user_attrs["curves"]["val_accuracy"][:2] == [victim.intermediate_values[e] for e in (1, 2)]
    assert not list(tmp_path.rglob("*.progress.pt")), "no progress file outlives its trial"


def test_workers_on_one_machine_share_its_ram_under_the_default_memory_cap(data_dir, tmp_path) -> None:
    from objectives.training.memory import default_max_memory_mb

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    tiny = ["--set", "stages=1", "--set", "channels=8", "--set", "epochs=1", "--set", "data_fraction=0.01"]
    code, _, err = finish(start(
        *RUN, "mynet", "--trials", "4", "--workers", "4", "--device", "cpu", "--pruner", "none",
        "--no-baseline", "--data", str(data_dir), "--storage", storage, *tiny, "--quiet", cwd=tmp_path,
    ))  # fmt: skip
    assert code == 0, err
    trials = optuna.load_study(study_name="mynet", storage=storage).trials
    assert len(trials) == 4
    assert {t.user_attrs["memory"]["cap_mb"] for t in trials} == {default_max_memory_mb(4)}


def test_eight_workers_on_one_sqlite_file_lose_nothing(data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code, out, err = finish(
        start_numpy_mlp(data_dir, tmp_path, "--storage", storage, *QUICK, trials=120, workers=8), timeout=600
    )
    assert code == 0, err
    assert "locked" not in err.lower() and "Traceback" not in err
    found = states(storage, "numpy-mlp")
    assert sorted(found) == list(range(120)), "trial numbers unique and the total exact"
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in found.values())
    assert (
        len(
            {
                t.user_attrs["worker"]["pid"]
                for t in optuna.load_study(study_name="numpy-mlp", storage=storage).trials
            }
        )
        >= 4  # all 8 usually; a worker that starts late on a loaded machine can find the 120 trials taken
    )
    with sqlite3.connect(tmp_path / "studies.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ctrl_c_stops_workers_and_leaves_no_running_trial(data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    slow = ["--pruner", "none", "--set", "epochs=300", "--set", "depth=1", "--set", "width=256", "--quiet"]
    slow += ONE_SPLIT
    proc = start_numpy_mlp(data_dir, tmp_path, "--storage", storage, *slow, trials=50, workers=2)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            running = optuna.load_study(study_name="numpy-mlp", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,)
            )
        except Exception:
            continue
        if len([t for t in running if "worker" in t.user_attrs]) == 2:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    code, out, err = finish(proc, timeout=180)  # a loaded machine stops its workers slowly
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # no "Trial N failed" warning of Optuna's per worker
    found = states(storage, "numpy-mlp")
    assert TrialState.RUNNING not in found.values()
    assert list(found.values()).count(TrialState.FAIL) >= 2, "the interrupted trials end failed, not running"


def test_a_new_run_clears_a_dead_workers_ghost_at_once(data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code, _, err = finish(start_numpy_mlp(data_dir, tmp_path, "--storage", storage, *QUICK, trials=2))
    assert code == 0, err
    # A trial left RUNNING by a process that is gone (a worker killed with the machine's power, say).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.load_study(study_name="numpy-mlp", storage=storage)
    ghost = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)})
    study._storage.set_trial_user_attr(
        ghost._trial_id, "worker", {**worker_identity(), "pid": dead.pid, "trial": ghost.number}
    )

    code, _, err = finish(start_numpy_mlp(data_dir, tmp_path, "--storage", storage, *QUICK, trials=1))
    assert code == 0, err
    trials = optuna.load_study(study_name="numpy-mlp", storage=storage).get_trials(deepcopy=False)
    assert trials[ghost.number].state == TrialState.FAIL
    assert "died" in trials[ghost.number].user_attrs["fail_reason"]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert [t.number for t in trials if t.system_attrs.get("failed_trial") == ghost.number], "re-queued"


def test_a_dead_workers_trial_counts_as_lost_whoever_failed_it_first(tmp_path) -> None:
    # The parent refunds the budget for trials lost with a dead worker; a worker starting at that moment
    # may fail and re-queue them first (its own clean-up), and the refund must not be lost to it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'studies.db'}")
    running = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study._storage.set_trial_user_attr(
        running._trial_id, "worker", {**worker_identity(), "pid": dead.pid, "trial": running.number}
    )
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(done, 0.5)
    assert recover_orphans(study) == [running.number]  # a starting worker cleans up first
    assert recover_orphans(study, pids={dead.pid}) == []  # so the parent fails nothing itself
    assert trials_lost_with(study, dead.pid) == [running.number]
    assert trials_lost_with(study, os.getpid()) == []


def test_journal_file_storage_serves_two_workers(data_dir, tmp_path) -> None:
    storage = f"journal:///{tmp_path / 'studies.log'}"  # journal:/// + an absolute path
    code, _, err = finish(
        start_numpy_mlp(data_dir, tmp_path, "--storage", storage, *QUICK, trials=10, workers=2)
    )
    assert code == 0, err
    found = states(storage, "numpy-mlp")
    assert sorted(found) == list(range(10))
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in found.values())


def test_a_postgresql_transaction_left_idle_is_ended_by_the_server(pg_url) -> None:
    # A machine cut off mid-transaction must not hold its row locks for the other machines' recovery.
    import sqlalchemy

    from search.engine.storage import PG_IDLE_IN_TRANSACTION_S, get_storage

    engine = get_storage(pg_url).engine
    with engine.connect() as connection:
        shown = connection.execute(sqlalchemy.text("SHOW idle_in_transaction_session_timeout")).scalar()
    assert shown == f"{PG_IDLE_IN_TRANSACTION_S}s"
