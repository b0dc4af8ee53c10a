"""Benchmark: does a numpy-mlp refit packed from several seeds (``nn_numpy.stack_models``) beat one seed?

Usage: ``python bench/refit_ensemble.py --storage URL --study S [--members 5] [--top 1] [--trial N]``

For the confirmed winner of a numpy-mlp study (``rpztune confirm`` ran; ``--top N``: the N best by confirmed
mean; an unconfirmed study or ``--trial N``: that trial or the best, on 5 folds for its best epoch count),
trained exactly as a refit trains (the confirmed epoch count, the last epoch kept):

1. **Validation (decides)**: on the confirmation's own folds, every fold trains ``--members`` seeds on the
   other folds; the pooled held-out error of one seed (the mean over the seeds, and seed 0 alone) against
   the packed ensemble's. No test image is used.
2. **Test (information only)**: refits on all training images, one seed (today's refit, member 0) against
   the packed ``--members``-seed refit, on the public test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from nn_numpy import predict, stack_models  # noqa: E402
from objectives import get_task  # noqa: E402
from objectives.folds import stratified_folds  # noqa: E402
from objectives.numpy_mlp.objective import pool, start_fit  # noqa: E402
from spaces.numpy_mlp import NumpyMLPConfig  # noqa: E402

_FOLD_SEED = 7_919  # search/selection/confirm.py's partition offset: the confirmation's folds


def _error(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x.astype(model[0].W.dtype)) > 0.5).astype(np.int64) != y))


def _train(cfg: NumpyMLPConfig, data, trn: np.ndarray, epochs: int, rng: np.random.Generator) -> list:
    trainer = start_fit(cfg, data, trn, trn[:8], rng)
    for _ in range(epochs):
        trainer.step()
    return trainer.model


def main() -> None:
    """Run the comparison for the study's confirmed leaders; print one block per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--top", type=int, default=1, help="confirmed configurations, best mean first")
    parser.add_argument("--trial", type=int, help="this trial instead of the confirmed ones")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    record = study.user_attrs.get("confirm")
    if record is None or args.trial is not None:
        chosen = study.trials[args.trial] if args.trial is not None else study.best_trial
        epochs = int(chosen.user_attrs.get("best_epoch") or chosen.user_attrs["config"]["epochs"])
        estimate = {"trial": chosen.number, "epochs": epochs}
        record = {"count": 5, "winner": chosen.number, "estimates": [estimate]}
    data = get_task("numpy-mlp").load_data(study.user_attrs.get("data"), study.user_attrs["settings"])
    x, y = pool(data)
    folds = stratified_folds(y.ravel(), record["count"], int(study.user_attrs.get("seed", 0)) + _FOLD_SEED)
    winner_first = sorted(record["estimates"], key=lambda e: e["trial"] != record["winner"])
    for estimate in winner_first[: args.top]:
        trial = study.trials[estimate["trial"]]
        cfg = NumpyMLPConfig.from_dict(trial.user_attrs["config"])
        epochs = int(estimate["epochs"])
        wrong_single, wrong_first, wrong_ensemble = 0.0, 0, 0
        for fold, (trn, held) in enumerate(folds):
            members = [
                _train(cfg, data, trn, epochs, np.random.default_rng([trial.number, 5_000 + fold, m]))
                for m in range(args.members)
            ]
            errors = [_error(m, x[held], y[held]) * len(held) for m in members]
            wrong_single += float(np.mean(errors))
            wrong_first += round(errors[0])
            wrong_ensemble += round(_error(stack_models(members), x[held], y[held]) * len(held))
        n = len(y)
        seed = int(trial.user_attrs.get("seed", trial.number))
        rngs = [np.random.default_rng([trial.number, seed] + ([m] if m else [])) for m in range(args.members)]
        refits = [_train(cfg, data, np.arange(n), epochs, rng) for rng in rngs]  # as refit_numpy_mlp
        single = [_error(m, data.x_test, data.y_test) for m in refits]
        packed = _error(stack_models(refits), data.x_test, data.y_test)
        mark = " (confirmed winner)" if trial.number == record["winner"] else ""
        print(
            f"{args.study} trial {trial.number}{mark} {cfg.widths} {cfg.activation} {epochs} epochs:\n"
            f"  validation, {record['count']} folds, {n} images: one seed {wrong_single / n:.4f} (mean over "
            f"{args.members}; seed 0 {wrong_first / n:.4f}), {args.members}-seed ensemble "
            f"{wrong_ensemble / n:.4f}\n"
            f"  test (information only), {len(data.y_test)} images: today's refit (seed 0) {single[0]:.4f}, "
            f"one seed mean {np.mean(single):.4f} (min {min(single):.4f}, max {max(single):.4f}), "
            f"{args.members}-seed refit {packed:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
