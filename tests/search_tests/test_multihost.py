"""Many machines for real: PostgreSQL on one host, rpztune on two others, each its own network namespace
with its own hostname; one worker host is killed, or its link is cut, mid-trial.

Needs root (skips elsewhere, fails under CI=true). About 2 minutes per test on a loaded 2-core machine
(4.5 min for both at load 11, 1.9 CPU-minutes): a study's first trial, two worker start-ups, the grace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rpz_netns import SUBNET, Network, missing_tools

from search.engine.heartbeat import interval_for
from search.engine.storage import get_storage

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.slow  # minutes of namespaces, PostgreSQL and two worker hosts

ROOT = Path(__file__).resolve().parents[2]
PORT = 55432  # inside the server's own namespace: no other server can hold it
GRACE = 6
INTERVAL = interval_for(GRACE)
SLACK = 10  # seconds a loaded CI machine may add to the grace before a live worker's check runs
EPOCHS = 8
TINY = [f"epochs={EPOCHS}", "data_fraction=0.02", "stages=1", "channels=8", "head=flatten", "fc_layers=0",
        "batch_size=64"]  # fmt: skip
TRIALS = 4  # host a's --trials; host b runs open-ended until the test stops it (see start_two_hosts)


@dataclass
class Cluster:
    """The namespaces, each host's URL of the server, and a URL for this test (the server's Unix socket)."""

    net: Network
    urls: dict[str, str]
    local: str
    base: Path


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the multi-host test cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """PostgreSQL in a server namespace, reachable from hosts ``a`` and ``b`` over their own links."""
    if os.geteuid() != 0:
        _unavailable("network namespaces need root")
    script = str(ROOT / "scripts" / "postgres-test-server.sh")
    if missing_tools():
        _unavailable(f"missing {', '.join(missing_tools())} (scripts/ensure-netns-tools.sh installs them)")
    installed = subprocess.run([script, "install"], capture_output=True, text=True)  # not from a namespace
    if installed.returncode != 0:
        _unavailable(f"no PostgreSQL: {installed.stderr.strip()[-500:]}")
    base = Path(tempfile.mkdtemp(prefix="rpztune-multihost-"))
    base.chmod(0o755)  # the postgres user reaches its data folder through it
    try:
        net = Network(str(os.getpid() % 100_000))
    except subprocess.CalledProcessError as error:
        shutil.rmtree(base)
        _unavailable(f"cannot create a network namespace: {error.stderr.strip()}")
    env = {**os.environ, "RPZTUNE_PG_DIR": str(base / "pg"), "RPZTUNE_PG_PORT": str(PORT)}
    try:
        urls = {name: net.add_host(name) for name in ("a", "b")}
        env |= {"RPZTUNE_PG_LISTEN": ",".join(urls.values()), "RPZTUNE_PG_TRUST": f"{SUBNET}.0.0/16"}
        started = net.on_server([script], env=env, capture_output=True, text=True, timeout=600)
        assert started.returncode == 0, f"PostgreSQL did not start: {started.stderr[-2000:]}"
        yield Cluster(
            net,
            {name: f"postgresql://rpztune@{address}:{PORT}/rpztune_test" for name, address in urls.items()},
            f"postgresql://rpztune@/rpztune_test?host={base / 'pg'}&port={PORT}",
            base,
        )
    finally:
        net.on_server([script, "stop"], env=env, capture_output=True, timeout=120)
        net.close()
        shutil.rmtree(base, ignore_errors=True)


def rpztune(cluster: Cluster, host: str, *args: str, log: str) -> subprocess.Popen:
    """``rpztune ARGS`` on ``host``: the data and checkpoint folders are shared, as over NFS."""
    argv = [sys.executable, "-m", "search.cli", *args, "--storage", cluster.urls[host], "--checkpoints",
            str(cluster.base / "checkpoints"), "--device", "cpu", "--threads", "1", "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RPZTUNE_CACHE": str(cluster.base / "cache")}
    with open(cluster.base / log, "w") as out:  # the process keeps its own copy of the file
        return cluster.net.start(host, argv, cwd=cluster.base, env=env, stdout=out, stderr=subprocess.STDOUT)


@functools.cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    return get_storage(url)  # one connection pool for all polls


def trials(cluster: Cluster, study: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=_storage(cluster.local)).get_trials()
    except KeyError:  # the study does not exist yet
        return []


def host_of(trial: FrozenTrial) -> str | None:
    worker = trial.user_attrs.get("worker")
    return worker["host"] if isinstance(worker, dict) and worker.get("trial") == trial.number else None


def start_two_hosts(cluster: Cluster, study: str, data_dir: Path) -> tuple[subprocess.Popen, ...]:
    """Host a starts the study with one trial; then hosts a and b join it with ``rpztune worker``: a with
    ``--trials TRIALS``, b without a limit, so that b is still drawing trials whenever the victim's retry is
    queued (after the grace, in wall time), however fast its own trials end: with a budget, b's trials of
    about 2 s on a quiet machine spent it before the retry was queued and left it WAITING. The test stops b
    once the retry is done (:func:`stop_mid_trial`)."""
    settings = [arg for setting in TINY for arg in ("--set", setting)]
    first = rpztune(cluster, "a", *RUN, "mynet", "--study", study, "--trials", "1", "--data", str(data_dir),
                    "--no-baseline", "--pruner", "none", "--seed", "0", "--heartbeat-grace", str(GRACE),
                    *settings, log=f"{study}-run.log")  # fmt: skip
    assert wait(first, 300) == 0, log_tail(cluster, study, "run")
    a = rpztune(cluster, "a", "worker", "--study", study, "--trials", str(TRIALS), log=f"{study}-a.log")
    b = rpztune(cluster, "b", "worker", "--study", study, log=f"{study}-b.log")
    return a, b


@contextlib.contextmanager
def struck_mid_trial(
    cluster: Cluster, kind: str, data_dir: Path
) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen, FrozenTrial, float]]:
    """A new study on both hosts (:func:`start_two_hosts`) and its victim (:func:`pick_victim`): yields
    ``(study, a, b, victim, struck)``, ``struck`` the time the caller strikes host a; both hosts are killed
    when the block ends, however it ends."""
    study = f"{kind}-{time.time_ns()}"
    a, b = start_two_hosts(cluster, study, data_dir)
    try:
        victim = pick_victim(cluster, study, [a, b])
        yield study, a, b, victim, time.time()
    finally:
        cluster.net.kill_host("a")
        cluster.net.kill_host("b")


def pick_victim(cluster: Cluster, study: str, procs: list[subprocess.Popen]) -> FrozenTrial:
    """Host a's trial once it saved an epoch (and has epochs left), while host b runs its first trial."""
    deadline, seen = time.time() + 300, []
    while time.time() < deadline and all(p.poll() is None for p in procs):
        found = trials(cluster, study)
        running = [t for t in found if t.state == TrialState.RUNNING]
        b_busy = any(host_of(t) == "rpz-b" for t in running)
        b_done = sum(host_of(t) == "rpz-b" and t.state.is_finished() for t in found)
        seen.append((b_busy, b_done, [(t.number, host_of(t), len(t.intermediate_values)) for t in running]))
        for trial in running:
            if host_of(trial) == "rpz-a" and 1 <= len(trial.intermediate_values) <= EPOCHS - 3:
                if b_busy and b_done == 0:
                    return trial
        time.sleep(0.3)
    pytest.fail(f"no moment to strike; last polls {seen[-10:]}; exits {[p.poll() for p in procs]}")


def log_tail(cluster: Cluster, study: str, host: str) -> str:
    path = cluster.base / f"{study}-{host}.log"
    return path.read_text()[-3000:] if path.exists() else "(no log)"


def retry_of(found: list[FrozenTrial], victim: FrozenTrial) -> FrozenTrial | None:
    return next((t for t in found if t.system_attrs.get("failed_trial") == victim.number), None)


def wait_for_the_retry(cluster: Cluster, study: str, victim: FrozenTrial, b: subprocess.Popen) -> None:
    """Until the victim's retry has ended (host b draws it once the victim fails: b has no trial limit)."""
    deadline = time.time() + 300
    while time.time() < deadline and b.poll() is None:
        retry = retry_of(trials(cluster, study), victim)
        if retry is not None and retry.state.is_finished():
            return
        time.sleep(0.5)
    pytest.fail(f"the retry never ended; host b exit {b.poll()}: {log_tail(cluster, study, 'b')}")


def stop_mid_trial(cluster: Cluster, study: str, host: str, proc: subprocess.Popen) -> FrozenTrial:
    """SIGTERM ``host``'s open-ended worker (as a service manager stops it) while it trains a trial with
    epochs left, so the signal lands in training, not in Optuna's bookkeeping between trials; that trial ends
    FAIL and the worker exits 143. Returns the trial as it was seen running."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        for trial in trials(cluster, study):
            training = trial.state == TrialState.RUNNING and 1 <= len(trial.intermediate_values) <= EPOCHS - 3
            if training and host_of(trial) == f"rpz-{host}":
                os.killpg(proc.pid, signal.SIGTERM)
                assert wait(proc, 120) == 143, log_tail(cluster, study, host)
                return trial
        time.sleep(0.2)
    pytest.fail(f"host {host} never trained a trial to stop; exit {proc.poll()}")


def check_host_b(found: list[FrozenTrial], stopped: FrozenTrial) -> int:
    """Host b's trials all completed but the one it was stopped in (failed, interrupted); their number."""
    b_trials = [t for t in found[1:] if host_of(t) == "rpz-b"]
    assert found[stopped.number].state == TrialState.FAIL
    assert found[stopped.number].user_attrs.get("fail_reason") == "interrupted (SIGTERM)"
    assert counts_of(found, "rpz-b") == {TrialState.COMPLETE: len(b_trials) - 1, TrialState.FAIL: 1}
    return len(b_trials) - 1


def wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def resumed(found: list[FrozenTrial], victim: FrozenTrial) -> bool:
    """Whether the victim's retry has loaded its progress (a late victim may then delete it)."""
    retries = [t for t in found if t.system_attrs.get("failed_trial") == victim.number]
    return any("resumed_from" in t.user_attrs for t in retries)


def timeline(found: list[FrozenTrial], struck: float) -> str:
    """Each trial's state, host, and start and end in seconds after the strike: what a race looks like."""

    def after(moment: datetime | None) -> str:
        return "-" if moment is None else f"{moment.timestamp() - struck:+.1f}"

    return "; ".join(
        f"{t.number} {t.state.name} {host_of(t)} {after(t.datetime_start)}..{after(t.datetime_complete)}"
        for t in found
    )


def check_failed_and_resumed(found: list[FrozenTrial], victim: FrozenTrial, struck: float) -> FrozenTrial:
    """The victim failed by heartbeat within the grace; its one retry ran on host b from its last epoch."""
    dead = found[victim.number]
    assert dead.state == TrialState.FAIL, dead.state
    assert "fail_reason" not in dead.user_attrs, "host b's same-host recovery must not see host a's pids"
    waited = (dead.datetime_complete - datetime.fromtimestamp(struck)).total_seconds()
    assert GRACE - 2 * INTERVAL <= waited <= GRACE + INTERVAL + SLACK, f"failed {waited:.1f} s after it"
    retries = [t for t in found if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1, [t.number for t in retries]
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and host_of(retry) == "rpz-b", timeline(found, struck)
    assert retry.params == dead.params
    assert "resumed_from" in retry.user_attrs, {k: v for k, v in retry.user_attrs.items() if k != "curves"}
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == victim.number and resumed["epoch"] >= len(victim.intermediate_values)
    assert list(retry.intermediate_values) == list(range(1, EPOCHS + 1)), "every epoch is reported once"
    return retry


def test_multihost_killed_host_fails_by_heartbeat_and_resumes_on_the_other(cluster, data_dir) -> None:
    with struck_mid_trial(cluster, "kill", data_dir) as (study, a, b, victim, struck):
        assert cluster.net.kill_host("a"), "host a had processes"
        assert wait(a, 30) == -signal.SIGKILL
        wait_for_the_retry(cluster, study, victim, b)
        stopped = stop_mid_trial(cluster, study, "b", b)
    found = trials(cluster, study)
    check_failed_and_resumed(found, victim, struck)
    by_a = [t for t in found[1:] if host_of(t) == "rpz-a" and t.state == TrialState.COMPLETE]
    assert len(by_a) < TRIALS, "host a died before its last trial"
    by_b = check_host_b(found, stopped)
    assert counts_of(found) == {TrialState.COMPLETE: 1 + len(by_a) + by_b, TrialState.FAIL: 2}


def counts_of(found: list[FrozenTrial], host: str | None = None) -> dict[TrialState, int]:
    """Trials by state (of one host's workers), the study's first trial (run by ``rpztune run``) left out."""
    counts: dict[TrialState, int] = {}
    for trial in found[1:] if host else found:
        if host is None or host_of(trial) == host:
            counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def test_multihost_cut_link_fails_by_heartbeat_and_the_cut_host_never_completes_it(cluster, data_dir) -> None:
    with struck_mid_trial(cluster, "cut", data_dir) as (study, a, b, victim, struck):
        cluster.net.cut("a")
        deadline = time.time() + 300
        while not resumed(trials(cluster, study), victim) and time.time() < deadline and b.poll() is None:
            time.sleep(0.5)
        assert a.poll() is None, "host a lives on without its link"
        cluster.net.restore("a")  # host a's connections come back: it must not complete the failed trial
        assert wait(a, 300) == 0, log_tail(cluster, study, "a")
        wait_for_the_retry(cluster, study, victim, b)
        stopped = stop_mid_trial(cluster, study, "b", b)
        check_failed_and_resumed(trials(cluster, study), victim, struck)
    found = trials(cluster, study)
    assert found[victim.number].state == TrialState.FAIL, "the cut host must not complete a failed trial"
    said = (cluster.base / f"{study}-a.log").read_text()
    assert f"trial {victim.number} was failed and re-queued by another worker" in said, said[-3000:]
    # Each host finished its --trials: the lost trial does not count against host a's.
    assert counts_of(found, "rpz-a") == {TrialState.COMPLETE: TRIALS, TrialState.FAIL: 1}
    by_b = check_host_b(found, stopped)
    assert counts_of(found) == {TrialState.COMPLETE: 1 + TRIALS + by_b, TrialState.FAIL: 2}
