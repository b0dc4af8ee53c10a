"""``rpztune run``'s pipeline on a real numpy-mlp study: killed in each stage, it continues where it stopped;
the figure shown is the confirmed one; ``--stages search`` is the search alone."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import rpz_cli

# Fixed epochs and width, no pruning: trials and replicates long enough to be killed in, seconds in all.
COMMON = ["--seed", "5", "--set", "epochs=15", "--set", "depth=1", "--set", "width=32", "--pruner", "none"]


def _attr(db: Path, table: str, key: str, study: str) -> list[tuple]:
    if not db.is_file():
        return []
    with sqlite3.connect(db) as conn:
        try:
            if table == "study":
                return conn.execute(
                    "SELECT a.value_json FROM study_user_attributes a JOIN studies s "
                    "ON s.study_id = a.study_id WHERE a.key = ? AND s.study_name = ?",
                    (key, study),
                ).fetchall()
            return conn.execute(
                "SELECT t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = ?",
                (study,),
            ).fetchall()
        except sqlite3.OperationalError:  # the tables are being created
            return []


def replicating(work: Path) -> bool:
    """A confirmation replicate is RUNNING and has recorded its worker (a kill before that leaves it for
    ``confirm._STALE_S`` to give up, as ``test_confirm.py`` explains)."""
    db = work / "studies.db"
    if not db.is_file():
        return False
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(
                "SELECT COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'worker' "
                "WHERE s.study_name = 'numpy-mlp:confirm' AND t.state = 'RUNNING'"
            ).fetchall()
        except sqlite3.OperationalError:  # the tables are being created
            return False
    return rows[0][0] > 0


def pipeline_done(work: Path) -> list[str] | None:
    rows = _attr(work / "studies.db", "study", "pipeline", "numpy-mlp")
    return None if not rows else json.loads(rows[0][0]).get("done", [])


def states(work: Path, study: str) -> list[str]:
    return [row[0] for row in _attr(work / "studies.db", "trials", "", study)]


def run_until(work: Path, data_dir: Path, killed_when) -> str:
    """Start ``rpztune run numpy-mlp --trials 3`` and SIGKILL it once ``killed_when(work)`` holds."""
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "run",
        "numpy-mlp",
        "--trials",
        "3",
        "--data",
        str(data_dir),
    ]
    env = {**os.environ, "PYTHONPATH": str(rpz_cli.ROOT), "RPZTUNE_CACHE": str(work / "cache")}
    proc = subprocess.Popen(
        [*command, *COMMON, "--quiet"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300  # a loaded machine starts the subprocess slowly
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if killed_when(work):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill ({proc.returncode}):\n{out}"
    return out


def rerun(work: Path, data_dir: Path) -> str:
    args = ["run", "numpy-mlp", "--trials", "3", "--data", str(data_dir), *COMMON, "--quiet"]
    return rpz_cli.rpztune(*args, cwd=work).stdout


@pytest.fixture(scope="module")
def work(data_dir, tmp_path_factory) -> Path:
    """Killed in the search, then in the confirmation, then after it; each rerun's output kept."""
    work = tmp_path_factory.mktemp("pipeline")
    in_search = run_until(work, data_dir, lambda w: states(w, "numpy-mlp").count("COMPLETE") >= 1)
    assert pipeline_done(work) in (None, [])
    in_confirm = run_until(work, data_dir, replicating)
    at_kill = pipeline_done(work)
    after_confirm = run_until(work, data_dir, lambda w: "confirm" in (pipeline_done(w) or []))
    record = {"confirm_kill": at_kill, "refit_kill": pipeline_done(work)}
    final = rerun(work, data_dir)
    work.joinpath("outs.json").write_text(
        json.dumps(
            {"search": in_search, "confirm": in_confirm, "refit": after_confirm, "final": final, **record}
        )
    )
    return work


@pytest.mark.slow
def test_pipeline_continues_in_the_stage_a_kill_stopped(work) -> None:
    outs = json.loads(work.joinpath("outs.json").read_text())
    assert outs["search"].startswith("plan: search, confirm ≤ 3 trials × 5 folds, refit, ensemble")
    assert outs["confirm_kill"] == ["search"]  # the second run was killed in its confirmation
    assert "continuing round" not in outs["confirm"].splitlines()[0]  # the first never finished its search
    assert "continuing round 1: search done before" in outs["refit"].splitlines()[0]
    assert outs["refit_kill"][:2] == ["search", "confirm"]
    done = ", ".join(outs["refit_kill"])
    assert f"continuing round 1: {done} done before" in outs["final"].splitlines()[0]
    study = optuna.load_study(study_name="numpy-mlp", storage=f"sqlite:///{work / 'studies.db'}")
    record = study.user_attrs["pipeline"]
    assert record["round"] == 1 and record["done"] == ["search", "confirm", "refit", "ensemble"]
    # two searches ran (the first was killed): the first's COMPLETE trials plus the second's 3
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(complete) <= 5
    confirm = study.user_attrs["confirm"]
    assert confirm["scheme"] == "fold" and confirm["count"] == 5 and not confirm["partial"]
    assert f"refit:{confirm['winner']}" in study.user_attrs


@pytest.mark.slow
def test_the_figure_shown_is_the_confirmed_one(work, tmp_path) -> None:
    outs = json.loads(work.joinpath("outs.json").read_text())
    shown = next(line for line in outs["final"].splitlines() if line.startswith("export writes"))
    study = optuna.load_study(study_name="numpy-mlp", storage=f"sqlite:///{work / 'studies.db'}")
    confirm = study.user_attrs["confirm"]
    mine = next(e for e in confirm["estimates"] if e["trial"] == confirm["winner"])
    assert f"confirmed val_error {mine['mean']:.4f} ± {mine['sd']:.4f}" in shown
    exported = rpz_cli.rpztune("export", "--study", "numpy-mlp", "--out", str(tmp_path / "out"), cwd=work)
    assert f"confirmed val_error {mine['mean']:.4f} ± {mine['sd']:.4f}" in exported.stdout
    assert json.loads((tmp_path / "out" / "winner.json").read_text())["weights"] == "refit"


def test_stages_search_is_the_search_alone_and_bad_stages_are_refused(data_dir, tmp_path) -> None:
    common = ["run", "numpy-mlp", "--trials", "1", "--data", str(data_dir), "--set", "epochs=2", "--quiet"]
    result = rpz_cli.rpztune(*common, "--stages", "search", cwd=tmp_path)
    assert "plan:" in result.stdout and "confirm" not in result.stdout and "time:" not in result.stdout
    study = optuna.load_study(study_name="numpy-mlp", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    assert "confirm" not in study.user_attrs
    bad = rpz_cli.rpztune(*common, "--stages", "search,deploy", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "--stages: unknown stage 'deploy'; stages: search, confirm, refit, ensemble"
    )
