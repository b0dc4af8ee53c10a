"""The finetune task's staged search: many linear probes on cached features, then fine-tuning of the leaders.

One study, two stages, told apart by the trial user attribute ``stage`` (``probe`` / ``finetune``):

1. **probe**: ``freeze=linear``, no augmentation, the head trains on cached backbone features (seconds once
   cached; the cache on disk is shared by all workers). The first probe enqueues a grid of backbone x
   resolution with a sensible linear head (Optuna's ``enqueue_trial``), highest resolution first; the
   sampler draws the probes after it (backbone, resolution, head, optimiser). Probes report their epochs but
   are never pruned: once the features are cached there is nothing left to save.
2. **finetune**: once ``probe_trials`` probes are complete, or once no more than ``finetune_share`` of a
   ``--timeout`` run's time is left, a trial that finds no fine-tune trial waiting (itself a probe, seconds)
   enqueues one for each of the ``finetune_top`` best probe configurations: the probe's backbone,
   resolution and head fixed, ``freeze=last_k``; a leader's first fine-tune trial trains the sensible
   :data:`FINETUNE_RECIPE`, later ones draw the rest from the sampler. A fine-tune trial starts from its
   probe's trained head (user attr ``warm_start``) and sizes its epochs to the time left
   (``objectives/training/time_plan.py``); it reports its epochs but is not pruned (see :meth:`Stage.report`).

Without both kinds of freezing in the space (e.g. ``--set freeze=linear``) or with ``--set stages=false`` the
study is single-stage, as before; ``stage`` still says whether a trial was a probe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from objectives.task import TrialContext
from objectives.training.fit import save_state
from spaces import Choice, Space
from spaces.finetune import BASELINE

__all__ = ["Stage", "assign_stage", "head_digest", "load_probe_head", "save_probe_head"]

PROBE, FINETUNE = "probe", "finetune"
PROBE_FIXED = {"freeze": "linear", "augment": "none", "mix": "none"}
# The grid's other keys: those of the task's sensible baseline probe.
GRID_DEFAULTS = {k: v for k, v in BASELINE.items() if k not in ("backbone", "resolution", *PROBE_FIXED)}
MODEL_KEYS = ("backbone", "resolution", "head", "hidden", "dropout")
LEADER_KEYS = ("backbone", "resolution")  # leaders differ in these: two heads of one backbone teach little
# A leader's first fine-tune trial: the last backbone stage trains at 0.3x the warm-started head's rate;
# TrivialAugment covers most of the AUG part's imaging conditions (brightness, contrast, rotation, sharpness).
FINETUNE_RECIPE = {
    "freeze": "last_k",
    "freeze_k": 1,
    "backbone_lr_scale": 0.3,
    "augment": "trivial",
    "mix": "none",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 32,
    "label_smoothing": 0.0,
}


@dataclass(frozen=True)
class Stage:
    """A trial's stage, the space it draws from and, for a fine-tune trial, the probe it starts from."""

    name: str
    space: Space
    warm_start: int | None = None

    def report(self, context: TrialContext, trial: optuna.Trial, value: float, epoch: int) -> None:
        """Report an epoch. A probe is never pruned (its features are cached: nothing to save), nor is a
        staged fine-tune trial: its epochs are sized to the run's time, and the study's pruner would judge
        it against the probes' curves, another kind of training (it pruned the recipe at epoch 3 of 4)."""
        if self.name == PROBE or self.warm_start is not None:
            trial.report(value, epoch)
            if context.progress is not None:
                context.progress(trial.number, epoch, value)
            return
        context.report(trial, value, epoch)


def is_staged(space: Space) -> bool:
    """Whether ``space`` searches in stages: ``stages`` on, ``freeze`` drawing linear and another policy."""
    spec = space["freeze"]
    choices = set(spec.choices) if isinstance(spec, Choice) else {spec}
    return bool(space.settings().get("stages", True)) and "linear" in choices and len(choices) > 1


def assign_stage(
    trial: optuna.Trial,
    space: Space,
    offered: list[str],
    seconds_left: float | None = None,
    timeout: float | None = None,
) -> Stage:
    """The stage of ``trial`` (recorded as user attr ``stage``), enqueuing the probe grid and the fine-tune
    trials of the leading probes when their time has come (``offered``: backbones with weights;
    ``seconds_left`` of the run's ``timeout``, when it has one)."""
    if trial.user_attrs.get("stage") == FINETUNE:
        return Stage(FINETUNE, space, warm_start=trial.user_attrs.get("warm_start_from"))
    if not is_staged(space):
        return Stage("single", space)
    trial.set_user_attr("stage", PROBE)
    probe_space = space.with_overrides(
        {k: v for k, v in PROBE_FIXED.items() if k in space.params}, origin="the probe stage"
    )
    study = trial.study
    if "probe_grid" not in study.user_attrs:
        study.set_user_attr("probe_grid", True)
        known = [t.params for t in study.get_trials(deepcopy=False)]
        for params in _grid(probe_space, offered):
            if not any(all(p.get(k) == v for k, v in params.items()) for p in known):  # e.g. the baseline
                study.enqueue_trial(params, user_attrs={"stage": PROBE})
    late = seconds_left is not None and timeout is not None and seconds_left <= _share(space) * timeout
    _enqueue_finetunes(study, space, late)
    return Stage(PROBE, probe_space)


def _grid(space: Space, offered: list[str]) -> list[dict[str, Any]]:
    """Backbone x resolution probes with :data:`GRID_DEFAULTS`, highest resolution first."""
    spec = space["resolution"]
    resolutions = sorted(spec.choices if isinstance(spec, Choice) else [spec], reverse=True)
    grid = [
        space.searched({"backbone": b, "resolution": r, **GRID_DEFAULTS})
        for r in resolutions
        for b in offered
    ]
    return grid[: int(space.settings().get("probe_trials", 24))]


def _share(space: Space) -> float:
    return float(space.settings().get("finetune_share", 0.6))


def _enqueue_finetunes(study: optuna.Study, space: Space, late: bool) -> None:
    """Enqueue fine-tuning of the leading probes once enough probes completed (or, ``late``, once the run's
    fine-tuning share of its time has come and at least one probe completed)."""
    settings = space.settings()
    trials = study.get_trials(deepcopy=False)
    probes = [t for t in trials if t.user_attrs.get("stage") == PROBE and t.state == TrialState.COMPLETE]
    tuned = [t for t in trials if t.user_attrs.get("stage") == FINETUNE]
    if any(t.state == TrialState.WAITING for t in tuned) or not probes:
        return
    if len(probes) < int(settings.get("probe_trials", 24)) and not late:
        return
    started = {t.user_attrs.get("warm_start_from") for t in tuned}
    leaders: dict[tuple, optuna.trial.FrozenTrial] = {}
    for probe in sorted(probes, key=lambda t: -t.value):
        model = probe.user_attrs["config"]["model"]
        if model.get("extras"):  # several frozen backbones: nothing to fine-tune one backbone from
            continue
        leaders.setdefault(tuple(model[k] for k in LEADER_KEYS), probe)
    for probe in list(leaders.values())[: int(settings.get("finetune_top", 2))]:
        model = probe.user_attrs["config"]["model"]
        params = {k: model[k] for k in MODEL_KEYS if k in probe.params}
        params["freeze"] = "last_k"
        if probe.number not in started:  # its first fine-tune trial: the recipe; later ones: the sampler's
            params.update(space.searched(FINETUNE_RECIPE))
        study.enqueue_trial(params, user_attrs={"stage": FINETUNE, "warm_start_from": probe.number})


def head_path(checkpoint_dir: Path, number: int) -> Path:
    """Where probe ``number`` keeps its best head (kept beside the checkpoints, never pruned with them)."""
    return checkpoint_dir / f"probe-head-{number:05d}.pt"


def save_probe_head(trial: optuna.Trial, head: nn.Module, checkpoint_dir: Path) -> None:
    """Keep a probe's best head for the fine-tune trials that start from it."""
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    save_state(state, head_path(checkpoint_dir, trial.number))


def load_probe_head(trial: optuna.Trial, stage: Stage, head: nn.Module, checkpoint_dir: Path) -> None:
    """For a fine-tune trial, load its probe's head into ``head`` (user attr ``warm_start``: the probe and
    the loaded head's digest); other trials start from a fresh head."""
    if stage.warm_start is None:
        return
    state = torch.load(head_path(checkpoint_dir, stage.warm_start), map_location="cpu", weights_only=True)
    head.load_state_dict(state)
    trial.set_user_attr("warm_start", {"trial": stage.warm_start, "head_digest": head_digest(head)})


def head_digest(head: nn.Module | dict[str, torch.Tensor]) -> str:
    """A digest of a head's weights (equal digests: equal weights)."""
    state = head.state_dict() if isinstance(head, nn.Module) else head
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
