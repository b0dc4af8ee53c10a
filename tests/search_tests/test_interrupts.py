"""A stop signal whose handler runs inside a weakref callback or ``__del__`` (where Python drops exceptions)
still stops the process, with its exit code and no "Exception ignored" on stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rpz_cli import finish, start

from search.engine.storage import get_storage

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

ROOT = Path(__file__).resolve().parents[2]

# The signal is sent from inside a weakref callback and lands there (the loop gives the handler bytecode to
# run in): without the redelivery Python prints "Exception ignored in: <function ...>" and goes on.
SCRIPT = """
import os, signal, sys, time, weakref
from search.engine.interrupts import exit_code, raise_on_sigterm, raise_once, redeliver_dropped_interrupts

class Thing:
    pass

def callback(ref):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    for _ in range(10_000):
        pass

def stop_inside_a_callback():
    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    time.sleep(30)  # the signal comes back within milliseconds: this only bounds a failure
    print("still running")

try:
    if sys.argv[2] == "worker":  # a worker process: both signals raise once, then are ignored
        with redeliver_dropped_interrupts():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, raise_once)
            stop_inside_a_callback()
    else:  # the rpztune command: SIGTERM raises Terminated, Ctrl-C Python's KeyboardInterrupt
        with raise_on_sigterm():
            stop_inside_a_callback()
except KeyboardInterrupt as interrupt:
    print(type(interrupt).__name__, signal.getsignal(getattr(signal, sys.argv[1])) == signal.SIG_IGN)
    sys.exit(exit_code(interrupt))
"""


@pytest.mark.parametrize(
    ("signal_name", "where", "code", "printed"),
    [
        ("SIGTERM", "worker", 143, "Terminated True"),  # the handler it found (ignore) is back
        ("SIGINT", "worker", 130, "KeyboardInterrupt True"),
        ("SIGTERM", "command", 143, "Terminated False"),
        ("SIGINT", "command", 130, "KeyboardInterrupt False"),
    ],
)
def test_interrupts_a_signal_landing_in_a_weakref_callback_still_stops_the_process(
    signal_name: str, where: str, code: int, printed: str
) -> None:
    _script_exits_quietly([SCRIPT, signal_name, where], code, printed)


def _script_exits_quietly(argv: list[str], code: int, printed: str) -> None:
    """``python -c ARGV`` exits ``code``, prints exactly ``printed`` and nothing on stderr."""
    result = subprocess.run(
        [sys.executable, "-c", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # a test run in the background inherits an ignored SIGINT, which Python then keeps ignoring
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.strip() == printed
    assert result.stderr == ""


def test_interrupts_other_exceptions_in_callbacks_are_still_reported() -> None:
    script = (
        "import weakref\n"
        "from search.engine.interrupts import redeliver_dropped_interrupts\n"
        "class Thing: pass\n"
        "def callback(ref): raise ValueError('from a callback')\n"
        "with redeliver_dropped_interrupts():\n"
        "    thing = Thing(); ref = weakref.ref(thing, callback); del thing\n"
        "print('went on')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "went on"
    assert "Exception ignored" in result.stderr and "ValueError: from a callback" in result.stderr


# A worker's trial loop as search/engine/workers.py runs it, with the stop signal sent from inside Optuna's
# bookkeeping: during the tell (the write-behind storage re-reads the study after the trial ends; a signal
# there once broke Optuna's _run_trial with "UnboundLocalError: ... 'updated_state'") or during the ask.
GATED = """
import os, signal, sys
import optuna
from search.engine.interrupts import StopGate, describe, exit_code, raise_once
from search.engine.storage import get_storage
from search.engine.write_behind import WriteBehindStorage, write_behind

where, sig = sys.argv[1], getattr(signal, sys.argv[2])
optuna.logging.set_verbosity(optuna.logging.ERROR)
for stop in (signal.SIGINT, signal.SIGTERM):
    signal.signal(stop, raise_once)
storage = write_behind(get_storage(f"sqlite:///{sys.argv[3]}"))
read = WriteBehindStorage._read_trials_from_remote_storage
sent = []

def send_once():
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), sig)

def reading(self, study_id):
    read(self, study_id)
    if where == "tell" and any(t.state.is_finished() for t in self._studies[study_id].trials.values()):
        send_once()  # the trial is stored as finished; Optuna has not returned from its tell yet

class Sampler(optuna.samplers.RandomSampler):
    def before_trial(self, study, trial):
        if where == "ask":
            send_once()

WriteBehindStorage._read_trials_from_remote_storage = reading
study = optuna.create_study(study_name="s", storage=storage, sampler=Sampler())
gate = StopGate()

def objective(trial):
    try:
        with gate.open():
            return trial.suggest_float("x", 0, 1)
    except KeyboardInterrupt as exc:
        trial.set_user_attr("fail_reason", f"interrupted ({describe(exc)})")
        raise

try:
    with gate.held():
        study.optimize(objective, n_trials=1)
    print("not interrupted")
except KeyboardInterrupt as interrupt:
    stored = optuna.load_study(study_name="s", storage=get_storage(f"sqlite:///{sys.argv[3]}")).trials
    print(type(interrupt).__name__, [(t.state.name, t.user_attrs.get("fail_reason")) for t in stored])
    sys.exit(exit_code(interrupt))
"""


@pytest.mark.parametrize(
    ("where", "signal_name", "code", "printed"),
    [
        # in the tell: the trial is stored COMPLETE, and the interrupt comes once Optuna is done with it
        ("tell", "SIGINT", 130, "KeyboardInterrupt [('COMPLETE', None)]"),
        ("tell", "SIGTERM", 143, "Terminated [('COMPLETE', None)]"),
        # in the ask: held until the objective starts, which it ends at once: FAIL, with the cause
        ("ask", "SIGINT", 130, "KeyboardInterrupt [('FAIL', 'interrupted (Ctrl-C)')]"),
        ("ask", "SIGTERM", 143, "Terminated [('FAIL', 'interrupted (SIGTERM)')]"),
    ],
)
def test_interrupts_a_signal_in_optunas_ask_or_tell_waits_for_the_trial_code(
    where: str, signal_name: str, code: int, printed: str, tmp_path: Path
) -> None:
    _script_exits_quietly([GATED, where, signal_name, str(tmp_path / "s.db")], code, printed)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_interrupts_stopping_two_workers_mid_run_is_one_line_naming_the_cause(
    signal_name: str, data_dir: Path, tmp_path: Path
) -> None:
    """Ctrl-C (or SIGTERM) to `rpztune run --workers 2` while short trials run: one line, no Optuna warning
    per interrupted trial, every interrupted trial FAIL with the cause, nothing RUNNING."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    quick = ["--set", "epochs=3", "--set", "depth=0", "--quiet", "--threads", "1"]
    proc = start(*RUN, "numpy-mlp", "--workers", "2", "--trials", "100000", "--data", str(data_dir),
                 "--storage", storage, *quick, cwd=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # bounds a failure only
        while len(finished(storage)) < 20:  # both workers are in their stride
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"20 trials never finished; exit {proc.poll()}")
            time.sleep(0.05)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    sig = getattr(signal, signal_name)
    os.killpg(proc.pid, sig)
    code, _, err = finish(proc)
    assert code == (130 if sig == signal.SIGINT else 143), err
    lines = err.strip().splitlines()
    how = "interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)"
    assert len(lines) == 1 and lines[0].startswith(f"rpztune run: {how}"), err
    found = optuna.load_study(study_name="numpy-mlp", storage=get_storage(storage)).get_trials(deepcopy=False)
    assert not [t.number for t in found if t.state == TrialState.RUNNING], "no trial is left RUNNING"
    reason = f"interrupted ({'Ctrl-C' if sig == signal.SIGINT else 'SIGTERM'})"
    failed = [t.user_attrs.get("fail_reason") for t in found if t.state == TrialState.FAIL]
    assert failed == [reason] * len(failed), failed


def finished(storage: str) -> list[int]:
    try:
        study = optuna.load_study(study_name="numpy-mlp", storage=get_storage(storage))
    except KeyError:  # not created yet
        return []
    return [t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
