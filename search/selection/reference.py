"""The confirmation's reference: the study's baseline trial, confirmed beside the top K.

A study's first trial is its task's fixed, known-good configuration (``Task.baseline``, enqueued with user
attribute ``baseline``; for finetune the lite0 linear probe at 224 px). ``rpztune confirm`` re-trains it on
the same folds or seeds as the top-K trials, so the confirmed winner is measured against *not searching*
with the noise of the folds paired out: the gain is the mean of the per-replicate differences (same fold,
same held-out images), its standard error that of those differences. The noise-aware rule
(``search.selection.winner.RULE``) sees the baseline like any other trial, so it can pick it.

Also here: the mean ± standard error of each part of a replicate's figure (e.g. a finetune replicate's
``orig_acc``, ``aug_acc``, ``new_acc``), stored beside the estimates.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.selection.winner import Estimate

__all__ = ["compare", "describe", "reference_trial", "replicate_parts", "with_reference"]

_PART_SUFFIX = "_acc"
_VERBS = {"beats": "beats", "ties": "ties with", "loses": "loses to"}


def reference_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's completed baseline trial (user attr ``baseline``) with a stored configuration, or ``None``
    (a study run with ``--no-baseline``, a task without one, or a baseline that did not complete)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("baseline") and "config" in trial.user_attrs:
            return trial
    return None


def with_reference(leaders: list[FrozenTrial], reference: FrozenTrial | None) -> list[FrozenTrial]:
    """``leaders`` plus the reference when it is not one of them."""
    if reference is None or reference.number in {t.number for t in leaders}:
        return list(leaders)
    return [*leaders, reference]


def compare(winner: Estimate, reference: Estimate, direction: str, metric: str = "value") -> dict[str, Any]:
    """The winner against the reference on the same replicates (a JSON-ready record; ``line``: it in words).

    ``gain`` is positive when the winner is better in the task's ``direction``; ``gain_se`` is the standard
    error of the paired per-replicate differences; ``verdict`` is ``"beats"`` (gain above one se), ``"loses"``
    (below minus one se), ``"ties"`` or ``"is"`` (the winner is the reference).
    """
    sign = -1.0 if direction == "minimize" else 1.0
    diffs = [sign * (w - r) for w, r in zip(winner.values, reference.values, strict=True)]
    gain = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    if winner.trial == reference.trial:
        verdict = "is"
    elif gain > se:
        verdict = "beats"
    elif gain < -se:
        verdict = "loses"
    else:
        verdict = "ties"
    record = {
        "trial": reference.trial,
        "mean": reference.mean,
        "se": reference.se,
        "winner_mean": winner.mean,
        "winner_se": winner.se,
        "gain": gain,
        "gain_se": se,
        "wins": sum(d > 0 for d in diffs),
        "n": len(diffs),
        "verdict": verdict,
    }
    return record | {"line": describe(record, metric)}


def describe(record: dict[str, Any], metric: str = "value") -> str:
    """One line: the confirmed winner against the baseline, from a :func:`compare` record."""
    if record["verdict"] == "is":
        return (
            f"the confirmed winner is the baseline (trial {record['trial']}, the task's fixed "
            "configuration): no searched configuration beat it beyond the noise"
        )
    verb = _VERBS[record["verdict"]]
    return (
        f"against the baseline (trial {record['trial']}, the task's fixed configuration) on the same "
        f"{record['n']} replicates: {metric} {record['winner_mean']:.4f} ± {record['winner_se']:.4f} vs "
        f"{record['mean']:.4f} ± {record['se']:.4f} (mean ± se), gain {record['gain']:+.4f} ± "
        f"{record['gain_se']:.4f} (paired se), better in {record['wins']} of {record['n']}: the search "
        f"{verb} not searching"
    )


def replicate_parts(
    cstudy: optuna.Study, trials: list[int], plan: tuple[str, int, int]
) -> dict[str, dict[str, list[float]]]:
    """Per confirmed trial (keyed by its number as a string), ``[mean, se]`` over its replicates of every
    ``*_acc`` part they recorded (each replicate index counted once, as in the estimates; ``plan``:
    scheme, count, plan seed)."""
    seen: dict[int, dict[int, dict[str, Any]]] = {}
    for trial in cstudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if (attrs.get("scheme"), attrs.get("count"), attrs.get("plan_seed")) != plan:
            continue
        seen.setdefault(int(attrs["confirm_of"]), {}).setdefault(int(attrs["index"]), attrs)
    out: dict[str, dict[str, list[float]]] = {}
    for number in trials:
        reps = list(seen.get(number, {}).values())
        names = sorted({k for r in reps for k in r if k.endswith(_PART_SUFFIX)})
        parts = {}
        for name in names:
            values = [float(r[name]) for r in reps if r.get(name) is not None]
            if values:
                se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
                parts[name] = [statistics.fmean(values), se]
        if parts:
            out[str(number)] = parts
    return out
