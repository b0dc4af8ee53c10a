"""Ctrl-C and SIGTERM as exceptions: what a run does on a stop signal, and a signal Python would drop.

SIGTERM is handled like Ctrl-C: it raises :class:`Terminated`, a ``KeyboardInterrupt``, so the same clean-up
(running trials end FAIL with the reason) serves both, and the command exits 143 (130 for Ctrl-C).

A signal's handler runs in the main thread at the next bytecode, wherever that is. Inside a weakref
callback, a ``__del__`` or a garbage-collector callback, Python cannot raise: it prints "Exception ignored
in ..." and drops the exception, and the stop would be lost (a worker had by then set its handlers to
ignore a second signal). :func:`redeliver_dropped_interrupts` turns such a dropped interrupt into the
same signal again, so its handler raises at the next bytecode of ordinary code instead.

A signal is also never raised inside Optuna's own bookkeeping of a trial (``ask``, ``tell``, the storage
writes between them): an interrupt raised there leaves the trial RUNNING or breaks Optuna's clean-up
(``UnboundLocalError: ... 'updated_state'`` from ``_run_trial``). :class:`StopGate` holds a stop signal
while a trial is being set up or told, and raises it only inside the trial's own code (the objective,
where the trial then ends FAIL with :func:`describe`'s reason) or once Optuna is done with the trial.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = [
    "INTERRUPTED",
    "STOP_SIGNALS",
    "StopGate",
    "Terminated",
    "describe",
    "exit_code",
    "forward_and_wait",
    "raise_on_sigterm",
    "raise_once",
    "redeliver_dropped_interrupts",
    "signals_deferred",
]

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
INTERRUPTED = (130, 143)  # a worker's exit code after Ctrl-C / SIGTERM
_REDELIVERY_DELAY = 0.01  # seconds


class Terminated(KeyboardInterrupt):
    """SIGTERM (or the loss of the parent process), handled like Ctrl-C."""


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's exit code for an interrupt: 143 after SIGTERM, 130 after Ctrl-C."""
    return 143 if isinstance(interrupt, Terminated) else 130


def describe(interrupt: KeyboardInterrupt) -> str:
    """What stopped the process, for a trial's ``fail_reason``: ``Ctrl-C``, ``SIGTERM``, or the reason a
    :class:`Terminated` carries (e.g. the parent process is gone)."""
    return str(interrupt) or ("SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C")


class StopGate:
    """Ctrl-C and SIGTERM raised only where a trial's own code runs, held while Optuna keeps its books.

    ``with gate.held():`` around ``study.optimize`` (or an ask ... tell) puts the gate in front of the
    handlers in place; a stop signal arriving there is recorded, and ``with gate.open():`` around the
    objective's code raises it: on entry when one is pending, at once when it arrives inside. One that
    arrives after the objective (Optuna tells the trial, runs callbacks) is raised when ``held`` ends, once
    the trial is stored. The handler found in place raises it (e.g. :func:`raise_once`), so a process's
    own rules (ignore a second signal) still hold. Outside the main thread the gate does nothing.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._pending: int | None = None
        self._open = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._pending, self._open = None, False
        self._previous = {
            sig: handler for sig in STOP_SIGNALS if callable(handler := signal.getsignal(sig))
        }  # an ignored signal stays ignored
        for sig in self._previous:
            signal.signal(sig, self._handle)
        ended = False
        try:
            yield
            ended = True
        finally:
            for sig, handler in self._previous.items():
                if signal.getsignal(sig) == self._handle:  # a handler that set SIG_IGN meanwhile keeps it
                    signal.signal(sig, handler)
        pending, self._pending = self._pending, None
        if ended and pending is not None:  # an interrupt already on its way needs no second one
            self._previous[pending](pending, None)

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        if not self._previous:  # not held (another thread, or no handler to defer to)
            yield
            return
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._previous[pending](pending, None)
        self._open = True
        try:
            yield
        finally:
            self._open = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self._open:
            self._open = False  # a second signal while the trial is failed is only recorded
            self._previous[signum](signum, frame)
        elif self._pending is None:
            self._pending = signum


def forward_and_wait(procs: list[Any], interrupt: KeyboardInterrupt, seconds: float = 30) -> None:
    """Pass a stop signal on to child processes (``multiprocessing`` processes), wait for them to end their
    work and exit, and kill those that hang; the signals are ignored meanwhile, so the wait runs to its end.

    A terminal's Ctrl-C reached the children too, ``kill PID`` only this process: children that end on the
    first signal and ignore a second make forwarding always safe."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        sig = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
        for proc in procs:
            if proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
        for proc in procs:
            proc.join(seconds)  # each waits at most this long after the one before it ended
        for proc in procs:
            if proc.exitcode is None:
                proc.kill()  # it ignores signals while it cleans up: hung
                proc.join(5)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (then the old handler), and
    an interrupt Python drops is delivered again (:func:`redeliver_dropped_interrupts`)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (an embedding application keeps its own)
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with redeliver_dropped_interrupts():
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def raise_once(signum: int, frame: Any) -> None:
    """A worker's handler for both stop signals: raise the interrupt, ignoring the signals from then on."""
    # A worker ends on the first signal; a second (the terminal's and the parent's copy of one Ctrl-C) must
    # not interrupt the clean-up that marks its trial FAIL.
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise them as usual.

    The block also runs with both signals blocked in this thread, which a spawned child inherits: a signal
    during its imports stays pending until the child can end cleanly. Another thread of this process (a
    BLAS pool) may still take the signal, so the handlers only record it meanwhile.
    """
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal pending here is recorded too
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])


@contextlib.contextmanager
def redeliver_dropped_interrupts() -> Iterator[None]:
    """Within the block, an interrupt raised where Python drops exceptions (a weakref callback, ``__del__``)
    is not lost: the same signal comes again a moment later, and a one-shot handler puts back the handler it
    found and raises the interrupt in the code that was running. Other dropped exceptions are reported as
    before."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        interrupt = unraisable.exc_value
        if (
            not isinstance(interrupt, KeyboardInterrupt)
            or threading.current_thread() is not threading.main_thread()
        ):
            previous(unraisable)
            return
        sig = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
        found = signal.getsignal(sig)

        def again(signum: int, frame: Any) -> None:
            signal.signal(sig, found)
            raise interrupt

        signal.signal(sig, again)
        # Raised now, the signal's handler would run inside this hook, where Python drops it again: send it
        # from another thread a moment later, when the main thread is back in the code that was interrupted.
        timer = threading.Timer(_REDELIVERY_DELAY, os.kill, (os.getpid(), sig))
        timer.daemon = True  # never holds up the exit it is there to bring about
        timer.start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM")
