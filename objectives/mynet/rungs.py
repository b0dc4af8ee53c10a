"""Train one mynet configuration rung by rung (see :mod:`objectives.rung_pruner`).

Each rung trains a complete schedule of its epochs -- from a fresh initialisation (``retrain``; every rung
draws the trial's seed, so the top rung is the run a refit repeats) or from the previous rung's weights
under a schedule spanning the remaining epochs (``continue``) -- validates its last epoch on all the
validation images (a decision) and its other epochs on the subset (the curves), then reports the last
epoch's accuracy with ``step`` = the rung's epochs and asks the pruner. The top rung's last epoch is the
trial's value.

With a ``--timeout`` a rung that would end after the run's deadline does not start
(:func:`objectives.training.time_plan.rung_overruns`): the first on an estimate made before training, a
promotion on the seconds per epoch the rung before measured. The trial ends pruned at the rung it reached; one
that cannot even start ends :class:`objectives.OutOfTime`, and its worker starts no more trials. A new trial
that could train its first rung but, on the estimate, not all its rungs ends :class:`objectives.WouldOverrun`
before training (its worker draws again): only a finished trial can win, so the rung would be spent for
nothing.

Whatever the estimates said, training asks :meth:`TrialContext.out_of_time` before every step. When the
deadline comes in a rung, that rung is abandoned: a trial with a complete rung ends with the last one (its
value, epochs and weights: only a rung's last epoch is validated on all the images), one without ends
:class:`objectives.DeadlineReached`; either records ``deadline_stop``.

The training state is saved after every epoch with the rung it belongs to, the records of the rungs before
it and the last complete rung's weights, so a retry of a trial whose worker died replays those rungs to the
pruner and continues the rung it was in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
import torch
from torch import nn

from nn_numpy import Diverged
from objectives.mynet.validation import Validation
from objectives.rung_pruner import EPOCH_SECONDS_ATTR, RungPlan
from objectives.task import DeadlineReached, OutOfTime, TrialContext, WouldOverrun
from objectives.training.fit import EpochStats, Unlabelled, cpu_state, fit
from objectives.training.resume import Resume
from objectives.training.time_plan import EpochCost, rung_overruns
from spaces.mynet import MyNetTrialConfig

__all__ = ["RungsResult", "train_by_rungs"]

CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "lr")


@dataclass
class RungsResult:
    """The trained model (the last complete rung's final weights: the top rung's unless the deadline
    stopped the trial), the records of the complete rungs, the trial's curves."""

    model: nn.Module
    rungs: list[dict[str, Any]]
    curves: dict[str, list[float]]


def train_by_rungs(
    trial: optuna.Trial,
    build: Callable[[], nn.Module],
    cfg: MyNetTrialConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: Validation,
    plan: RungPlan,
    promotion: str,
    *,
    context: TrialContext,
    resume: Resume,
    seed: int,
    estimate: EpochCost | None = None,
    unlabelled: Unlabelled | None = None,
) -> RungsResult:
    """Train ``cfg`` through the rungs of ``plan`` until the pruner stops it or the top rung ends.

    Args:
        trial: Reports once per rung (``step`` = its epochs).
        build: A freshly initialised model on the data's device (called after seeding torch).
        cfg: The configuration (its ``train.epochs`` is ignored: each rung sets its own).
        train: Training images and labels on the device.
        validation: The trial's validation images; each rung's last epoch uses all of them.
        plan: The rungs.
        promotion: ``"retrain"`` or ``"continue"``.
        context: The trial's context (reports, progress, the deadline training stops at).
        resume: The trial's saved state; a retry continues the rung its predecessor was in.
        seed: The trial's seed.
        estimate: The estimated cost of an epoch before any rung measured one (``None``: the first rung
            starts whatever the time left); recorded as the trial's ``epoch_estimate`` (the mean seconds
            of its epochs, validation included).
        unlabelled: Unlabelled images for consistency training (``fit``'s), or ``None``.

    Returns:
        The result once the top rung has ended, or once the deadline came in a rung after another had ended
        (the last complete rung is the result; nothing more is reported).

    Raises:
        optuna.TrialPruned: when the pruner stops the trial, training diverges or the next rung would end
            after the deadline (:class:`objectives.OutOfTime`, :class:`objectives.WouldOverrun` before the
            first rung), or the deadline comes before a rung has ended (:class:`objectives.DeadlineReached`);
            the trial's ``rungs``, ``curves``, ``prune_reason`` and ``pruned_epoch`` (the epochs of the rung
            it reached) are recorded first.
    """
    rungs = plan.epochs
    records: list[dict[str, Any]] = []
    first = 0
    completed: dict[str, torch.Tensor] | None = None  # the last complete rung's weights (on the CPU)
    state = resume.state
    if state is not None:
        records, first = list(state["rungs"]), int(state["rung"])
        completed = state.get("rung_state")
        for record in records:  # the pruner sees the rungs the predecessor passed (promoted then: not asked)
            trial.set_user_attr(EPOCH_SECONDS_ATTR, _epoch_seconds(record))
            trial.report(record["val_accuracy"], record["epochs"])
            trial.should_prune()  # records the rung's value, so the next report is compared in the next rung
    trained = [
        rungs[i] - (rungs[i - 1] if promotion == "continue" and i > 0 else 0) for i in range(len(rungs))
    ]
    # each rung's estimated seconds, validation included (none without an estimate)
    planned = (
        [] if estimate is None else [estimate.seconds(e, validation.validated_images(e)) for e in trained]
    )
    if planned:
        trial.set_user_attr("epoch_estimate", round(sum(planned) / sum(trained), 2))
    if state is None and (late := _late_start(planned, trained, context.seconds_left())):
        raise _pruned(trial, context, [], 0, late[1], error=late[0])
    model: nn.Module | None = None
    for index in range(first, len(rungs)):
        mode = "retrain" if promotion == "retrain" or index == 0 else "continue"
        epochs = trained[index]
        if mode == "retrain" or model is None:  # continue after a resume: the state holds the weights
            torch.manual_seed(seed)
            model = build()
        curves: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}

        def on_epoch(stats: EpochStats, curves: dict[str, list[float]] = curves) -> None:
            for key, values in curves.items():
                values.append(float(getattr(stats, key)))
            if context.progress is not None:
                context.progress(trial.number, stats.epoch, stats.val_accuracy)

        def save(
            training: dict[str, Any],
            index: int = index,
            completed: dict[str, torch.Tensor] | None = completed,
        ) -> None:
            resume.save({**training, "rung": index, "rungs": records, "rung_state": completed})

        own = state if state is not None and index == first else None
        if records or own is not None:  # a new trial's first rung was checked before the loop
            seconds = (
                _epoch_seconds(records[-1]) if records else (planned[index] / epochs if planned else None)
            )
            left = context.seconds_left()
            done = len(own["history"]) if own is not None else 0
            if (
                seconds is not None
                and left is not None
                and (late := rung_overruns(seconds, left, epochs - done))
            ):
                error = optuna.TrialPruned if records else OutOfTime
                raise _pruned(
                    trial, context, records, records[-1]["epochs"] if records else 0, late, error=error
                )
        for stats in own["history"] if own is not None else []:
            on_epoch(EpochStats(**stats))
        try:
            result = fit(
                model,
                replace(cfg.train, epochs=epochs),
                cfg.augment,
                train,
                replace(validation, full_epochs=frozenset({epochs})).at,
                generator=torch.Generator(device=train[0].device).manual_seed(seed),
                on_epoch=on_epoch,
                resume=own,
                save_progress=save,
                stop=context.out_of_time,
                unlabelled=unlabelled,
            )
        except Diverged as exc:  # keep what the rung ran
            diverged = {"epochs": rungs[index], "mode": mode, "curves": curves, "diverged": True}
            raise _pruned(trial, context, [*records, diverged], rungs[index], str(exc)) from None
        if result.stopped_in is not None:
            where = f"in epoch {result.stopped_in} of {epochs} of rung {index + 1}"
            if mode == "continue":
                where += f" (continuing rung {index} to {rungs[index]} epochs)"
            if completed is None:  # no complete rung (or a retry of a file without its weights)
                why = "no complete rung" if not records else f"rung {index}'s weights were not saved"
                context.stopped_by_deadline(trial, f"{where}: {why}")
                stopped = {"epochs": rungs[index], "mode": mode, "curves": curves, "deadline": True}
                raise _pruned(
                    trial,
                    context,
                    [*records, stopped],
                    rungs[index],
                    f"the run's deadline came {where}: {why}",
                    error=DeadlineReached,
                )
            ended = f"completed with rung {index} ({_epochs(records[-1]['epochs'])})"
            context.stopped_by_deadline(trial, f"{where}; {ended}")
            model.load_state_dict(completed)
            break
        last = result.history[-1]
        records.append(
            {
                "epochs": rungs[index],
                "trained_epochs": epochs,
                "mode": mode,
                "val_accuracy": float(last.val_accuracy),
                "val_loss": float(last.val_loss),
                "train_seconds": round(sum(s.seconds for s in result.history), 3),
                "last_lr": result.last_lr,
                "curves": curves,
            }
        )
        if index == len(rungs) - 1:
            trial.report(float(last.val_accuracy), rungs[index])
            break
        completed = cpu_state(model)
        trial.set_user_attr(EPOCH_SECONDS_ATTR, _epoch_seconds(records[-1]))  # a cost-aware pruner reads it
        try:
            context.report(trial, float(last.val_accuracy), rungs[index])
        except optuna.TrialPruned as exc:
            raise _pruned(trial, context, records, rungs[index], str(exc)) from None
    assert model is not None
    return RungsResult(model, records, _trial_curves(records))


def _late_start(
    planned: list[float], trained: list[int], left: float | None
) -> tuple[type[optuna.TrialPruned], str] | None:
    """Why a new trial does not start, from its rungs' ``planned`` seconds and ``trained`` epochs: its first
    rung cannot end by the deadline (:class:`OutOfTime`), or not all its rungs can (:class:`WouldOverrun`)."""
    if not planned or left is None:
        return None
    if late := rung_overruns(planned[0] / trained[0], left, trained[0]):
        return OutOfTime, late
    if late := rung_overruns(sum(planned) / sum(trained), left, sum(trained), finish=True):
        return WouldOverrun, late
    return None


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _epoch_seconds(record: dict[str, Any]) -> float:
    return round(record["train_seconds"] / max(1, record["trained_epochs"]), 4)


def _trial_curves(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The curves of the training behind the last rung's weights: that rung's (retrain), or all rungs'
    since the last re-training (continue); empty before the first rung."""
    start = max((i for i, record in enumerate(records) if record["mode"] == "retrain"), default=len(records))
    return {key: [v for record in records[start:] for v in record["curves"][key]] for key in CURVE_KEYS}


def _pruned(
    trial: optuna.Trial,
    context: TrialContext,
    records: list[dict[str, Any]],
    epochs: int,
    reason: str,
    *,
    error: type[optuna.TrialPruned] = optuna.TrialPruned,
) -> optuna.TrialPruned:
    """The ``error`` stopping the trial, its record written."""
    trial.set_user_attr("rungs", records)
    trial.set_user_attr("epochs_trained", sum(len(r["curves"]["train_loss"]) for r in records))
    stop = context.pruned(trial, _trial_curves(records), reason, error=error)
    trial.set_user_attr("pruned_epoch", epochs)
    return stop
