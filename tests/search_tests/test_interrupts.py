"""A stop signal whose handler runs inside a weakref callback or ``__del__`` (where Python drops exceptions)
still stops the process, with its exit code and no "Exception ignored" on stderr."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

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
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, signal_name, where],
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
