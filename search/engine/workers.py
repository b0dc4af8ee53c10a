"""Worker processes on one study: a shared trial budget, thread limits, and replacing dead workers.

``work`` is one worker's loop (load data once, then run trials while the budget lasts). ``run_workers``
runs it in this process (one worker) or in N spawned processes, each with ``cores // N`` BLAS/torch
threads; when a worker dies, its RUNNING trials are failed and re-queued at once and a new worker
takes its place. Workers send progress events through their own pipe (a killed worker can only break
its own pipe, never the others').

Signals (``search/engine/interrupts.py``): SIGTERM is handled like Ctrl-C (``Terminated``, a
``KeyboardInterrupt``): the running trials end FAIL with the reason, and the command exits 143 (130 for
Ctrl-C). Workers start with both signals blocked, so one arriving while a worker still imports waits until it
can end the worker cleanly; the parent forwards a signal it alone got (``kill PID``) to its workers and waits
for them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

import optuna
from optuna.trial import TrialState

import objectives
from objectives.optuna_internals import backend_of, study_storage, trial_id
from objectives.training.allocator import keep_freed_memory, release_free_memory
from search.engine.algorithms import make_sampler
from search.engine.checkpoints import KeepTopCheckpoints
from search.engine.heartbeat import apply_heartbeat, taken_over, watching_stale_trials
from search.engine.interrupts import (
    INTERRUPTED,
    STOP_SIGNALS,
    StopGate,
    Terminated,
    describe,
    exit_code,
    raise_on_sigterm,
    raise_once,
    redeliver_dropped_interrupts,
    signals_deferred,
)
from search.engine.progress import ProgressBoard, WorkerProgress
from search.engine.recovery import recover_orphans, trials_lost_with, worker_identity
from search.engine.storage import StorageError, checkpoint_root, get_storage, study_dirname
from search.engine.write_behind import WriteBehindStorage, write_behind
from spaces import SpaceError

__all__ = [
    "DiskFull",
    "Terminated",
    "TrialBudget",
    "WorkerError",
    "WorkerSpec",
    "available_cores",
    "exit_code",
    "limit_threads",
    "raise_on_sigterm",
    "run_workers",
    "thread_env",
    "work",
]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_MAX_RESPAWNS_PER_WORKER = 3
OVERRUN_GRACE_S = 15.0  # a worker still training this long after the deadline is stopped by its parent
LATE_STARTS = 10  # new trials in a row too long to finish by the deadline: the worker stops drawing


class WorkerError(RuntimeError):
    """Every worker process failed to start (e.g. its data differs from the study's)."""


class DiskFull(WorkerError):
    """A trial could not write its files: the disk holding them is full."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to join a study (picklable)."""

    task: str
    study_name: str
    storage: str
    data: str | None
    space: dict[str, Any]
    sampler: str  # a name: each worker builds its sampler from its own seed
    pruner: optuna.pruners.BasePruner  # built once by the command (search/engine/algorithms.py)
    seed: int | None
    fingerprint: str | None
    checkpoints: str | None = None
    keep_top: int = 5
    device: str = "auto"
    threads: int | None = None
    deadline: float | None = None
    timeout: float | None = None
    timed_trials: bool = True  # trials see the deadline (TrialContext); else it only stops new trials
    heartbeat_grace: int | None = None
    workers: int = 1  # this run's workers on this machine: they share its RAM (the default memory cap)


class TrialBudget:
    """How many more trials this invocation may start, shared by its workers (``None``: no limit)."""

    def __init__(self, n_trials: int | None, context: Any = None) -> None:
        self._value = (context or mp).Value("q", -1 if n_trials is None else n_trials)

    def claim(self) -> bool:
        """Take one trial from the budget; ``False`` when it is spent."""
        with self._value.get_lock():
            if self._value.value == 0:
                return False
            if self._value.value > 0:
                self._value.value -= 1
            return True

    def refund(self, n: int) -> None:
        """Give back ``n`` trials (their worker died before finishing them)."""
        with self._value.get_lock():
            if self._value.value >= 0:
                self._value.value += n

    def remaining(self) -> int | None:
        """Trials left, or ``None`` for no limit."""
        value = self._value.value
        return None if value < 0 else value


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _share_ram(space: Any, workers: int) -> Any:
    """``space`` with an unset memory cap resolved for one of ``workers`` processes on this machine."""
    if "max_memory_mb" not in space.settings():
        return space  # numpy-mlp: no cap, and no torch import
    from objectives.training.memory import shared_cap

    return space.with_overrides(shared_cap(space.settings(), workers), origin="this machine's RAM")


def work(
    spec: WorkerSpec,
    budget: TrialBudget,
    index: int = 0,
    send: Callable[[tuple], None] | None = None,
    *,
    dataset: Any = None,
) -> int:
    """Run trials of ``spec``'s study until the budget or the deadline is spent; return how many ran.

    Args:
        dataset: The task's data when the caller already loaded it (else loaded here, once).

    Raises:
        DataError: when the data's fingerprint differs from the study's.
    """
    task = objectives.get_task(spec.task)  # imports the task's modules (torch), then limit their threads
    limit_threads(spec.threads)
    keep_freed_memory()  # torch steps reuse their large blocks (objectives/training/allocator.py)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_drop_interrupt_tracebacks)
    space = task.space.with_overrides(spec.space, origin="the study's stored space")
    data = dataset if dataset is not None else task.load_data(spec.data, space.settings())
    space = _share_ram(space, spec.workers)
    if spec.fingerprint is not None and data.fingerprint != spec.fingerprint:
        raise objectives.DataError(
            f"this worker's data ({data.source}) has fingerprint {data.fingerprint}, but study "
            f"{spec.study_name!r} was run on data with fingerprint {spec.fingerprint}; pass --data "
            "with the study's data"
        )
    backend = get_storage(spec.storage)
    apply_heartbeat(backend, spec.heartbeat_grace)
    storage = write_behind(backend)  # this worker's trials: fewer round trips
    n_existing = len(storage.get_all_trials(storage.get_study_id_from_name(spec.study_name), deepcopy=False))
    seed = None if spec.seed is None else spec.seed + 1000 * index + n_existing
    study = optuna.load_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(spec.sampler, seed),
        pruner=spec.pruner,
    )
    recover_orphans(study)
    ckpt_dir = checkpoint_root(spec.storage, spec.checkpoints) / study_dirname(spec.study_name)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    progress = WorkerProgress(index, send) if send is not None else None
    keeper = KeepTopCheckpoints(ckpt_dir, spec.keep_top)
    context = objectives.TrialContext(
        checkpoint_dir=ckpt_dir,
        device=spec.device,
        metric=task.metric,
        progress=progress and progress.epoch,
        keeps=lambda trial, value: keeper.could_keep(value),
        deadline=spec.deadline if spec.timed_trials else None,
        timeout=spec.timeout if spec.timed_trials else None,
    )
    identity = worker_identity()
    gate = StopGate()  # Ctrl-C / SIGTERM land in the trial's own code, never in Optuna's ask or tell
    current: dict[str, int] = {}  # the trial being run: its number and storage id
    out_of_time: list[int] = []  # a trial whose first rung could not end by the deadline: draw no more
    late: list[int] = []  # trials in a row too long to finish by the deadline (objectives.WouldOverrun)
    disk_full: list[str] = []  # a trial could not write: every later one would fail the same way
    threading.excepthook = _quiet_full_storage_threads

    def objective(trial: optuna.Trial) -> float:
        current.update(number=trial.number, id=trial_id(trial))
        trial.set_user_attr("worker", {**identity, "trial": trial.number})
        if isinstance(storage, WriteBehindStorage):
            storage.flush(trial_id(trial))  # recovery finds a dead worker's trial by this: write it now
        if progress is not None:
            progress.started(trial.number)
        try:
            with gate.open():
                return task.objective(trial, data, space, context)
        except objectives.OutOfTime:
            out_of_time.append(trial.number)
            raise
        except objectives.WouldOverrun:
            late.append(trial.number)
            if len(late) >= LATE_STARTS:
                out_of_time.append(trial.number)
            raise
        except (optuna.TrialPruned, optuna.exceptions.UpdateFinishedTrialError):
            raise  # the latter: another worker failed this trial meanwhile (see below)
        except Exception as exc:  # the trial fails (Optuna catches it); keep the reason with the trial
            if _storage_full(exc) or isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = spec.storage if _storage_full(exc) else getattr(exc, "filename", None) or ckpt_dir
                disk_full.append(f"no space left on the device holding {where}")
                optuna.logging.set_verbosity(optuna.logging.ERROR)  # the run ends with one line: below
                with contextlib.suppress(Exception):  # a full storage cannot take the reason either
                    trial.set_user_attr("fail_reason", disk_full[-1])
                raise
            trial.set_user_attr("fail_reason", _reason(exc))
            raise
        except KeyboardInterrupt as exc:  # Optuna fails the trial and re-raises
            trial.set_user_attr("fail_reason", f"interrupted ({describe(exc)})")
            # The run ends with the command's one line: Optuna's "Trial N failed with value None." warning
            # (logged without the traceback the filter below drops) is noise. The next work() resets it.
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            raise
        finally:
            if late and late[-1] != trial.number:
                late.clear()  # any other outcome breaks the run of late ones
            release_free_memory()

    callbacks: list[Any] = [keeper]
    if progress is not None:
        callbacks.append(progress)
    ran = 0
    with watching_stale_trials(study):  # a dead machine's trial fails within the grace, not at our next trial
        while (spec.deadline is None or time.time() < spec.deadline) and not out_of_time and budget.claim():
            current.clear()
            try:
                with gate.held():
                    study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
            # Another process failed this worker's trial meanwhile (its heartbeat did not reach the storage
            # within the grace, a recovery, a user's tell), so the trial's tell was rejected: Optuna raises
            # the rejection, or "Should not reach." when the objective had returned a value.
            except Exception as exc:
                if _storage_full(exc):  # nothing can be written, not even the trial's end
                    raise DiskFull(
                        f"no space left on the device holding the storage {spec.storage}; a trial left "
                        "RUNNING is failed by the next run once there is space"
                    ) from None
                taken = isinstance(
                    exc, ValueError | AssertionError | optuna.exceptions.UpdateFinishedTrialError
                )
                if not taken or not taken_over(study, current.get("id")):
                    raise
                print(
                    f"rpztune: {_taken_over_line(study, current['id'], current['number'])}", file=sys.stderr
                )
                budget.refund(1)
                continue
            if disk_full:
                raise DiskFull(
                    f"{disk_full[0]}; trial {current.get('number')} ended FAIL; free space to go on"
                )
            ran += 1
    return ran


def run_workers(
    spec: WorkerSpec, n_trials: int | None, n_workers: int, board: ProgressBoard, *, dataset: Any = None
) -> None:
    """Run ``n_trials`` trials (``None``: until the deadline or Ctrl-C) over ``n_workers`` workers.

    ``dataset`` (already loaded by the caller) is reused when the single worker runs in this process.

    Raises:
        KeyboardInterrupt: after every worker stopped and no trial of theirs is left RUNNING.
        WorkerError: when every worker process failed.
    """
    if n_workers < 1:
        raise ValueError(f"--workers must be at least 1, but got {n_workers}")
    spec = replace(spec, workers=n_workers)
    if n_workers == 1:
        send = board.update if board.enabled else None  # no per-trial best-value query for a silent board
        work(spec, TrialBudget(n_trials), 0, send, dataset=dataset)
        return
    context = mp.get_context("spawn")
    budget = TrialBudget(n_trials, context)
    pool = _Pool(spec, budget, context)
    try:
        with thread_env(spec.threads):
            for index in range(n_workers):
                pool.start(index)
        study = optuna.load_study(study_name=spec.study_name, storage=get_storage(spec.storage))
        pool.supervise(study, board)
    except KeyboardInterrupt as interrupt:
        pool.stop(interrupt)
        raise


class _Pool:
    """The parent's view of its worker processes and their pipes."""

    def __init__(self, spec: WorkerSpec, budget: TrialBudget, context: Any) -> None:
        self.spec, self.budget, self.context = spec, budget, context
        self.procs: dict[int, Any] = {}
        self.pipes: dict[int, Connection] = {}
        self.respawns: dict[int, int] = {}
        self.errors: list[str] = []
        self.finished_cleanly = False

    def start(self, index: int) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        proc = self.context.Process(
            target=_child_main, args=(self.spec, self.budget, index, writer), name=f"rpztune-worker-{index}"
        )
        with signals_deferred():  # a start cut short leaves a child that dies unpickling its task
            try:
                proc.start()
                self.procs[index], self.pipes[index] = proc, reader
            finally:
                writer.close()

    def supervise(self, study: optuna.Study, board: ProgressBoard) -> None:
        stopped = False
        while self.procs:
            late = self.spec.deadline is not None and time.time() > self.spec.deadline + OVERRUN_GRACE_S
            if late and not stopped:  # a trial that ignores the deadline: trials check it, this is the net
                stopped = True
                print(
                    f"rpztune: a trial was still running {OVERRUN_GRACE_S:.0f} s after the deadline; its "
                    "worker was stopped (the trial ends FAIL, interrupted)",
                    file=sys.stderr,
                )
                self.stop(Terminated("the run's deadline"))
            for reader in wait(list(self.pipes.values()), timeout=0.25):
                index = next(i for i, r in self.pipes.items() if r is reader)
                self._drain(index, board)
            for index, proc in list(self.procs.items()):
                if proc.exitcode is None:
                    continue
                self._drain(index, board)
                proc.join()
                del self.procs[index]
                self.pipes.pop(index).close()
                if proc.exitcode == 0:
                    self.finished_cleanly = True
                else:
                    self._replace(index, proc, study)
        if self.errors and not self.finished_cleanly:
            raise WorkerError("; ".join(dict.fromkeys(self.errors)))

    def _drain(self, index: int, board: ProgressBoard) -> None:
        reader = self.pipes.get(index)
        try:
            while reader is not None and reader.poll():
                message = reader.recv()
                if message[0] == "error":
                    self.errors.append(message[2])
                else:
                    board.update(message)
        except (EOFError, OSError, ValueError):
            pass  # the worker died mid-message or closed its end

    def _replace(self, index: int, proc: Any, study: optuna.Study) -> None:
        recover_orphans(study, pids={proc.pid})
        failed = trials_lost_with(study, proc.pid)  # a worker starting meanwhile may have failed them
        self.budget.refund(len(failed))
        self.respawns[index] = self.respawns.get(index, 0)
        if proc.exitcode in (2, *INTERRUPTED):  # refused its input, or was interrupted: do not respawn
            return
        print(
            f"rpztune: worker {index} (pid {proc.pid}) exited with code {proc.exitcode}; "
            f"failed and re-queued its running trials {failed or '(none)'}",
            file=sys.stderr,
        )
        out_of_time = self.spec.deadline is not None and time.time() >= self.spec.deadline
        if self.budget.remaining() == 0 or out_of_time or self.respawns[index] >= _MAX_RESPAWNS_PER_WORKER:
            return
        self.respawns[index] += 1
        with thread_env(self.spec.threads):
            self.start(index)

    def stop(self, interrupt: KeyboardInterrupt) -> None:
        """Pass the signal on, let each worker fail its running trial and exit, then fail what is left."""
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}  # stop runs to its end
        try:
            # A terminal's Ctrl-C reached the workers too; `kill PID` only this process. Workers end on the
            # first signal and ignore a second, so forwarding is always safe.
            sig = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
            for proc in self.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
            self._wait(30)
            for proc in self.procs.values():
                if proc.exitcode is None:
                    proc.kill()  # it ignores signals while it cleans up: hung
            self._wait(5)
            study = optuna.load_study(study_name=self.spec.study_name, storage=get_storage(self.spec.storage))
            recover_orphans(study, pids={proc.pid for proc in self.procs.values()})
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _wait(self, seconds: float) -> None:
        # Keep reading the pipes while waiting: a worker must never block on a full pipe as it ends.
        deadline = time.monotonic() + seconds
        while any(proc.exitcode is None for proc in self.procs.values()) and time.monotonic() < deadline:
            open_pipes = [reader for reader in self.pipes.values() if not reader.closed]
            wait([*open_pipes, *(proc.sentinel for proc in self.procs.values())], timeout=0.25)
            for reader in open_pipes:
                try:
                    while reader.poll():
                        reader.recv()
                except (EOFError, OSError, ValueError):
                    reader.close()  # the worker closed its end


def _child_main(spec: WorkerSpec, budget: TrialBudget, index: int, pipe: Connection) -> None:
    def send(message: tuple) -> None:
        try:
            pipe.send(message)
        except (BrokenPipeError, EOFError, OSError):
            raise Terminated("the rpztune parent process is gone") from None

    try:
        with redeliver_dropped_interrupts():
            for sig in STOP_SIGNALS:
                signal.signal(sig, raise_once)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a signal that came meanwhile lands now
            work(spec, budget, index, send)
    except KeyboardInterrupt as interrupt:
        sys.exit(exit_code(interrupt))
    except (SpaceError, StorageError, objectives.DataError, objectives.TaskError) as exc:
        pipe.send(("error", index, str(exc)))
        print(f"rpztune worker {index}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _taken_over_line(study: optuna.Study, trial: int, number: int) -> str:
    """What happened to this worker's trial ``number`` (storage id ``trial``) that another process failed."""
    stored = backend_of(study_storage(study)).get_trial(trial)
    reason = stored.user_attrs.get("fail_reason")
    retried = any(
        t.system_attrs.get("failed_trial") == number
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    )
    how = "was failed and re-queued by another worker" if retried else "was failed by another process"
    why = f" ({reason})" if reason else ""
    return f"trial {number} {how}{why} while this worker ran it; going on"


def _storage_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception behind it is SQLite's "database or disk is full"."""
    seen = 0
    while exc is not None and seen < 20:
        if "database or disk is full" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _quiet_full_storage_threads(args: threading.ExceptHookArgs) -> None:
    # Optuna's heartbeat thread dies with the full disk too; the worker reports it once, in one line.
    if not _storage_full(args.exc_value):
        threading.__excepthook__(args)


def _reason(exc: Exception) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _drop_interrupt_tracebacks(record: logging.LogRecord) -> bool:
    # Ctrl-C fails the running trial on purpose; Optuna's traceback for it is noise.
    return not (
        record.exc_info
        and record.exc_info[0] is not None
        and issubclass(record.exc_info[0], KeyboardInterrupt)
    )


def limit_threads(threads: int | None) -> None:
    """Limit this process's BLAS (and torch, when loaded) to ``threads`` threads (``None``: leave them)."""
    if threads is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@contextlib.contextmanager
def thread_env(threads: int | None) -> Iterator[None]:
    """Within the block, processes started see ``threads`` in the BLAS thread variables."""
    # Spawned children read these before their BLAS loads; restore the parent's environment afterwards.
    saved = {name: os.environ.get(name) for name in _THREAD_VARS}
    if threads is not None:
        os.environ.update({name: str(threads) for name in _THREAD_VARS})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
