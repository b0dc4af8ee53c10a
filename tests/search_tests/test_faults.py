"""Faults and bad input met through the real ``rpztune`` command: damaged, read-only and contended storages,
SIGTERM and early Ctrl-C, bad photo classes, and small input mistakes. Each is one line, exit 2 (143/130 for
signals), and nothing lost."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import rpz_cli
from optuna.trial import TrialState
from rpz_cli import finish, start

from search.cli import main
from search.engine.recovery import worker_identity
from search.engine.storage import get_storage

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--set", "epochs=3", "--set", "depth=0", "--quiet", "--threads", "1"]  # trials of tens of ms
# Unpruned trials of many seconds (a wide net, small batches, a modest fixed rate): a signal lands mid-trial.
SLOW = ["--pruner", "none", "--quiet", "--threads", "1"]
for _setting in ("epochs=300", "depth=1", "width=256", "batch_size=16", "lr=0.01", "augment_shift=0"):
    SLOW += ["--set", _setting]


def rpztune(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return rpz_cli.rpztune(*args, cwd=cwd, check=False, env=env)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2 and one ``rpztune CMD: error:`` line naming every needle, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and ": error: " in lines[0], result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def in_process(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``rpztune ARGS`` through the CLI's ``main`` in this process (no seconds of imports per command)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def trials(storage: str, study: str = "numpy-mlp") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=get_storage(storage)).get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def good_db(data_dir, tmp_path_factory) -> Path:
    """A real study database of three quick numpy-mlp trials."""
    work = tmp_path_factory.mktemp("good")
    result = rpztune(*RUN, "numpy-mlp", "--trials", "3", "--data", str(data_dir), *QUICK, cwd=work)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(work / "studies.db") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    return work / "studies.db"


def read_only_mount(path: Path) -> list[str]:
    """A command prefix that runs its command with ``path`` bind-mounted read-only (root ignores modes)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) for a read-only bind mount")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not allowed here: {probe.stderr.decode().strip()}")
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(path), "--"]


def rpztune_with(prefix: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RPZTUNE_CACHE": str(cwd / "cache")},
    )


@pytest.mark.parametrize("damage", ["text", "truncated"])
@pytest.mark.slow
def test_faults_a_damaged_sqlite_file_is_one_line_from_every_command(
    damage, good_db, data_dir, tmp_path, capsys
) -> None:
    db = tmp_path / "studies.db"
    if damage == "text":
        db.write_text("these are my notes, not a database\n")
    else:
        db.write_bytes(good_db.read_bytes()[: good_db.stat().st_size // 2])
    before = db.read_bytes()
    storage = ["--storage", f"sqlite:///{db}"]
    expected = (f"sqlite:///{db}", "not an intact SQLite database")
    one_line_error(rpztune("status", *storage, cwd=tmp_path), *expected)  # the real command, once
    for command in (
        [*RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir), *QUICK],
        ["export", "--study", "numpy-mlp", "--out", str(tmp_path / "out")],
        ["report", "--out", str(tmp_path / "reports")],
    ):
        one_line_error(in_process(capsys, *command, *storage), *expected)
    assert db.read_bytes() == before, "the damaged file is left as it was"


@pytest.mark.slow
def test_faults_three_runs_creating_one_fresh_database_at_once_all_succeed(data_dir, tmp_path) -> None:
    args = [*RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir), "--set", "epochs=2", *QUICK]
    procs = [start(*args, cwd=tmp_path) for _ in range(3)]
    results = [finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    found = trials(f"sqlite:///{tmp_path / 'studies.db'}")
    assert len(found) == 3 and all(t.state != TrialState.RUNNING for t in found)


def wait_running(storage: str, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            found = trials(storage)
            running = [t for t in found if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
        except Exception:  # the study may not exist yet
            continue
        if len(running) >= n:
            return
    pytest.fail(f"{n} running trials never seen; exit {proc.poll()}")


@pytest.mark.parametrize(("workers", "target"), [(1, "group"), (2, "group"), (2, "parent")])
@pytest.mark.slow
def test_faults_sigterm_fails_the_running_trials_and_exits_143(workers, target, data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    proc = start(
        *RUN, "numpy-mlp", "--workers", str(workers), "--trials", "20", "--data", str(data_dir),
        "--storage", storage, *SLOW, cwd=tmp_path,
    )  # fmt: skip
    wait_running(storage, workers, proc)
    if target == "group":
        os.killpg(proc.pid, signal.SIGTERM)  # a service manager stopping the run
    else:
        os.kill(proc.pid, signal.SIGTERM)  # `kill PID` of the command only
    code, _, err = finish(proc)
    assert code == 143, err
    assert "terminated (SIGTERM)" in err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    found = trials(storage)
    assert not [t for t in found if t.state == TrialState.RUNNING], "no trial is left RUNNING"
    failed = [t for t in found if t.state == TrialState.FAIL]
    assert len(failed) == workers
    assert all(t.user_attrs.get("fail_reason") == "interrupted (SIGTERM)" for t in failed), [
        t.user_attrs.get("fail_reason") for t in failed
    ]


def _status(pid: int, field: str) -> str:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(f"{field}:"):
            return row.split(":", 1)[1].strip()
    raise KeyError(field)


def _has(mask: str, sig: signal.Signals) -> bool:
    return bool(int(mask, 16) >> (sig - 1) & 1)


def freeze_starting_workers(parent: subprocess.Popen, n: int, frozen: list[int]) -> None:
    """Stop (SIGSTOP) ``parent``'s first ``n`` worker processes the moment they exist (into ``frozen``), and
    check that each is stopped with Ctrl-C still blocked, i.e. still importing: a worker starts with SIGINT
    and SIGTERM blocked and unblocks them only once its imports are done (search/engine/workers.py
    ``_child_main``), a third of a second after its start on a quiet machine."""
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    deadline = time.time() + 120
    while len(frozen) < n:
        if parent.poll() is not None or time.time() > deadline:
            pytest.fail(f"{n} workers never spawned; exit {parent.poll()}")
        for pid in map(int, children.read_text().split()):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if pid not in frozen and b"spawn_main" in command:  # a worker after exec (not the tracker)
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
        time.sleep(0.001)
    for pid in frozen:
        while not _status(pid, "State").startswith("T"):
            time.sleep(0.001)
        assert _has(_status(pid, "SigBlk"), signal.SIGINT), f"worker {pid} had ended its imports when stopped"


@pytest.mark.slow
def test_faults_ctrl_c_while_workers_import_is_one_line(data_dir, tmp_path) -> None:
    proc = start(*RUN, "numpy-mlp",  "--workers", "2", "--trials", "200", "--data",
                 str(data_dir), *QUICK, cwd=tmp_path)  # fmt: skip
    workers: list[int] = []
    try:
        freeze_starting_workers(proc, 2, workers)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        for pid in workers:  # it waits in each worker until its imports are done
            pending = int(_status(pid, "ShdPnd"), 16) | int(_status(pid, "SigPnd"), 16)
            assert _has(f"{pending:x}", signal.SIGINT), f"worker {pid}: the Ctrl-C is not pending"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # no run left behind by a failed test
        raise
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    code, _, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err
    if (tmp_path / "studies.db").exists():
        started = [t for t in trials(f"sqlite:///{tmp_path / 'studies.db'}") if t.state != TrialState.WAITING]
        assert started == [], "no trial started (the enqueued baseline waits)"


def photo_folder(photos_dir: Path, root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for file in sorted((photos_dir / ("dog" if name == "dog" else "cat")).iterdir())[:n]:
            shutil.copy(file, root / name / file.name)
    return root


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"cat": 4, "dog": 0}, "class folder '{root}/dog' has no readable image"),
        ({"bird": 4, "cat": 4, "dog": 4}, "holds 3 class folders (bird, cat, dog)"),
    ],
)
def test_faults_finetune_needs_two_classes_with_photos(
    classes, message, photos_dir, tmp_path, capsys
) -> None:
    root = photo_folder(photos_dir, tmp_path / "pets", classes)
    db = tmp_path / "studies.db"
    storage = f"sqlite:///{db}"
    result = in_process(
        capsys,
        *RUN,
        "finetune",
        "--trials",
        "1",
        "--data",
        str(root),
        "--storage",
        storage,
    )
    one_line_error(result, message.format(root=root))
    assert not db.exists(), "refused before the storage is written"


@pytest.mark.slow
def test_faults_a_read_only_database_is_readable_and_refuses_a_run(good_db, data_dir, tmp_path) -> None:
    db = tmp_path / "studies.db"
    shutil.copy(good_db, db)
    with sqlite3.connect(db) as connection:  # a rollback-journal file: opening it in WAL mode would write
        connection.execute("PRAGMA journal_mode=DELETE")
    before = db.read_bytes()
    read_only = read_only_mount(db)
    status = rpztune_with(read_only, "status", cwd=tmp_path)
    assert status.returncode == 0 and "numpy-mlp" in status.stdout, status.stderr
    report = rpztune_with(read_only, "report", "--csv", "--out", "tables", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    winner = ["--study", "numpy-mlp", "--checkpoints", str(good_db.parent / "studies-checkpoints")]
    exported = rpztune_with(read_only, "export", *winner, "--out", "out", cwd=tmp_path)
    assert exported.returncode == 0 and (tmp_path / "out" / "numpy_nn.py").is_file(), exported.stderr
    run = rpztune_with(read_only, *RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir), *QUICK,
                       cwd=tmp_path)  # fmt: skip
    one_line_error(run, "storage 'sqlite:///studies.db' is not writable", "Read-only file system")
    assert db.read_bytes() == before


@pytest.mark.slow
def test_faults_a_read_only_checkpoint_folder_is_refused_before_the_study_exists(data_dir, tmp_path) -> None:
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    result = rpztune_with(
        read_only_mount(checkpoints), *RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir),
        "--checkpoints", str(checkpoints), *QUICK, cwd=tmp_path,
    )  # fmt: skip
    one_line_error(result, f"checkpoint folder '{checkpoints}' cannot be written", "Read-only file system")
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*RUN, "numpy-mlp", "--timeout", "nan"],
            "--timeout must be positive, but got nan",
        ),
        ([*RUN, "numpy-mlp", "--study", ""], "--study must name a study"),
        (["status", "--storage", "sqlite:///studeis.db"], "no storage at 'sqlite:///studeis.db'"),
    ],
)
def test_faults_small_input_mistakes_write_nothing(
    args, message, data_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    extra = ["--data", str(data_dir)] if args[0] == "run" else []
    one_line_error(in_process(capsys, *args, *extra), message)
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.slow
def test_faults_a_completed_retry_keeps_no_fail_reason_and_resume_is_quiet(data_dir, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    args = [*RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir), *QUICK]
    result = rpztune(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # A trial left RUNNING by a worker process that is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.load_study(study_name="numpy-mlp", storage=get_storage(storage))
    ghost = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)})
    study._storage.set_trial_user_attr(
        ghost._trial_id, "worker", {**worker_identity(), "pid": dead.pid, "trial": ghost.number}
    )
    result = rpztune(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    found = trials(storage)
    assert "died" in found[ghost.number].user_attrs["fail_reason"]
    retry = next(t for t in found if t.system_attrs.get("failed_trial") == ghost.number)
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert "fail_reason" not in retry.user_attrs
