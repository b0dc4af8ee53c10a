"""Re-train a finished trial's configuration on fresh folds or seeds (confirmation), and refit it on all data.

A *replicate* is one re-training of one configuration: ``("fold", i, k)`` trains on every training image
outside fold ``i`` of a seeded, stratified ``k``-fold partition of the task's training and validation images
together, and scores fold ``i``; ``("seed", i, n)`` trains on the study's own split with a fresh seed ``i``.
The fold partition is drawn with its own seed, so its folds are not the search's validation split.

Per task (``RETRAINERS``): numpy-mlp (folds or seeds, seconds), finetune (folds or seeds; linear probes train
on cached backbone features of *all* photos, so a fold costs seconds; other policies fine-tune per fold),
mynet (seeds only: its validation images are the lab's fixed split). Every retrainer returns a JSON-ready
record with the replicate's ``value`` (the task's metric, same direction as the search), its ``best_epoch``
and the test figure for information only; mynet and finetune add the replicate's held-out class
``predictions`` (``held_out.py``: the caller keeps them as files, for ensembles). ``REFITTERS`` train on
all training images for a given epoch count and write the weights (numpy-mlp ``.npz``, finetune ``.pt``;
mynet's refit lives in mynet.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from optuna.trial import FrozenTrial

from nn_numpy import predict, save_model, stack_models
from objectives.finetune import objective as ft
from objectives.finetune.feature_cache import FeatureCache, weights_tag
from objectives.finetune.proxy import condition_bank, proxy_score
from objectives.folds import stratified_folds
from objectives.held_out import finetune_predictions, probabilities
from objectives.numpy_mlp.objective import fit_config, pool, start_fit
from objectives.training.fit import accuracy, cpu_state, fit, resolve_device, save_state
from objectives.training.memory import plan_batch
from spaces.finetune import FinetuneTrialConfig
from spaces.mynet import MyNetTrialConfig
from spaces.numpy_mlp import NumpyMLPConfig

__all__ = ["REFITTERS", "RETRAINERS", "SCHEMES", "Replicate"]

SCHEMES = {"numpy-mlp": ("fold", "seed"), "finetune": ("fold", "seed"), "mynet": ("seed",)}
_FOLD_SEED = 7_919  # the partition's seed offset: folds never coincide with the search's split (seed 0)


@dataclass(frozen=True)
class Replicate:
    """One re-training: ``scheme`` ``"fold"`` (fold ``index`` of ``count``) or ``"seed"`` (seed ``index``)."""

    scheme: str
    index: int
    count: int
    seed: int = 0

    @property
    def key(self) -> str:
        """A stable name, e.g. ``fold3of5``."""
        return f"{self.scheme}{self.index}of{self.count}"


def _split(y: np.ndarray, rep: Replicate) -> tuple[np.ndarray, np.ndarray]:
    return stratified_folds(y, rep.count, rep.seed + _FOLD_SEED)[rep.index]


# --- numpy-mlp -------------------------------------------------------------------------------------------


def _mlp_error(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x.astype(model[0].W.dtype)) > 0.5).astype(np.int64) != y))


def retrain_numpy_mlp(
    trial: FrozenTrial, data: Any, rep: Replicate, settings: dict[str, Any], device: str = "cpu"
) -> dict[str, Any]:
    """One replicate of a numpy-mlp configuration: the best epoch's validation error on its held-out part."""
    cfg = NumpyMLPConfig.from_dict(trial.user_attrs["config"])
    _, y_all = pool(data)
    if rep.scheme == "fold":
        trn, held = _split(y_all.ravel(), rep)
    else:
        trn, held = np.arange(len(data.y_train)), np.arange(len(data.y_train), len(y_all))
    rng = np.random.default_rng([trial.number, rep.seed, 1_000 + rep.index, rep.scheme == "fold"])
    fitted = fit_config(cfg, data, trn, held, rng)
    model, result = fitted.model, fitted.result
    return {
        "value": float(result.best.val_error),
        "best_epoch": int(result.best_epoch),
        "n_train": int(len(trn)),
        "n_val": int(len(held)),
        "test_error": _mlp_error(model, data.x_test, data.y_test),
    }


REFIT_MEMBERS = 5  # numpy-mlp refits packed into one wider MLP (bench/refit_ensemble.py)


def refit_numpy_mlp(
    trial: FrozenTrial, data: Any, path: Path, *, epochs: int, seed: int, members: int = REFIT_MEMBERS
) -> dict[str, Any]:
    """Train a numpy-mlp configuration on all training and validation images for ``epochs`` epochs with
    ``members`` seeds; the last epoch's weights, packed into one MLP that averages the members' logits
    (:func:`nn_numpy.stack_models`; the lab's layers only), go to ``path`` (``.npz``, like a checkpoint)."""
    if members < 1:
        raise ValueError(f"a refit needs at least one member, got {members}")
    cfg = NumpyMLPConfig.from_dict(trial.user_attrs["config"])
    _, y = pool(data)
    started = time.perf_counter()
    models, losses = [], []
    for member in range(members):
        # the trainer wants validation images to pick a best epoch; a refit keeps the last epoch, so a few do
        rng = np.random.default_rng([trial.number, seed] + ([member] if member else []))
        trainer = start_fit(cfg, data, np.arange(len(y)), np.arange(8), rng)
        for _ in range(epochs):
            trainer.step()
        models.append(trainer.model)
        losses.append([float(s.train_loss) for s in trainer.result().history])
    model = models[0] if members == 1 else stack_models(models)
    save_model(
        path, model, mean=np.float64(data.mean), std=np.float64(data.std), classes=np.array(data.classes)
    )
    return {
        "checkpoint": path.name,
        "epochs": epochs,
        "n_train": int(len(y)),
        "seed": seed,
        "members": members,
        "seconds": round(time.perf_counter() - started, 3),
        "train_loss": [float(np.mean(epoch)) for epoch in zip(*losses, strict=True)],
        "test_error": _mlp_error(model, data.x_test, data.y_test),
        "member_test_errors": [_mlp_error(m, data.x_test, data.y_test) for m in models],
        "n_test": int(len(data.y_test)),
    }


# --- finetune --------------------------------------------------------------------------------------------


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
        trn_np, held_np = _split(y.numpy(), rep)
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
    trial: FrozenTrial, data: Any, rep: Replicate | None, settings: dict[str, Any], epochs: int, seed: int
) -> tuple[ft.FinetuneNet, dict[str, Any], SimpleNamespace]:
    """Train a finetune configuration on one replicate (or, ``rep=None``, on every photo)."""
    cfg = FinetuneTrialConfig.from_dict(trial.user_attrs["config"])
    train_cfg = replace(cfg.train, epochs=epochs)
    torch.manual_seed(seed)
    model, source, state = ft.build_model(cfg, settings)
    torch.manual_seed(seed)
    parts, rows = _finetune_parts(data, rep)
    best: dict[str, Any] = {"proxy": -1.0, "epoch": 0}

    def on_epoch(epoch: int, train_loss: float, acc: dict[str, float], snapshot: Callable[[], dict]) -> None:
        score = proxy_score(acc["orig"], acc["aug"], acc.get("new"))
        last = rep is None and epoch == epochs
        if score > best["proxy"] or last:
            best.update(proxy=score, epoch=epoch, parts=dict(acc), state=snapshot())

    if cfg.train.uses_cache:
        every = _all_features(model, data, cfg, source, state)
        features = {name: every[name][index] for name, index in rows.items()}
        if data.x_new is not None:
            features["new"] = every["new"]
        ft._fit_head(model.head, features, parts, train_cfg, on_epoch)
        model.head.load_state_dict(best["state"])
        best["features"] = features  # the held-out predictions go through the head only
    else:
        shape, batch = tuple(parts.x_train.shape[1:]), min(train_cfg.batch_size, len(parts.y_train))
        plan = plan_batch(model, shape, batch, settings)  # the search's memory cap holds here too
        if plan.reason:
            raise MemoryError(plan.reason)
        ft._fit_model(model, parts, train_cfg, on_epoch, micro_batch=plan.micro_batch)
        model.load_state_dict(best["state"])
    return model.eval(), best, parts


def _all_features(
    model: ft.FinetuneNet, data: Any, cfg: FinetuneTrialConfig, source: str, state: dict
) -> dict:
    def compute() -> dict[str, torch.Tensor]:
        x, _, x_aug, _ = _all_photos(data)
        model.eval()
        parts = {"train": x, "aug": x_aug} | ({} if data.x_new is None else {"new": data.x_new})
        with torch.inference_mode():
            return {
                name: torch.cat(
                    [
                        model.forward_features(ft._float(v[i : i + ft._CHUNK]))
                        for i in range(0, len(v), ft._CHUNK)
                    ]
                )
                for name, v in parts.items()
            }

    features, _ = FeatureCache().get_or_compute(
        cfg.model.backbone,
        cfg.model.resolution,
        f"{data.fingerprint}-all",
        weights_tag(source, state),
        compute,
    )
    return {"train": features["train"], "val": features["train"], "aug": features["aug"]} | (
        {"new": features["new"]} if "new" in features else {}
    )


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
) -> dict[str, Any]:
    """Train a finetune configuration on every photo of the study for ``epochs`` epochs; the last epoch's
    weights (backbone and head) go to ``path``."""
    started = time.perf_counter()
    model, _, parts = _finetune_run(trial, data, None, settings or {}, epochs, seed)
    save_state(cpu_state(model), path)
    return {
        "checkpoint": path.name,
        "epochs": epochs,
        "n_train": len(parts.y_train),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }


# --- mynet -----------------------------------------------------------------------------------------------


def retrain_mynet(
    trial: FrozenTrial, data: Any, rep: Replicate, settings: dict[str, Any], device: str = "auto"
) -> dict[str, Any]:
    """One replicate of a mynet configuration: the study's split with a fresh seed; the final epoch's
    accuracy on the study's validation images (its large holdout when it has one), as the search scores."""
    from models import MyNet

    if rep.scheme != "seed":
        raise ValueError("mynet confirms over seeds (--seeds R): its training images are the lab's split")
    cfg = MyNetTrialConfig.from_dict(trial.user_attrs["config"])
    seed = int(trial.user_attrs.get("seed", trial.number)) * 31 + 1_000 + rep.index
    torch_device = resolve_device(device)
    split = data.to(torch_device)
    x_val, y_val = (split.x_holdout, split.y_holdout) if len(split.y_holdout) else (split.x_val, split.y_val)
    torch.manual_seed(seed)
    model = MyNet(cfg.model).to(torch_device, memory_format=torch.channels_last)
    result = fit(
        model,
        cfg.train,
        cfg.augment,
        (split.x_train, split.y_train),
        None,  # scored once, after the last epoch: the schedules anneal there
        generator=torch.Generator(device=torch_device).manual_seed(seed),
    )
    model.eval()
    return {
        "value": accuracy(model, x_val, y_val),
        "best_epoch": len(result.history),
        "n_train": len(split.y_train),
        "n_val": len(y_val),
        "test_accuracy": accuracy(model, split.x_test, split.y_test),
        "predictions": {
            "val": (probabilities(model, x_val, prepare=_unit), y_val.cpu().numpy().astype(np.int64))
        },
    }


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255)


Retrainer = Callable[[FrozenTrial, Any, Replicate, dict[str, Any], str], dict[str, Any]]
RETRAINERS: dict[str, Retrainer] = {
    "numpy-mlp": retrain_numpy_mlp,
    "finetune": retrain_finetune,
    "mynet": retrain_mynet,
}
REFITTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "numpy-mlp": refit_numpy_mlp,
    "finetune": refit_finetune,
}
