"""``rpztune run``: search → confirm the top trials against the reference → refit the winner → ensemble
where confirmation shows a gain, inside one wall-clock budget (:mod:`search.pipeline.budget`).

The pipeline's progress is the search study's ``pipeline`` attribute: the stages of the current round
that are done and the seconds each took (the ensemble chosen is kept with the confirmation it was chosen on,
:func:`search.selection.ensemble.store_choice`). A run killed in a stage continues with that
stage when run again (the search and the confirmation resume their own trials); a run after a finished
round starts a new one (more search, then a fresh confirmation of the enlarged study).
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from optuna.trial import FrozenTrial

import objectives
from search.engine.storage import DEFAULT_STORAGE, storage_exists
from search.engine.study import RunSummary, StudyError, load_study, run_study, study_dir, summarize
from search.pipeline.budget import STAGES, Budget
from search.selection.reference import with_reference

__all__ = [
    "PIPELINE_ATTR",
    "PipelineResult",
    "confirm_plan",
    "fewer_replicates_plan",
    "prep_seconds",
    "replicate_seconds",
    "run_pipeline",
]

PIPELINE_ATTR = "pipeline"
_SAFETY = 1.25  # a planned replicate or refit must fit this many times its estimate
_REPLICATE_OVERHEAD_S = 1.0  # a replicate's own start and end: taking it from the queue, storing its record
MIN_REPLICATES = 3  # fewer give a spread from one degree of freedom: too rough to rank two configurations


@dataclass
class PipelineResult:
    """What one ``run`` did: the search's summary, each stage's outcome in words, the time it took."""

    summary: RunSummary
    searched: bool = False  # this run searched (``on_search`` saw its summary)
    lines: list[str] = field(default_factory=list)
    time_line: str = ""


def run_pipeline(
    task_name: str,
    *,
    stages: Sequence[str] = STAGES,
    timeout: float | None = None,
    n_trials: int | None = None,
    started: float | None = None,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    data: str | None = None,
    workers: int = 1,
    device: str = "auto",
    checkpoints: str | None = None,
    top: int | None = None,
    log: Callable[[str], None] = lambda line: None,
    on_search: Callable[[RunSummary], None] = lambda summary: None,
    **search: Any,
) -> PipelineResult:
    """Run the pipeline's ``stages`` of ``task_name``'s study within ``timeout`` seconds from ``started``.

    Args:
        stages: Some of :data:`search.pipeline.budget.STAGES` (``("search",)``: the search alone).
        timeout: The whole command's budget (``None``: the search runs ``n_trials``, the rest untimed).
        n_trials: The search's trials (``None``: until its share of the budget ends).
        started: When the command started (``time.time()``; default: now).
        top: Confirm at most this many trials (default: the task's ``budget.top``).
        log: Called with each stage's lines as they come.
        on_search: Called with the search's summary when it ends.
        search: The rest of :func:`search.engine.study.run_study`'s arguments (sampler, space, ...).

    Raises:
        What ``run_study``, ``confirm`` and ``refit`` raise on bad input, before anything is written.
    """
    task = objectives.get_task(task_name)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--timeout must be positive, but got {timeout}")
    if study_name is not None and not study_name.strip():
        raise StudyError("--study must name a study (leave it out to use the task's name)")
    name = study_name or task.name
    shares = task.budget if top is None else replace(task.budget, top=top)
    budget = Budget(shares, stages, timeout, started or time.time())
    record = _resume(storage, name, stages)
    scheme = task.confirmation.default if task.confirmation is not None else None
    log(budget.plan(scheme if "confirm" in stages else None) + _resuming(record))
    result = PipelineResult(summary=None)  # type: ignore[arg-type]  # set by the search or below
    if "search" in stages and "search" not in record["done"]:
        began = time.time()
        deadline = budget.deadline("search")
        result.summary = run_study(
            task_name, study_name=name, storage=storage, data=data, n_trials=n_trials,
            timeout=None if deadline is None else max(1.0, deadline - began), deadline=deadline,
            workers=workers, device=device, checkpoints=checkpoints, **search,
        )  # fmt: skip
        budget.record("search", began)
        _mark(storage, name, record, "search", budget)
        result.searched = True
        on_search(result.summary)
    else:
        result.summary = summarize(load_study(storage, name), storage)
    if result.summary.best_trial is None:
        reasons = sorted(result.summary.reasons.items(), key=lambda item: -item[1])
        why = f"; the most frequent end: {reasons[0][1]} × {reasons[0][0]}" if reasons else ""
        result.lines.append(f"no completed trial: nothing to confirm, refit or export{why}")
        log(result.lines[-1])
        result.time_line = budget.where_it_went()
        return result
    for stage, step in (("confirm", _confirm), ("refit", _refit), ("ensemble", _ensemble)):
        if stage not in stages or stage in record["done"]:
            continue
        began = time.time()
        line = step(task, storage, name, budget, workers=workers, device=device, data=data,
                    checkpoints=checkpoints, log=log)  # fmt: skip
        budget.record(stage, began)
        _mark(storage, name, record, stage, budget, line)
        result.lines.append(line)
        log(line)
    result.time_line = budget.where_it_went()
    return result


def replicate_seconds(trial: FrozenTrial) -> float:
    """A confirmation replicate (or refit) of ``trial`` is estimated at its own training seconds (its whole
    duration when it did not record them), less the one-off preparation it paid (``prep_seconds``, e.g. a
    probe's feature extraction: see :func:`prep_seconds`), over the folds it cross-validated on: a replicate
    trains the configuration once."""
    seconds = trial.user_attrs.get("train_seconds")
    if seconds is None and trial.duration is not None:
        seconds = trial.duration.total_seconds()
    seconds = max(0.0, float(seconds or 0.0) - float(trial.user_attrs.get("prep_seconds", 0.0)))
    return seconds / max(1, int(trial.user_attrs.get("folds", 1)))


def prep_seconds(trials: Sequence[FrozenTrial], factor: float) -> dict[str, float]:
    """The one-off preparation each ``prep_key`` of the study needs before its replicates: the most a trial
    of that key paid (``prep_seconds``: the trial that missed the cache) times the task's
    ``Confirmation.prep_factor`` (its replicates prepare more images than a trial)."""
    most: dict[str, float] = {}
    for t in trials:
        key = t.user_attrs.get("prep_key")
        if key is not None:
            most[key] = max(most.get(key, 0.0), float(t.user_attrs.get("prep_seconds", 0.0)))
    return {key: factor * seconds for key, seconds in most.items()}


def confirm_plan(
    leaders: list[FrozenTrial],
    reference: FrozenTrial | None,
    count: int,
    workers: int,
    seconds: float | None,
    most: int,
    overhead: float = 0.0,
    prep: dict[str, float] | None = None,
) -> tuple[int, float]:
    """The most of the ``leaders`` (best first, at most ``most``) whose ``count`` replicates each, with the
    reference's, fit in ``seconds`` (``overhead`` of them before training, and the one-off ``prep`` of each
    ``prep_key`` among them, :func:`prep_seconds`) on ``workers`` processes; and the estimated seconds (0:
    none fits; no budget: ``most``)."""
    best = (0, 0.0)
    for top in range(1, min(most, len(leaders)) + 1):
        chosen = with_reference(leaders[:top], reference)  # as confirm adds it
        if len(chosen) < 2:
            continue  # one configuration alone is not a comparison: the next top adds one
        each = max(replicate_seconds(t) for t in chosen)
        rounds = -(-len(chosen) * count // workers)
        keys = {t.user_attrs.get("prep_key") for t in chosen} - {None}
        setup = sum((prep or {}).get(key, 0.0) for key in keys)
        needed = overhead + _SAFETY * (setup + rounds * (each + _REPLICATE_OVERHEAD_S))
        if seconds is None or needed <= seconds:
            best = (top, needed)
    return best


def fewer_replicates_plan(plan: Callable[[int], tuple[int, float]], count: int) -> tuple[int, int, float]:
    """``(top, replicates, seconds)``: ``plan(replicates)`` (:func:`confirm_plan` with all but the count
    bound) with the task's ``count`` replicates, or, when not even two configurations fit (an expensive
    leader: a fine-tune trial's replicate is a whole training), with fewer, down to :data:`MIN_REPLICATES`;
    ``(0, count, 0.0)`` when none fits."""
    for replicates in range(count, min(count, MIN_REPLICATES) - 1, -1):
        top, needed = plan(replicates)
        if top:
            return top, replicates, needed
    return 0, count, 0.0


def _confirm(task: objectives.Task, storage: str, name: str, budget: Budget, **options: Any) -> str:
    from search.selection.confirm import confirm, default_plan, top_trials
    from search.selection.reference import reference_trial

    if task.confirmation is None:
        return f"confirm: {task.name} has no confirmation"
    study = load_study(storage, name)
    scheme, count = default_plan(task)
    deadline = budget.deadline("confirm")
    leaders = top_trials(study, budget.shares.top)
    reference = reference_trial(study)
    prep = prep_seconds(study.get_trials(deepcopy=False), task.confirmation.prep_factor)
    planned = count
    seconds = None if deadline is None else deadline - time.time()
    top, count, needed = fewer_replicates_plan(
        lambda n: confirm_plan(
            leaders,
            reference,
            n,
            options["workers"],
            seconds,
            budget.shares.top,
            budget.shares.overhead_s,
            prep,
        ),
        count,
    )
    if len({t.number for t in leaders} | ({reference.number} if reference is not None else set())) < 2:
        return (
            "confirm: skipped: one configuration completed, nothing to compare it with; it stays unconfirmed"
        )
    if top == 0:
        left = "" if deadline is None else f" in the {deadline - time.time():.0f} s left for it"
        each = max((replicate_seconds(t) for t in leaders[:2]), default=0.0)
        setup = sum(prep.get(k, 0.0) for k in {t.user_attrs.get("prep_key") for t in leaders[:2]} - {None})
        before = f" after ≈ {setup:.0f} s of preparation" if setup else ""
        return (
            f"confirm: skipped: {min(count, MIN_REPLICATES)} {scheme}s of two configurations "
            f"(≈ {each:.0f} s a replicate"
            f"{before}) do not fit{left}; the winner stays unconfirmed"
        )
    log = options["log"]
    left = "" if deadline is None else f", ≈ {needed:.0f} s of the {deadline - time.time():.0f} s left for it"
    extra = reference is not None and reference.number not in {t.number for t in leaders[:top]}
    fewer = f" (of {planned}: more do not fit)" if count < planned else ""
    log(f"confirm: the top {top} × {count}{fewer} {scheme}s{' and the reference' if extra else ''}{left}")
    replicates = {"folds": count} if scheme == "fold" else {"seeds": count}
    result = confirm(
        storage, name, top=top, workers=options["workers"], data=options["data"], device=options["device"],
        deadline=deadline, log=log, **replicates,
    )  # fmt: skip
    winner = next(e for e in result.ranking if e.trial == result.winner.trial)
    line = (
        f"confirm: winner trial {winner.trial}: {task.metric} {winner.mean:.4f} ± {winner.sd:.4f} over "
        f"{result.count} {result.scheme}s ({result.reason})"
    )
    return line + ("" if result.reference is None else f"; {result.reference['line']}")


def _refit(task: objectives.Task, storage: str, name: str, budget: Budget, **options: Any) -> str:
    from objectives.hooks import RefitRequest
    from search.selection.refit import refit
    from search.selection.winner import find_trial

    if task.refit is None:
        return f"refit: {task.name} has no refit"
    study, trial = find_trial(storage, name, None)
    deadline = budget.deadline("refit")
    settings = dict(study.user_attrs.get("settings", {}))
    teachers = _teachers(task, study, study_dir(storage, name, options["checkpoints"]))

    def estimate(request: RefitRequest) -> float:
        seconds = task.refit.seconds(trial, request) if task.refit.seconds else replicate_seconds(trial)
        return budget.shares.overhead_s + _SAFETY * seconds

    distilled = estimate(RefitRequest(settings=settings, teachers=teachers)) if teachers else math.inf
    plain = estimate(RefitRequest(settings=settings))
    left = math.inf if deadline is None else deadline - time.time()
    if plain > left and distilled > left:
        return (
            f"refit: skipped: trial {trial.number}'s refit (≈ {plain:.0f} s) does not fit in the "
            f"{left:.0f} s left; export writes the trial's own weights"
        )
    count = len(teachers) if teachers and distilled <= left else None
    try:
        done = refit(
            storage, name, trial.number, data=options["data"], device=options["device"],
            checkpoints=options["checkpoints"], deadline=deadline, teachers=count,
        )  # fmt: skip
    except objectives.DeadlineReached as stop:
        return f"refit: stopped at its deadline ({stop}); export writes trial {trial.number}'s own weights"
    taught = done.record.get("teachers")
    return (
        f"refit: trial {done.trial}, {done.record['epochs']} epochs on {done.record['n_train']} images "
        + (f"distilled from trials {', '.join(map(str, taught))} " if taught else "")
        + f"in {done.record['seconds']:.0f} s"
        + (
            f" (distilling from {len(teachers)} trials, ≈ {distilled:.0f} s, did not fit)"
            if teachers and not taught
            else ""
        )
    )


def _teachers(task: objectives.Task, study: Any, folder: Any) -> list:
    """The trials the task's refit is distilled from by default (``Refit.teachers``; at least 2 with a usable
    checkpoint, else none)."""
    from search.engine.checkpoints import CheckpointError
    from search.selection.refit import teacher_trials

    if task.refit is None or not task.refit.teachers:
        return []
    for count in range(task.refit.teachers, 1, -1):
        try:
            return teacher_trials(study, folder, count)
        except (StudyError, CheckpointError):
            continue
    return []


def _ensemble(task: objectives.Task, storage: str, name: str, budget: Budget, **options: Any) -> str:
    from search.selection.ensemble import choose_ensemble, over_cpu_limit, store_choice

    study = load_study(storage, name)
    if task.ensembling is None:
        return f"ensemble: none ({task.name} has no ensembles)"
    confirmed = len((study.user_attrs.get("confirm") or {}).get("estimates", []))
    if confirmed < (1 if task.ensembling.flip is None else 2):  # flip TTA: the winner alone is a candidate
        return f"ensemble: none ({confirmed} confirmed configuration(s))"
    try:
        best, tried = choose_ensemble(study, study_dir(storage, name, options["checkpoints"]))
    except ValueError as exc:  # a replicate's predictions are missing
        return f"ensemble: none ({exc})"
    store_choice(study, best)
    if best is None:
        top = max(tried, key=lambda e: e.gain)
        why = over_cpu_limit(study.get_trials(deepcopy=False), top) if top.beyond_noise else None
        return (
            f"ensemble: none (the best, {top.describe()}, {why or 'is not above twice its standard error'})"
        )
    return f"ensemble: chosen: {best.describe()}; export and submit write it"


def _resume(storage: str, name: str, stages: Sequence[str]) -> dict[str, Any]:
    """The pipeline record to continue: the stored one while its round is unfinished, else a new round."""
    stored: dict[str, Any] = {}
    if storage_exists(storage):
        try:
            stored = dict(load_study(storage, name).user_attrs.get(PIPELINE_ATTR) or {})
        except Exception:  # no study yet: the search creates it
            stored = {}
    done = list(stored.get("done", []))
    unfinished = stored.get("stages") == list(stages) and set(done) < set(stages)
    return {
        "round": int(stored.get("round", 0)) + (0 if unfinished else 1),
        "stages": list(stages),
        "done": done if unfinished else [],
        "spent": dict(stored.get("spent", {})) if unfinished else {},
    }


def _resuming(record: dict[str, Any]) -> str:
    if not record["done"]:
        return ""
    return f" (continuing round {record['round']}: {', '.join(record['done'])} done before)"


def _mark(
    storage: str, name: str, record: dict[str, Any], stage: str, budget: Budget, line: str | None = None
) -> None:
    """Store that ``stage`` is done in this round (a rerun after a kill skips it)."""
    study = load_study(storage, name)
    stored = dict(study.user_attrs.get(PIPELINE_ATTR) or {})
    record["done"].append(stage)
    record["spent"][stage] = round(record["spent"].get(stage, 0.0) + budget.spent.get(stage, 0.0), 1)
    if line is not None:
        record.setdefault("lines", {})[stage] = line
    record["updated"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    study.set_user_attr(PIPELINE_ATTR, {**stored, **record})
