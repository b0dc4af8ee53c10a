"""Benchmark: numpy-mlp's known-good first trial (``Task.baseline``) against scikit-learn's default
``MLPClassifier`` on the task's MNIST 4-vs-9 split.

Usage: ``python bench/numpy_baseline.py [--dev-seeds 0,1] [--seeds 0,1,2] [--threads 1] [--dev-only]
[--data PATH]``

1. Development data, the training images only: every candidate of :data:`CANDIDATES` (trial parameters, all
   within the default space) and ``MLPClassifier()`` train on 80 % and are scored on 20 % of the pair's
   training images, the stratified 5-fold partition of each ``--dev-seeds`` seed (every image is scored once
   per seed). Prints per candidate the error at its last epoch (what a refit keeps; the choice: lowest, then
   lowest Brier score), its spread over the splits, the best epoch's error (a trial's value is of that
   kind), the median best epoch and the seconds per fit. The chosen candidate is printed, and whether it is
   the task's ``Task.baseline``.
2. Test (``--dev-only`` skips it; nothing here chooses anything): for each ``--seeds`` seed, the chosen
   candidate as the pipeline runs it with study seed ``seed`` -- one trial (5-fold cross-validation), its
   confirmation (5 folds, ``objectives/numpy_mlp/replicate.py``), its refit on every training image for the
   confirmed epochs (5 seeds from ``seed``, packed into one MLP) -- against
   ``MLPClassifier(random_state=seed)`` trained on the same images. Prints the test error of the trial's
   checkpoint (fold 1's model, 4/5 of the images), the refit's members (each a single MLP), the packed refit
   and scikit-learn's, and the seconds of trial, confirmation and refit.

BLAS runs on ``--threads`` threads for both (numpy-mlp's workers use one). A few minutes on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from objectives.folds import stratified_folds, tie_broken_error  # noqa: E402
from objectives.mnist import DigitPair  # noqa: E402
from objectives.numpy_mlp import TASK  # noqa: E402
from objectives.numpy_mlp.objective import fit_config, load_data, objective, pool  # noqa: E402
from objectives.numpy_mlp.replicate import refit_numpy_mlp, retrain_numpy_mlp  # noqa: E402
from objectives.replicate import Replicate  # noqa: E402
from objectives.task import TrialContext  # noqa: E402
from spaces.numpy_mlp import SPACE, NumpyMLPConfig, suggest  # noqa: E402

_COMMON = {"init": "he", "momentum": 0.9, "weight_decay": 1e-4, "lr_decay": 0.95}
# Trial parameters (the keys a study draws; epochs 40 and float32 are the space's constants).
CANDIDATES: dict[str, dict[str, Any]] = {
    "1x100 relu se": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "se", "lr": 0.1,
        "batch_size": 32, "augment_shift": 0,
    },
    "1x100 relu bce": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 0,
    },
    "1x100 relu bce shift1": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 1,
    },
    "1x100 relu bce shift2": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 2,
    },
    "1x256 relu bce shift1": {
        **_COMMON, "depth": 1, "width_1": 256, "activation": "relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 1,
    },
    "2x(256,128) relu bce shift1": {
        **_COMMON, "depth": 2, "width_1": 256, "width_2": 128, "activation": "relu", "loss": "bce",
        "lr": 0.05, "batch_size": 32, "augment_shift": 1,
    },
    "1x100 leaky bce shift1": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "leaky_relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 1,
    },
    "1x100 tanh xavier bce shift1": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "tanh", "init": "xavier", "loss": "bce",
        "lr": 0.05, "batch_size": 32, "augment_shift": 1,
    },
    "1x100 relu bce shift1 b64 lr0.1": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "bce", "lr": 0.1,
        "batch_size": 64, "augment_shift": 1,
    },
    "1x100 relu bce shift1 wd1e-3": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 1, "weight_decay": 1e-3,
    },
    "1x100 relu se shift1 wd1e-3": {
        **_COMMON, "depth": 1, "width_1": 100, "activation": "relu", "loss": "se", "lr": 0.1,
        "batch_size": 32, "augment_shift": 1, "weight_decay": 1e-3,
    },
    "1x256 relu bce shift1 wd1e-3": {
        **_COMMON, "depth": 1, "width_1": 256, "activation": "relu", "loss": "bce", "lr": 0.05,
        "batch_size": 32, "augment_shift": 1, "weight_decay": 1e-3,
    },
}  # fmt: skip
_SKLEARN = "sklearn MLPClassifier()"
_FOLDS = 5  # an 80/20 split, five times per dev seed


def config(params: dict[str, Any]) -> NumpyMLPConfig:
    """The configuration a study draws for ``params`` (the space's constants added)."""
    if SPACE.searched(params) != params:
        raise ValueError(f"{params} is not reachable in the default space")
    return suggest(optuna.trial.FixedTrial(params), SPACE)


def dev_figures(name: str, data: DigitPair, seeds: list[int]) -> dict[str, Any]:
    """``name`` trained and scored on every dev split: pooled last-epoch error and Brier score, per-split
    errors, best-epoch error, best epochs and seconds per fit."""
    x, y = pool(data)
    errors, briers, best_errors, best_epochs, seconds, sizes = [], [], [], [], [], []
    for seed in seeds:
        for fold, (trn, val) in enumerate(stratified_folds(y, _FOLDS, seed)):
            started = time.perf_counter()
            if name == _SKLEARN:
                prob = _sklearn(seed).fit(x[trn], y[trn].ravel()).predict_proba(x[val])[:, 1]
                error = float(np.mean((prob > 0.5) != y[val].ravel()))
                brier, best_error, best_epoch = float(np.mean((prob - y[val].ravel()) ** 2)), error, 0
            else:
                rng = np.random.default_rng([seed, fold])
                result = fit_config(config(CANDIDATES[name]), data, trn, val, rng).result
                last = result.history[-1]
                error, brier = last.val_error, last.val_brier
                best_error, best_epoch = result.best.val_error, result.best_epoch
            seconds.append(time.perf_counter() - started)
            errors.append(error)
            briers.append(brier)
            best_errors.append(best_error)
            best_epochs.append(best_epoch)
            sizes.append(len(val))
    n = sum(sizes)
    error, brier = float(np.average(errors, weights=sizes)), float(np.average(briers, weights=sizes))
    return {
        "name": name,
        "error": error,
        "brier": brier,
        "rank": tie_broken_error(error, brier, n),
        "sd": float(np.std(errors, ddof=1)),
        "best_error": float(np.average(best_errors, weights=sizes)),
        "best_epoch": statistics.median(best_epochs),
        "seconds": statistics.median(seconds),
        "n": n,
    }


def held_out_run(params: dict[str, Any], data: DigitPair, seed: int) -> dict[str, Any]:
    """``params`` as the pipeline runs it with study seed ``seed`` (trial, 5-fold confirmation, refit) and
    ``MLPClassifier(random_state=seed)`` on the same images: test errors and seconds."""
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("seed", seed)
    study.enqueue_trial(params, user_attrs={"baseline": True})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        study.optimize(lambda t: objective(t, data, SPACE, TrialContext(Path(tmp))), n_trials=1)
        trial_s = time.perf_counter() - started
        trial = study.trials[0]
        reps = [
            retrain_numpy_mlp(trial, data, Replicate("fold", i, _FOLDS, seed), SPACE.settings())
            for i in range(_FOLDS)
        ]
        confirm_s = time.perf_counter() - started - trial_s
        epochs = int(statistics.median_high(r["best_epoch"] for r in reps))
        refit = refit_numpy_mlp(trial, data, Path(tmp) / "refit.npz", epochs=epochs, seed=seed)
    x, y = pool(data)
    started = time.perf_counter()
    sk = _sklearn(seed).fit(x, y.ravel())
    sk_s = time.perf_counter() - started
    return {
        "trial": trial.user_attrs["test_error"],
        "members": refit["member_test_errors"],
        "refit": refit["test_error"],
        "sklearn": float(np.mean(sk.predict(data.x_test) != data.y_test.ravel())),
        "epochs": epochs,
        "trial_s": trial_s,
        "confirm_s": confirm_s,
        "refit_s": refit["seconds"],
        "sklearn_s": sk_s,
        "n_train": refit["n_train"],
        "n_test": refit["n_test"],
    }


def _sklearn(seed: int) -> MLPClassifier:
    return MLPClassifier(random_state=seed)


def main() -> None:
    """Choose on the dev splits, then report the chosen candidate and scikit-learn's default on test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-seeds", default="0,1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dev-only", action="store_true", help="stop before the test images are read")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    dev_seeds = [int(s) for s in args.dev_seeds.split(",")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # the default's 200 iterations, as is
    threadpool_limits(args.threads)
    data = load_data(args.data, SPACE.settings())
    print(
        f"{data.source}, digits {data.classes}: {len(pool(data)[1])} training images; dev: stratified "
        f"{_FOLDS}-fold over seeds {dev_seeds}; {args.threads} BLAS thread(s); load {os.getloadavg()[0]:.1f}"
    )
    header = f"{'candidate':34} {'error':>7} {'sd':>6} {'brier':>7} {'best-ep err':>11} {'best ep':>7}"
    print(f"{header} {'s/fit':>6}")
    rows = []
    for name in [*CANDIDATES, _SKLEARN]:
        row = dev_figures(name, data, dev_seeds)
        rows.append(row)
        best = ("-", "-") if name == _SKLEARN else (f"{row['best_error']:.2%}", f"{row['best_epoch']:g}")
        print(
            f"{name:34} {row['error']:7.2%} {row['sd']:6.2%} {row['brier']:7.4f} {best[0]:>11} {best[1]:>7} "
            f"{row['seconds']:6.2f}"
        )
    chosen = min((r for r in rows if r["name"] != _SKLEARN), key=lambda r: r["rank"])
    params = CANDIDATES[chosen["name"]]
    print(f"chosen (lowest last-epoch dev error, then Brier): {chosen['name']}: {params}")
    print(f"Task.baseline is the chosen candidate: {'yes' if dict(TASK.baseline or {}) == params else 'NO'}")
    if args.dev_only:
        return
    print(
        f"test (read once; information only), per seed: {'seed':>4} {'trial':>7} {'members':>16} "
        f"{'refit':>7} {'sklearn':>7} | {'epochs':>6} {'trial s':>7} {'conf s':>7} {'refit s':>7} "
        f"{'total s':>7} {'skl s':>6}"
    )
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run = held_out_run(params, data, seed)
        runs.append(run)
        total = run["trial_s"] + run["confirm_s"] + run["refit_s"]
        members = f"{min(run['members']):.2%}-{max(run['members']):.2%}"
        print(
            f"{'':45}{seed:>4} {run['trial']:7.2%} {members:>16} {run['refit']:7.2%} {run['sklearn']:7.2%} | "
            f"{run['epochs']:6} {run['trial_s']:7.1f} {run['confirm_s']:7.1f} {run['refit_s']:7.1f} "
            f"{total:7.1f} {run['sklearn_s']:6.1f}"
        )
    median = {k: statistics.median(r[k] for r in runs) for k in ("trial", "refit", "sklearn")}
    member = statistics.median(m for r in runs for m in r["members"])
    print(
        f"median over seeds ({runs[0]['n_train']} training, {runs[0]['n_test']} test images): trial "
        f"{median['trial']:.2%}, refit member {member:.2%}, packed refit {median['refit']:.2%}, "
        f"sklearn default {median['sklearn']:.2%}; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
