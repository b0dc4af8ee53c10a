"""``rpztune confirm`` on a real numpy-mlp study: resume after SIGKILL, the winner rule, refit, export."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import rpz_cli

from nn_numpy import load_model
from objectives import get_task
from objectives.numpy_mlp.replicate import REFIT_MEMBERS
from search.cli import main
from search.selection.confirm import confirm_study_name, default_plan
from search.selection.winner import Estimate, choose_confirmed, find_winner

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

# Fixed epochs and width, no pruning: 3 complete trials whose replicates train long enough to be killed.
COMMON = ["--seed", "5", "--set", "epochs=40", "--set", "depth=1", "--set", "width=32", "--pruner", "none"]
CONFIRM = ["confirm", "--study", "numpy-mlp", "--top", "2", "--folds", "2"]


def storage(work: Path) -> str:
    return f"sqlite:///{work / 'studies.db'}"


def cli(*args: str) -> tuple[int, str, str]:
    """``rpztune ARGS`` in this process (the subprocess is kept for the run that gets killed)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def trial_attrs(work: Path, key: str) -> list[tuple[str, Any]]:
    """(state, user attribute ``key`` or None) of every trial of the confirm study, read with sqlite3 (no
    Optuna cache)."""
    with sqlite3.connect(work / "studies.db") as db:
        rows = db.execute(
            "SELECT t.state, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = ? "
            "WHERE s.study_name = ?",
            (key, confirm_study_name("numpy-mlp")),
        ).fetchall()
    return [(state, None if value is None else json.loads(value)) for state, value in rows]


def confirm_trials(work: Path) -> list[tuple[str, str | None]]:
    """(state, confirm_key) of every trial of the confirm study."""
    return trial_attrs(work, "confirm_key")


def running_workers(work: Path) -> list[dict]:
    """The ``worker`` attribute of every RUNNING replicate that recorded it."""
    return [
        worker for state, worker in trial_attrs(work, "worker") if state == "RUNNING" and worker is not None
    ]


def running_with_worker(work: Path) -> int:
    """RUNNING replicates that recorded their worker (a kill before that is left for _STALE_S to give up)."""
    return len(running_workers(work))


@pytest.fixture(scope="module")
def work(data_dir, tmp_path_factory) -> Path:
    """A real numpy-mlp study of 3 trials, then a confirmation killed with SIGKILL mid-replicate and rerun."""
    work = tmp_path_factory.mktemp("confirm")
    run = [*RUN, "numpy-mlp", "--trials", "3", "--data", str(data_dir), *COMMON, "--quiet"]
    assert cli(*run, "--storage", storage(work))[0] == 0
    command = [sys.executable, "-m", "search.cli", *CONFIRM]
    env = {**os.environ, "PYTHONPATH": str(rpz_cli.ROOT), "RPZTUNE_CACHE": str(work / "cache")}
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list = []
    deadline = time.monotonic() + 300  # a loaded machine starts the subprocess slowly
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen = confirm_trials(work) if (work / "studies.db").is_file() else []
            states = Counter(state for state, _ in seen)
            if states["COMPLETE"] >= 1 and states["RUNNING"] == 1 and running_with_worker(work) == 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"confirm ended before the kill ({proc.returncode}): {seen}"
    work.joinpath("killed.json").write_text(json.dumps(confirm_trials(work)))
    code, out, _ = cli(*CONFIRM, "--storage", storage(work))
    assert code == 0
    work.joinpath("rerun.txt").write_text(out)
    return work


@pytest.mark.slow
def test_confirm_resumes_after_sigkill_with_every_estimate_complete_once(work) -> None:
    killed = json.loads(work.joinpath("killed.json").read_text())
    done_before = {key for state, key in killed if state == "COMPLETE"}
    assert done_before and ("RUNNING", None) not in killed
    after = confirm_trials(work)
    complete = Counter(key for state, key in after if state == "COMPLETE")
    assert len(complete) == 4 and set(complete.values()) == {1}, complete  # 2 trials x 2 folds, once each
    assert "RUNNING" not in {state for state, _ in after}
    assert "FAIL" in {state for state, _ in after}  # the replicate that was killed, failed then re-queued
    rerun = work.joinpath("rerun.txt").read_text()
    assert f"trained {4 - len(done_before)} replicates" in rerun  # the finished ones were not trained again
    record = optuna.load_study(study_name="numpy-mlp", storage=storage(work)).user_attrs["confirm"]
    assert [len(e["values"]) for e in record["estimates"]] == [2, 2]
    for estimate in record["estimates"]:
        assert estimate["sd"] == pytest.approx(np.std(estimate["values"], ddof=1))


@pytest.mark.slow
def test_status_and_the_pages_show_the_confirmation_on_its_search_study(work, tmp_path) -> None:
    code, out, _ = cli("status", "--storage", storage(work))
    winner = optuna.load_study(study_name="numpy-mlp", storage=storage(work)).user_attrs["confirm"]["winner"]
    assert code == 0 and confirm_study_name("numpy-mlp") not in out, out  # no row of its own
    flat = " ".join(out.split())
    assert f"confirmed: trial {winner}: val_error " in flat and "(2 trials × 2 folds)" in flat, out
    header, row = out.splitlines()[:2]
    assert [len(header.split()), row.index("3")] == [len(row.split()), header.index("trials")], out
    assert cli("report", "--storage", storage(work), "--out", str(tmp_path))[0] == 0
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["index.html", "study-numpy-mlp.html"]
    assert confirm_study_name("numpy-mlp") not in (tmp_path / "index.html").read_text()
    asked = ("report", "--study", confirm_study_name("numpy-mlp"), "--storage", storage(work), "--out")
    code, _, err = cli(*asked, str(tmp_path / "asked"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "(--study numpy-mlp)" in err, err
    assert not (tmp_path / "asked").exists()


@pytest.mark.slow
def test_confirm_refits_the_winner_and_export_writes_it(work, data_dir, tmp_path) -> None:
    study = optuna.load_study(study_name="numpy-mlp", storage=storage(work))
    record = study.user_attrs["confirm"]
    winner = record["winner"]
    refit = study.user_attrs[f"refit:{winner}"]
    assert refit["epochs"] == next(e["epochs"] for e in record["estimates"] if e["trial"] == winner)
    assert refit["n_train"] == 1000  # every training image of the pair (500 per digit): train + validation
    assert refit["members"] == REFIT_MEMBERS == len(refit["member_test_errors"]) > 1
    out = tmp_path / "export"
    code, printed, _ = cli("export", "--study", "numpy-mlp", "--out", str(out), "--storage", storage(work))
    assert code == 0
    summary = json.loads((out / "winner.json").read_text())
    assert summary["trial"] == winner and summary["weights"] == "refit"
    assert summary["confirmed"]["winner"] == winner
    refit_file = work / "studies-checkpoints" / "numpy-mlp" / refit["checkpoint"]
    assert (out / "numpy_nn_weights.npz").read_bytes() == refit_file.read_bytes()
    packed, _ = load_model(out / "numpy_nn_weights.npz")  # the seeds side by side in one plain MLP
    assert packed[0].W.shape == (784, 32 * REFIT_MEMBERS) and packed[-2].W.shape == (32 * REFIT_MEMBERS, 1)
    assert f"winner: trial {winner} of 'numpy-mlp': confirmed val_error" in printed
    assert record["reason"] in printed
    where = ["--data", str(data_dir), "--storage", storage(work)]
    code, stdout, stderr = cli("evaluate", "--study", "numpy-mlp", *where)
    assert f"winner: trial {winner} of 'numpy-mlp': confirmed" in stderr
    scored = json.loads(stdout)  # evaluate scores what export wrote: the refit
    assert scored["trial"] == winner and scored["weights"] == "refit" and refit["checkpoint"] in stderr
    assert scored["test_error"] == pytest.approx(refit["test_error"])
    code, stdout, _ = cli("evaluate", "--study", "numpy-mlp", "--trial-weights", *where)
    own = json.loads(stdout)
    assert code == 0 and own["weights"] == "trial" and own["trial"] == winner


@pytest.mark.slow
def test_find_winner_takes_the_confirmed_winner_not_the_best_value(work) -> None:
    study = optuna.load_study(study_name="numpy-mlp", storage=storage(work))
    winner = find_winner(storage(work), "numpy-mlp")
    assert winner.trial.number == study.user_attrs["confirm"]["winner"]
    assert winner.confirmed is not None
    best = find_winner(storage(work), "numpy-mlp", study.best_trial.number)
    assert best.trial.number == study.best_trial.number


def test_choose_confirmed_breaks_ties_within_the_spread_by_the_simpler_model() -> None:
    big = Estimate(1, (0.020, 0.030, 0.025), epochs=20, complexity=50_000, search_value=0.01)
    small = Estimate(2, (0.024, 0.034, 0.029), epochs=20, complexity=800, search_value=0.02)
    far = Estimate(3, (0.070, 0.080, 0.075), epochs=5, complexity=100, search_value=0.00)
    winner, ranking, why = choose_confirmed([far, small, big], "minimize")
    assert [e.trial for e in ranking] == [1, 2, 3]
    assert winner is small and "simpler" in why and "trial 1" in why


def test_choose_confirmed_keeps_the_best_mean_when_the_gap_exceeds_the_spread() -> None:
    best = Estimate(1, (0.90, 0.91), epochs=30, complexity=9_000, search_value=0.9)
    worse = Estimate(2, (0.80, 0.81), epochs=3, complexity=10, search_value=0.95)
    winner, _, why = choose_confirmed([worse, best], "maximize")
    assert winner is best and "beyond one standard error" in why


def test_default_plan_refuses_folds_for_mynet_and_single_replicates() -> None:
    mlp, mynet, finetune = (get_task(name) for name in ("numpy-mlp", "mynet", "finetune"))
    assert default_plan(mlp) == ("fold", 5) and default_plan(mynet) == ("seed", 2)
    with pytest.raises(ValueError, match="mynet confirms over seeds"):
        default_plan(mynet, folds=3)
    with pytest.raises(ValueError, match="at least 2"):
        default_plan(finetune, seeds=1)


@pytest.mark.slow
def test_sigterm_stops_the_confirm_workers_too(data_dir, tmp_path) -> None:
    run = [*RUN, "numpy-mlp", "--trials", "2", "--data", str(data_dir), *COMMON, "--quiet"]
    assert cli(*run, "--storage", storage(tmp_path))[0] == 0
    command = [sys.executable, "-m", "search.cli", *CONFIRM[:-1], "5", "--workers", "2"]  # 10 replicates
    env = {**os.environ, "PYTHONPATH": str(rpz_cli.ROOT), "RPZTUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids: set[int] = set()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None and not pids:
            pids = {worker["pid"] for worker in running_workers(tmp_path)}
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.wait(timeout=90)
    assert pids, "no replicate started before the confirm run ended"
    assert proc.returncode == 143, proc.stderr.read().decode()
    states = Counter(state for state, _ in confirm_trials(tmp_path))
    assert states["COMPLETE"] < 10, "the workers went on training the queue after the run was stopped"
    for pid in pids:  # the workers were stopped with it, not left training on their own
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
