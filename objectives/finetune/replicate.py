"""finetune confirmation replicates (folds or seeds; a linear probe trains on cached backbone features of
*all* photos, so a fold costs seconds; other policies fine-tune per fold) and its refit on every photo (which
stops at its deadline, writing nothing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from optuna.trial import FrozenTrial

from models.finetune import FinetuneNet
from objectives.finetune.objective import (
    build_model,
    cached_features,
    fit_head,
    fit_model,
    probe_view_features,
    split_features,
)
from objectives.finetune.proxy import condition_bank, proxy_score
from objectives.held_out import finetune_predictions
from objectives.replicate import Replicate, fold_split
from objectives.task import DeadlineReached
from objectives.training.fit import cpu_state, save_state
from objectives.training.memory import plan_batch
from spaces.finetune import FinetuneTrialConfig

__all__ = ["refit_finetune", "retrain_finetune"]


_ALL_PHOTOS: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}


def _all_photos(data: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Every photo of the study (training + validation), its labels and their condition-bank copies (built
    once per process: a few seconds for 1,500 photos)."""
    if data.fingerprint not in _ALL_PHOTOS:
        x = torch.cat([data.x_train, data.x_val])
        y = torch.cat([data.y_train, data.y_val])
        copies = len(data.y_aug) // max(1, len(data.y_val))
        x_aug, _ = condition_bank(x, copies=copies, seed=1)
        _ALL_PHOTOS.clear()
        _ALL_PHOTOS[data.fingerprint] = (x, y, x_aug, copies)
    return _ALL_PHOTOS[data.fingerprint]


def _aug_rows(index: torch.Tensor, n: int, copies: int) -> torch.Tensor:
    return torch.cat([c * n + index for c in range(copies)])


def _finetune_parts(data: Any, rep: Replicate | None) -> tuple[SimpleNamespace, dict[str, torch.Tensor]]:
    """The replicate's training/held-out images as the trainers want them, and the row index of each part
    into the all-photos tensors (``aug`` into the condition-bank copies)."""
    x, y, x_aug, copies = _all_photos(data)
    n = len(y)
    if rep is None:  # a refit: every photo trains; a few stand in as "validation" (the last epoch is kept)
        trn, held = torch.arange(n), torch.arange(min(8, n))
    elif rep.scheme == "fold":
        trn_np, held_np = fold_split(y.numpy(), rep)
        trn, held = torch.from_numpy(trn_np), torch.from_numpy(held_np)
    else:
        trn, held = torch.arange(len(data.y_train)), torch.arange(len(data.y_train), n)
    aug = _aug_rows(held, n, copies)
    parts = SimpleNamespace(
        x_train=x[trn], y_train=y[trn], x_val=x[held], y_val=y[held],
        x_aug=x_aug[aug], y_aug=y[held].repeat(copies),
        x_new=data.x_new, y_new=data.y_new, classes=data.classes,
    )  # fmt: skip
    return parts, {"train": trn, "val": held, "aug": aug}


def _finetune_run(
    trial: FrozenTrial,
    data: Any,
    rep: Replicate | None,
    settings: dict[str, Any],
    epochs: int,
    seed: int,
    stop: Callable[[], bool] | None = None,
) -> tuple[FinetuneNet, dict[str, Any], SimpleNamespace]:
    """Train a finetune configuration on one replicate (or, ``rep=None``, on every photo).

    Raises:
        DeadlineReached: when ``stop`` says ``True`` (asked every few seconds of work), saying where.
    """
    cfg = FinetuneTrialConfig.from_dict(trial.user_attrs["config"])
    train_cfg = replace(cfg.train, epochs=epochs)
    torch.manual_seed(seed)
    model, _, tags = build_model(cfg, settings)
    torch.manual_seed(seed)
    parts, rows = _finetune_parts(data, rep)
    best: dict[str, Any] = {"proxy": -1.0, "epoch": 0}

    def on_epoch(epoch: int, train_loss: float, acc: dict[str, float], snapshot: Callable[[], dict]) -> None:
        score = proxy_score(acc["orig"], acc["aug"], acc.get("new"))
        last = rep is None and epoch == epochs
        if score > best["proxy"] or last:
            best.update(proxy=score, epoch=epoch, parts=dict(acc), state=snapshot())

    if cfg.train.uses_cache:
        every = _all_features(model, data, tags, stop, refit=rep is None)
        features = {name: every[name][index] for name, index in rows.items()}
        if data.x_new is not None:
            features["new"] = every["new"]
        if cfg.train.probe_views:  # the views of every photo, cached once; this replicate's training rows
            photos = _all_photos(data)[0]
            views, _ = probe_view_features(model, photos, cfg, f"{data.fingerprint}-all", tags[0], stop)
            n, train = len(photos), rows["train"]
            features["views"] = torch.cat([views[v * n + train] for v in range(cfg.train.probe_views)])
        stopped_in = fit_head(model.head, features, parts, train_cfg, on_epoch, stop=stop)
        if stopped_in is not None:
            raise DeadlineReached(f"in epoch {stopped_in} of {epochs}")
        model.head.load_state_dict(best["state"])
        best["features"] = features  # the held-out predictions go through the head only
    else:
        shape, batch = tuple(parts.x_train.shape[1:]), min(train_cfg.batch_size, len(parts.y_train))
        plan = plan_batch(model, shape, batch, settings)  # the search's memory cap holds here too
        if plan.reason:
            raise MemoryError(plan.reason)
        stopped_in = fit_model(model, parts, train_cfg, on_epoch, micro_batch=plan.micro_batch, stop=stop)
        if stopped_in is not None:
            raise DeadlineReached(f"in epoch {stopped_in} of {epochs}")
        model.load_state_dict(best["state"])
    return model.eval(), best, parts


def _all_features(
    model: FinetuneNet,
    data: Any,
    tags: list[str],
    stop: Callable[[], bool] | None = None,
    *,
    refit: bool = False,
) -> dict:
    """Features of every photo (and of their condition-bank copies) for the replicates. The photos' are the
    search's split features in ``_all_photos``' order (cached by the study's trials; computed and cached
    here otherwise), so only the copies are extracted, once (cached); a ``refit`` needs no copies (its few
    stand-in validation rows are not scored), so it extracts nothing when the study's trials did."""
    split, _ = split_features(model, data, tags, stop=stop)
    photos = torch.cat([split["train"], split["val"]])
    new = {"new": split["new"]} if "new" in split else {}
    if refit:
        copies = len(data.y_aug) // max(1, len(data.y_val))
        return {"train": photos, "val": photos, "aug": photos.repeat(copies, 1)} | new
    name = f"{data.fingerprint}-all-aug"
    aug, _ = cached_features(model, tags, name, lambda: {"aug": _all_photos(data)[2]}, stop=stop)
    return {"train": photos, "val": photos, "aug": aug["aug"]} | new


def retrain_finetune(
    trial: FrozenTrial, data: Any, rep: Replicate, settings: dict[str, Any], device: str = "cpu"
) -> dict[str, Any]:
    """One replicate of a finetune configuration: the best epoch's proxy (ORIG/AUG/NEW) on its held-out
    photos and their condition-bank copies."""
    cfg = FinetuneTrialConfig.from_dict(trial.user_attrs["config"])
    seed = int(trial.user_attrs.get("seed", trial.number)) * 31 + 1_000 + rep.index
    model, best, parts = _finetune_run(trial, data, rep, settings, cfg.train.epochs, seed)
    return {
        "value": float(best["proxy"]),
        "best_epoch": int(best["epoch"]),
        "n_train": len(parts.y_train),
        "n_val": len(parts.y_val),
        **{f"{name}_acc": value for name, value in best["parts"].items()},
        "predictions": finetune_predictions(model, parts, best.get("features")),
    }


def refit_finetune(
    trial: FrozenTrial,
    data: Any,
    path: Path,
    *,
    epochs: int,
    seed: int,
    settings: dict[str, Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train a finetune configuration on every photo of the study for ``epochs`` epochs; the last epoch's
    weights (backbone and head) go to ``path``.

    Raises:
        DeadlineReached: when ``stop`` (e.g. ``RefitRequest.out_of_time``, asked before the refit and every
            few seconds of its work) says ``True``; nothing is written (nor any part of features to cache).
    """
    started = time.perf_counter()
    if stop is not None and stop():
        raise DeadlineReached(f"the refit of trial {trial.number} reached its deadline before it started")
    try:
        model, _, parts = _finetune_run(trial, data, None, settings or {}, epochs, seed, stop)
    except DeadlineReached as exc:
        message = f"the refit of trial {trial.number} reached its deadline {exc}; nothing was written"
        raise DeadlineReached(message) from None
    save_state(cpu_state(model), path)
    return {
        "checkpoint": path.name,
        "epochs": epochs,
        "n_train": len(parts.y_train),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
