"""Confirmation: re-train a study's top-K configurations on fresh folds or seeds, then pick the winner by a
noise-aware rule (:data:`search.selection.winner.RULE`).

Design: every re-training (a *replicate*: one configuration on one fold or seed) is one trial of a separate
Optuna study ``<study>:confirm`` linked to the search study (study attributes ``confirm_of`` there and
``confirm_study`` here). Replicates are enqueued as WAITING trials carrying their key (``confirm_key``:
source trial, fold/seed, plan seed) and are taken with ``study.ask()``, which claims a WAITING trial
atomically, so any number of processes or machines on the same storage share the queue like the search's
workers. A killed run leaves its replicate RUNNING: the next run fails it (``recovery.recover_orphans``) and
re-queues it, so confirmation resumes where it stopped, and a replicate counts once however often it ran.
A separate study keeps the search study as it was: its best value, sampler history, pruner rungs, the
``--keep-top`` checkpoints and its report never see values measured on other folds.

The estimates (mean ± sd per configuration), the ranking, the winner and why it won are stored in the search
study's attribute ``confirm``; ``export``, ``submit`` and ``evaluate`` then use that winner. The winner is
refit on all training data when its task has a cheap refit (numpy-mlp: every training image for the
confirmed epoch count; finetune: every photo); mynet's refit stays ``rpztune refit`` (minutes).
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing as mp
import os
import signal
import socket
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import objectives
from objectives.optuna_internals import study_storage, trial_id
from objectives.replicate import Replicate
from objectives.training.allocator import keep_freed_memory, release_free_memory
from objectives.training.memory import shared_cap, track_peak_rss
from search.engine.interrupts import (
    STOP_SIGNALS,
    StopGate,
    Terminated,
    describe,
    exit_code,
    forward_and_wait,
    raise_once,
    redeliver_dropped_interrupts,
    signals_deferred,
)
from search.engine.recovery import recover_orphans, worker_identity
from search.engine.storage import get_storage
from search.engine.study import StudyError, load_study, study_dir
from search.engine.workers import available_cores, limit_threads, thread_env
from search.selection import reference as ref
from search.selection.ensemble import save_predictions
from search.selection.winner import RULE, Estimate, choose_confirmed, complexity

__all__ = [
    "CONFIRM_SUFFIX",
    "ConfirmResult",
    "confirm",
    "confirm_study_name",
    "default_plan",
    "estimates",
    "top_trials",
]

CONFIRM_SUFFIX = ":confirm"
_STALE_S = 120  # a RUNNING replicate that never recorded its worker (killed right after ask()) is given up
_POLL_S = 1.0  # how often a confirmation looks at the replicates another process is training


@dataclass
class ConfirmResult:
    """A finished confirmation: the plan, how many replicates this run trained, the estimates and winner,
    and the winner against the study's baseline (``search/selection/reference.py``; ``None`` without one)."""

    study: str
    confirm_study: str
    scheme: str
    count: int
    trained: int
    ranking: list[Estimate]
    winner: Estimate
    reason: str
    reference: dict[str, Any] | None = None


def confirm_study_name(study_name: str) -> str:
    """The Optuna study holding ``study_name``'s confirmation replicates."""
    return study_name + CONFIRM_SUFFIX


def default_plan(
    task: objectives.Task, folds: int | None = None, seeds: int | None = None
) -> tuple[str, int]:
    """``("fold", F)`` or ``("seed", R)`` for ``task``: the asked one, else the task's default.

    Raises:
        ValueError: for both, a count below 2, or a scheme the task cannot confirm with.
    """
    if folds is not None and seeds is not None:
        raise ValueError("give --folds or --seeds, not both")
    if task.confirmation is None:
        raise ValueError(f"task {task.name!r} has no confirmation")
    schemes = task.confirmation.schemes
    scheme, count = task.confirmation.default
    if folds is not None:
        scheme, count = "fold", folds
    if seeds is not None:
        scheme, count = "seed", seeds
    if count < 2:
        raise ValueError(f"--{scheme}s must be at least 2 (a spread needs two replicates), got {count}")
    if scheme not in schemes:
        raise ValueError(f"{task.name} confirms over {' or '.join(s + 's' for s in schemes)}, not {scheme}s")
    return scheme, count


def confirm(
    storage: str,
    study_name: str,
    *,
    top: int = 5,
    folds: int | None = None,
    seeds: int | None = None,
    workers: int = 1,
    data: str | None = None,
    device: str = "auto",
    deadline: float | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> ConfirmResult:
    """Re-train the ``top`` best completed trials of a study on ``folds`` folds or ``seeds`` seeds (default
    per task: 5 folds, mynet 2 seeds), store the estimates and the confirmed winner in the study.

    Runs the replicates not done yet (resuming a killed confirmation); ``workers`` processes share them.
    With a ``deadline`` (``time.time()``, the pipeline's budget) the replicates run in child processes
    that start none after it and are stopped at it (their replicates fail as interrupted and a later
    confirmation re-queues them); the winner is then chosen among the trials whose replicates all ended,
    and the record says which were left out (``partial``).

    Raises:
        StudyError: when the study is missing, not rpztune's, has no completed trial, or ``data`` differs.
        ValueError: for a bad plan, ``top`` or ``workers``.
    """
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    study = load_study(storage, study_name)
    attrs = study.user_attrs
    if "task" not in attrs:
        raise StudyError(f"study {study_name!r} was not made by rpztune (it has no task)")
    task = objectives.get_task(attrs["task"])
    scheme, count = default_plan(task, folds, seeds)
    baseline = ref.reference_trial(study)
    leaders = ref.with_reference(top_trials(study, top), baseline)
    plan_seed = int(attrs.get("seed", 0))
    data = data if data is not None else attrs.get("data")
    dataset = _load_checked(study, task, data)

    optuna.logging.set_verbosity(logging.WARNING)
    cstudy = optuna.create_study(
        study_name=confirm_study_name(study_name),
        storage=get_storage(storage),
        direction=task.direction,
        load_if_exists=True,
    )
    cstudy.set_user_attr("confirm_of", study_name)
    cstudy.set_user_attr("task", task.name)
    cstudy.set_user_attr("metric", task.metric)
    study.set_user_attr("confirm_study", cstudy.study_name)
    _recover(cstudy)
    queued = _enqueue_missing(cstudy, leaders, scheme, count, plan_seed)
    numbers = ", ".join(str(t.number) for t in leaders)
    extra = "" if baseline is None else f"; the baseline, trial {baseline.number}, is the reference"
    log(
        f"confirming the top {top} trials of {study_name!r} ({numbers}) over {count} {scheme}s{extra}: "
        f"{queued} replicates to train"
    )
    done_before = {t.number for t in cstudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    pids: set[int] = set()
    waiting_for: list[int] = []
    while True:  # another confirm of this study may share the queue: train what is queued, then wait for it
        if queued or cstudy.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            job = (storage, study_name, cstudy.study_name, data, device)
            pids |= _run(job, workers, dataset, deadline)
        queued = 0
        running = _running(cstudy, leaders, scheme, count, plan_seed)
        if not running or (deadline is not None and time.time() >= deadline):
            break
        if running != waiting_for:
            waiting_for = running
            log(
                f"waiting for replicates {running} of {cstudy.study_name!r}: another process is training them"
            )
        time.sleep(_POLL_S)
        _recover(cstudy)  # a dead local process's replicate is re-queued, and this run trains it
    trained = _trained_by(cstudy, pids, done_before)

    found = estimates(study, cstudy, leaders, scheme, count, plan_seed)
    missing = [t.number for t in leaders if t.number not in {e.trial for e in found}]
    if missing and deadline is not None and found:
        log(f"the deadline came before trials {missing} had all their replicates: ranked without them")
        if baseline is not None and baseline.number in missing:
            baseline = None
    elif missing:
        raise StudyError(
            f"confirmation of {study_name!r} is incomplete: trials {missing} lack replicates (failed ones "
            f"say why in {cstudy.study_name!r}); run rpztune confirm again"
        )
    winner, ranking, reason = choose_confirmed(found, task.direction)
    base = None if baseline is None else next(e for e in found if e.trial == baseline.number)
    versus = None if base is None else ref.compare(winner, base, task.direction, task.metric)
    study.set_user_attr(
        "confirm",
        {
            "study": cstudy.study_name,
            "scheme": scheme,
            "count": count,
            "top": [t.number for t in leaders],
            "estimates": [e.to_dict() for e in ranking],
            "winner": winner.trial,
            "reason": reason,
            "reference": versus,
            "parts": ref.replicate_parts(cstudy, [t.number for t in leaders], (scheme, count, plan_seed)),
            "rule": RULE,
            "partial": missing,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    return ConfirmResult(
        study_name, cstudy.study_name, scheme, count, trained, ranking, winner, reason, versus
    )


def estimates(
    study: optuna.Study,
    cstudy: optuna.Study,
    leaders: list[FrozenTrial],
    scheme: str,
    count: int,
    plan_seed: int,
) -> list[Estimate]:
    """The complete estimates of ``leaders`` under one plan: each replicate counted once (the first that
    completed), a trial without all its replicates left out."""
    values: dict[int, dict[int, dict[str, Any]]] = {}
    for trial in cstudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if (attrs.get("scheme"), attrs.get("count"), attrs.get("plan_seed")) != (scheme, count, plan_seed):
            continue
        values.setdefault(int(attrs["confirm_of"]), {}).setdefault(
            int(attrs["index"]), attrs | {"v": trial.value}
        )
    found = []
    for leader in leaders:
        reps = values.get(leader.number, {})
        if len(reps) < count:
            continue
        ordered = [reps[i] for i in sorted(reps)]
        found.append(
            Estimate(
                trial=leader.number,
                values=tuple(float(r["v"]) for r in ordered),
                epochs=int(statistics.median_high(int(r.get("best_epoch") or 1) for r in ordered)),
                complexity=complexity(leader),
                search_value=float(leader.value),
            )
        )
    return found


def top_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials of ``study`` (ties: the earlier first).

    Raises:
        StudyError: when it has none.
    """
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "config" in t.user_attrs
    ]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no completed trial to confirm")
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    return sorted(complete, key=lambda t: (sign * t.value, t.number))[:top]


def _key(trial: int, rep: Replicate) -> str:
    return f"{trial}/{rep.key}/seed{rep.seed}"


def _running(
    cstudy: optuna.Study, leaders: list[FrozenTrial], scheme: str, count: int, seed: int
) -> list[int]:
    """The numbers of the plan's replicates that are RUNNING (another process trains them)."""
    keys = {_key(t.number, Replicate(scheme, i, count, seed)) for t in leaders for i in range(count)}
    return [
        t.number
        for t in cstudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("confirm_key") in keys
    ]


def _trained_by(cstudy: optuna.Study, pids: set[int], before: set[int]) -> int:
    """How many replicates this host's processes ``pids`` completed, leaving out those done ``before``."""
    host = socket.gethostname()
    count = 0
    for trial in cstudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        worker = trial.user_attrs.get("worker") or {}
        if trial.number not in before and worker.get("host") == host and worker.get("pid") in pids:
            count += 1
    return count


def _recover(cstudy: optuna.Study) -> None:
    """Fail (and re-queue) the replicates of dead local processes; give up RUNNING ones without a worker."""
    recover_orphans(cstudy)
    storage = study_storage(cstudy)
    now = datetime.datetime.now()
    for trial in cstudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" in trial.user_attrs or trial.datetime_start is None:
            continue
        if (now - trial.datetime_start).total_seconds() > _STALE_S:
            try:
                storage.set_trial_user_attr(
                    trial_id(trial), "fail_reason", "killed before it recorded a worker"
                )
                storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


def _enqueue_missing(
    cstudy: optuna.Study, leaders: list[FrozenTrial], scheme: str, count: int, seed: int
) -> int:
    """Queue every replicate of the plan that is neither done, queued nor running; return how many."""
    live = {
        t.user_attrs.get("confirm_key")
        for t in cstudy.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    }
    queued = 0
    for leader in leaders:
        for index in range(count):
            rep = Replicate(scheme, index, count, seed)
            if _key(leader.number, rep) in live:
                continue
            cstudy.enqueue_trial(
                {},
                user_attrs={
                    "confirm_key": _key(leader.number, rep),
                    "confirm_of": leader.number,
                    "scheme": scheme,
                    "index": index,
                    "count": count,
                    "plan_seed": seed,
                    "config": leader.user_attrs["config"],
                },
            )
            queued += 1
    return queued


def _load_checked(study: optuna.Study, task: objectives.Task, data: str | None) -> Any:
    dataset = task.load_data(data, dict(study.user_attrs.get("settings", {})))
    if dataset.fingerprint != study.user_attrs.get("data_fingerprint"):
        raise StudyError(
            f"study {study.study_name!r} was run on data {study.user_attrs.get('data_source')}, but "
            f"{dataset.source} has another fingerprint; pass the study's --data"
        )
    return dataset


def _run(job: tuple, workers: int, dataset: Any, deadline: float | None = None) -> set[int]:
    """Train the queued replicates of ``job`` in this process or ``workers`` spawned ones; return their pids.

    Ctrl-C or SIGTERM: each process fails its running replicate (``interrupted (...)``) and exits; the
    signal is passed on to the workers (``kill PID`` reached this process only), and a worker that is gone
    without failing its replicate has it failed here; then the interrupt goes on to the command.
    A ``deadline`` is kept the same way: the workers (spawned even for one) start no replicate after it,
    and those still training at it are sent SIGTERM."""
    if workers == 1 and deadline is None:
        _work(*job, threads=None, dataset=dataset)
        return {os.getpid()}
    threads = max(1, available_cores() // workers)
    context = mp.get_context("spawn")
    procs: list[Any] = []
    try:
        with thread_env(threads):
            share = {"threads": threads, "workers": workers, "deadline": deadline}
            for _ in range(workers):
                proc = context.Process(target=_child_main, args=job, kwargs=share)
                with signals_deferred():  # the child starts with the signals blocked (workers.py does so)
                    proc.start()
                    procs.append(proc)
        for proc in procs:
            proc.join(None if deadline is None else max(0.0, deadline - time.time()))
        if any(proc.exitcode is None for proc in procs):  # the deadline came: stop them as Ctrl-C would
            forward_and_wait(procs, Terminated())
            _recover_from(job, procs)
    except KeyboardInterrupt as interrupt:
        forward_and_wait(procs, interrupt)
        _recover_from(job, procs)
        raise
    return {proc.pid for proc in procs}


def _recover_from(job: tuple, procs: list[Any]) -> None:
    """Fail the replicates the stopped ``procs`` left RUNNING (the next confirmation re-queues them)."""
    storage, _, confirm_name = job[:3]
    recover_orphans(
        optuna.load_study(study_name=confirm_name, storage=get_storage(storage)),
        pids={proc.pid for proc in procs},
    )


def _child_main(*job: Any, **options: Any) -> None:
    """A spawned confirmation worker: the stop signals raise once (then are ignored while the replicate is
    failed), and an interrupt ends the process with the shell's code, without a traceback."""
    logging.getLogger("sqlalchemy").addHandler(logging.NullHandler())  # as search/cli.py's main
    try:
        with redeliver_dropped_interrupts():
            for sig in STOP_SIGNALS:
                signal.signal(sig, raise_once)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a signal that came meanwhile lands now
            _work(*job, **options)
    except KeyboardInterrupt as interrupt:
        sys.exit(exit_code(interrupt))


def _work(
    storage: str,
    study_name: str,
    confirm_name: str,
    data: str | None,
    device: str,
    *,
    threads: int | None,
    workers: int = 1,
    dataset: Any = None,
    deadline: float | None = None,
) -> int:
    """Train queued replicates until none is left or the ``deadline`` has passed (one of ``workers``
    processes); return how many this process trained."""
    optuna.logging.set_verbosity(logging.WARNING)
    # replicates are claimed with ask()/tell(); a dead process's are recovered by the next confirm run
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    study = load_study(storage, study_name)
    task = objectives.get_task(study.user_attrs["task"])
    limit_threads(threads or task.max_threads)  # numpy-mlp: one BLAS thread, as its search workers
    keep_freed_memory()  # as a search worker (objectives/training/allocator.py)
    settings = dict(study.user_attrs.get("settings", {}))
    dataset = dataset if dataset is not None else _load_checked(study, task, data)
    settings.update(shared_cap(settings, workers))  # the workers share this machine's RAM
    cstudy = optuna.load_study(
        study_name=confirm_name, storage=get_storage(storage), sampler=optuna.samplers.RandomSampler()
    )
    sources = {t.number: t for t in study.get_trials(deepcopy=False)}
    retrain = task.confirmation.replicate
    identity = worker_identity()
    gate = StopGate()  # Ctrl-C / SIGTERM land in the re-training, never between ask() and tell()
    trained = 0
    while cstudy.get_trials(deepcopy=False, states=(TrialState.WAITING,)) and (
        deadline is None or time.time() < deadline
    ):
        with gate.held():
            trial = cstudy.ask()
            trial.set_user_attr("worker", {**identity, "trial": trial.number})
            if "confirm_key" not in trial.user_attrs:  # another process took the last queued one first
                trial.set_user_attr("fail_reason", "no replicate left in the queue")
                cstudy.tell(trial, state=TrialState.FAIL)
                break
            attrs = trial.user_attrs
            rep = Replicate(
                attrs["scheme"], int(attrs["index"]), int(attrs["count"]), int(attrs["plan_seed"])
            )
            started = time.perf_counter()
            try:
                with track_peak_rss(trial), gate.open():
                    record = retrain(sources[int(attrs["confirm_of"])], dataset, rep, settings, device)
            except KeyboardInterrupt as interrupt:  # ends FAIL, never RUNNING; the next run retries it
                trial.set_user_attr("fail_reason", f"interrupted ({describe(interrupt)})")
                cstudy.tell(trial, state=TrialState.FAIL)
                raise
            except Exception as exc:  # one replicate fails; the others go on, and the next run retries it
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
                cstudy.tell(trial, state=TrialState.FAIL)
                continue
            finally:
                release_free_memory()
            predictions = record.pop("predictions", None)
            if predictions is not None:  # kept for ensembles (search/selection/ensemble.py)
                save_predictions(study_dir(storage, study_name), attrs["confirm_key"], predictions)
            for name, value in record.items():
                trial.set_user_attr(name, value)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            cstudy.tell(trial, record["value"])
            trained += 1
    return trained
