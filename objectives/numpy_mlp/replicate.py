"""numpy-mlp confirmation replicates (folds or seeds, seconds each) and its refit: several seeds on every
training image, packed into one MLP of the lab's layers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from nn_numpy import predict, save_model, stack_models
from objectives.numpy_mlp.objective import fit_config, pool, start_fit
from objectives.replicate import Replicate, fold_split
from spaces.numpy_mlp import NumpyMLPConfig

__all__ = ["REFIT_MEMBERS", "refit_numpy_mlp", "retrain_numpy_mlp"]


def _mlp_error(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x.astype(model[0].W.dtype)) > 0.5).astype(np.int64) != y))


def retrain_numpy_mlp(
    trial: FrozenTrial, data: Any, rep: Replicate, settings: dict[str, Any], device: str = "cpu"
) -> dict[str, Any]:
    """One replicate of a numpy-mlp configuration: the best epoch's validation error on its held-out part."""
    cfg = NumpyMLPConfig.from_dict(trial.user_attrs["config"])
    _, y_all = pool(data)
    if rep.scheme == "fold":
        trn, held = fold_split(y_all.ravel(), rep)
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
