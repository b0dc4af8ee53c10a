"""Ensembles of confirmed configurations: keep each confirmation replicate's held-out predictions, estimate
what averaging the top K configurations gains over the confirmed winner, and find the members' weights.

The estimate is paired and honest: every replicate (a fold for finetune, a seed on the fixed validation
images for mynet) trains each confirmed configuration apart and predicts the *same* held-out images, so
averaging the K members' probabilities per replicate gives the ensemble's held-out figure on that replicate,
compared with the winner's own on the same images. Nothing here sees a test split. The members are the
confirmed winner and the next K - 1 configurations of the confirmed ranking (best mean first). With flip
test-time augmentation (finetune) the ORIG part averages each member over the photo and its left-right
flip; AUG and NEW are scored without flips (their flipped copies are not kept: that would cost a backbone
pass per copy).

The predictions are files beside the study's checkpoints: ``confirm-predictions/<trial>-<replicate>.npz``
(see ``objectives/held_out.py`` for their parts), written by ``rpztune confirm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

import objectives
from objectives.files import replace_atomically
from objectives.replicate import Replicate
from search.engine.checkpoints import check_checkpoint, checkpoint_path

__all__ = [
    "ENSEMBLE_MOST",
    "PREDICTIONS_DIR",
    "EnsembleEstimate",
    "over_cpu_limit",
    "choose_ensemble",
    "chosen_ensemble",
    "estimate_ensemble",
    "member_weights",
    "predictions_file",
    "save_predictions",
    "store_choice",
]

PREDICTIONS_DIR = "confirm-predictions"


def predictions_file(folder: Path, confirm_key: str) -> Path:
    """Where the held-out predictions of one replicate (``confirm_key``: ``trial/replicate/seed``) live."""
    return folder / PREDICTIONS_DIR / (confirm_key.replace("/", "-") + ".npz")


def save_predictions(folder: Path, confirm_key: str, predictions: dict[str, tuple[Any, Any]]) -> Path:
    """Write one replicate's ``{part: (probabilities, labels)}`` atomically; return the file."""
    path = predictions_file(folder, confirm_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, (probs, labels) in predictions.items():
        arrays[part] = np.asarray(probs, dtype=np.float32)
        arrays[f"{part}_y"] = np.asarray(labels, dtype=np.int64)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez adds no ".npz" to its name
            np.savez(handle, **arrays)

    return replace_atomically(path, write)


@dataclass(frozen=True)
class EnsembleEstimate:
    """The winner and the ensemble of ``members`` scored on the same held-out images, one value a replicate.

    Args:
        members: Trial numbers, the confirmed winner first.
        scheme: ``"fold"`` or ``"seed"``.
        single: The winner's figure per replicate (the task's metric, higher is better).
        ensemble: The ensemble's figure per replicate.
        flip: Whether the ensemble averaged left-right flips too (finetune's ORIG part).
        metric: The figure's name.
    """

    members: tuple[int, ...]
    scheme: str
    single: tuple[float, ...]
    ensemble: tuple[float, ...]
    flip: bool
    metric: str

    @property
    def gains(self) -> tuple[float, ...]:
        """Ensemble minus winner, per replicate."""
        return tuple(e - s for e, s in zip(self.ensemble, self.single, strict=True))

    @property
    def gain(self) -> float:
        """Mean paired gain."""
        return sum(self.gains) / len(self.gains)

    @property
    def gain_se(self) -> float:
        """Standard error of the mean paired gain (0 for one replicate)."""
        n = len(self.gains)
        if n < 2:
            return 0.0
        return math.sqrt(sum((g - self.gain) ** 2 for g in self.gains) / (n - 1) / n)

    @property
    def helps(self) -> bool:
        """The rule for using the ensemble: its mean paired gain over the replicates is positive."""
        return self.gain > 0

    @property
    def beyond_noise(self) -> bool:
        """The confirmation rule: the mean paired gain is positive and above twice its standard error."""
        return self.gain > 0 and self.gain > 2 * self.gain_se

    def describe(self) -> str:
        """One line: members, both figures and the paired gain ± se."""
        what = (
            f"ensemble of trials {', '.join(map(str, self.members))}"
            if len(self.members) > 1
            else f"trial {self.members[0]} alone"
        ) + (" with flip TTA" if self.flip else "")
        return (
            f"{what}: held-out {self.metric} {np.mean(self.ensemble):.4f} vs the winner's "
            f"{np.mean(self.single):.4f} on the same {len(self.single)} confirmation {self.scheme}s, "
            f"paired gain {self.gain:+.4f} ± {self.gain_se:.4f} (mean ± se)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (``winner.json``)."""
        return {
            "members": list(self.members), "scheme": self.scheme, "metric": self.metric, "flip": self.flip,
            "single": list(self.single), "ensemble": list(self.ensemble), "gain": self.gain,
            "gain_se": self.gain_se, "helps": self.helps,
        }  # fmt: skip


def ensemble_members(study: optuna.Study, k: int, *, flip: bool = False) -> list[int]:
    """The confirmed winner and the next ``k - 1`` trials of the confirmed ranking.

    Raises:
        ValueError: when ``k < 2`` (``k < 1`` with ``flip``: the winner alone, over flips), the study is not
            confirmed, or fewer than ``k`` trials were confirmed.
    """
    if k < (1 if flip else 2):
        raise ValueError(f"--ensemble needs at least 2 members (1 with --tta flip), got {k}")
    record = study.user_attrs.get("confirm")
    if not record:
        raise ValueError(
            f"--ensemble {k}: study {study.study_name!r} is not confirmed; run rpztune confirm "
            f"--study {study.study_name} --top {k} first (the ensemble is chosen and scored on confirmation)"
        )
    ranked = [int(e["trial"]) for e in record["estimates"]]
    if len(ranked) < k:
        raise ValueError(
            f"--ensemble {k}: study {study.study_name!r} has {len(ranked)} confirmed configuration(s), "
            f"fewer than {k}; run rpztune confirm --study {study.study_name} --top {k}"
        )
    winner = int(record["winner"])
    return [winner, *[t for t in ranked if t != winner][: k - 1]]


def estimate_ensemble(study: optuna.Study, folder: Path, k: int, *, flip: bool = False) -> EnsembleEstimate:
    """Score the ensemble of the top ``k`` confirmed configurations against the winner on every replicate.

    Args:
        study: A confirmed mynet or finetune study.
        folder: The study's checkpoint folder (holding ``confirm-predictions/``).
        k: Members.
        flip: Average left-right flips too (finetune only).

    Raises:
        ValueError: for another task, ``flip`` with mynet, too few confirmed configurations, or missing
            prediction files (naming one and how to get them).
    """
    task = objectives.get_task(str(study.user_attrs.get("task")))
    hooks = task.ensembling
    if hooks is None:
        raise ValueError(f"--ensemble: a {task.name} study has no ensembles")
    if flip and hooks.flip is not None:
        raise ValueError(f"--tta flip does not apply to {task.name}: {hooks.flip}")
    members = ensemble_members(study, k, flip=flip)
    record = study.user_attrs["confirm"]
    scheme, count, seed = record["scheme"], int(record["count"]), int(study.user_attrs.get("seed", 0))
    single, ensemble = [], []
    for index in range(count):
        rep = Replicate(scheme, index, count, seed)
        loaded = [_load(folder, f"{trial}/{rep.key}/seed{rep.seed}", study.study_name) for trial in members]
        single.append(hooks.figure([loaded[0]], False))
        ensemble.append(hooks.figure(loaded, flip))
    return EnsembleEstimate(tuple(members), scheme, tuple(single), tuple(ensemble), flip, hooks.metric)


def _load(folder: Path, key: str, study_name: str) -> dict[str, np.ndarray]:
    path = predictions_file(folder, key)
    if not path.is_file():
        raise ValueError(
            f"no held-out predictions {path} for replicate {key} of {study_name!r} (confirmed before rpztune "
            "kept them, or elsewhere); delete the study's :confirm study and run rpztune confirm again"
        )
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def member_weights(study: optuna.Study, folder: Path, trials: list[int]) -> list[tuple[Path, str]]:
    """Each member's weights file (its refit when one is stored, else its own checkpoint) and a word for it.

    Raises:
        CheckpointError: when a member's checkpoint was not kept (``--keep-top``) or does not load.
    """
    all_trials = study.get_trials(deepcopy=False)
    found = []
    for number in trials:
        refit = study.user_attrs.get(f"refit:{number}")
        if refit and (folder / refit["checkpoint"]).is_file():
            path, source = folder / refit["checkpoint"], "refit"
        else:
            path, source = checkpoint_path(folder, all_trials[number]), "trial"
        what = f"ensemble member trial {number} of {study.study_name!r} (kept by --keep-top?)"
        found.append((check_checkpoint(path, what=what), source))
    return found


ENSEMBLE_MOST = 3  # the largest ensemble the pipeline tries: each member multiplies the evaluator's CPU time


def choose_ensemble(
    study: optuna.Study, folder: Path, *, most: int = ENSEMBLE_MOST
) -> tuple[EnsembleEstimate | None, list[EnsembleEstimate]]:
    """The ensemble of 2..``most`` top confirmed configurations (with and without flip TTA where the task
    allows it, and the winner alone with flip TTA) with the largest paired gain over the winner, when that
    gain exceeds twice its standard error over the confirmation replicates (the confirmation rule; ``None``:
    the winner alone, as trained) and its CPU cost stays within the study's limit (:func:`over_cpu_limit`);
    and every ensemble tried.

    Raises:
        ValueError: as :func:`estimate_ensemble` (a task without ensembles, too few confirmed
            configurations, missing predictions).
    """
    hooks = objectives.get_task(str(study.user_attrs.get("task"))).ensembling
    if hooks is None:
        raise ValueError(f"a {study.user_attrs.get('task')} study has no ensembles")
    confirmed = len((study.user_attrs.get("confirm") or {}).get("estimates", []))
    flips = (False, True) if hooks.flip is None else (False,)
    tried = [
        estimate_ensemble(study, folder, k, flip=flip)
        for k in range(1, min(most, confirmed) + 1)
        for flip in flips
        if k > 1 or flip
    ]
    trials = study.get_trials(deepcopy=False)
    gaining = [e for e in tried if e.beyond_noise and over_cpu_limit(trials, e) is None]
    return max(gaining, key=lambda e: e.gain, default=None), tried


def over_cpu_limit(trials: list[optuna.trial.FrozenTrial], estimate: EnsembleEstimate) -> str | None:
    """Why an ensemble's evaluation exceeds the CPU limit its trials ran under (``None``: it does not, or the
    trials recorded no cost or limit): the members' ``cpu_ms_per_100`` summed, twice with flip TTA, against
    the winner's ``cpu_limit_ms`` (the finetune task's limit, ``objectives/finetune/cpu_limit.py``)."""
    members = [trials[m].user_attrs for m in estimate.members]
    limit = members[0].get("cpu_limit_ms")
    costs = [attrs.get("cpu_ms_per_100") for attrs in members]
    if limit is None or None in costs:
        return None
    cost = sum(costs) * (2 if estimate.flip else 1)
    if cost <= limit:
        return None
    return f"CPU {cost:.0f} ms per 100 images at 1 thread exceeds the limit of {limit:.0f} ms"


def store_choice(study: optuna.Study, estimate: EnsembleEstimate | None) -> None:
    """Record the chosen ensemble (``None``: the winner alone) in the study's confirmation record, so a new
    confirmation, which replaces the record, forgets it."""
    record = dict(study.user_attrs.get("confirm") or {})
    if record:
        record["ensemble"] = None if estimate is None else estimate.to_dict()
        study.set_user_attr("confirm", record)


def chosen_ensemble(study: optuna.Study) -> dict[str, Any] | None:
    """The ensemble the pipeline chose for the study's confirmation (``None``: the winner alone)."""
    return (study.user_attrs.get("confirm") or {}).get("ensemble")
