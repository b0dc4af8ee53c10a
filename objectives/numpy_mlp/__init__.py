"""The ``numpy-mlp`` task (lab part 1): a NumPy MLP telling two MNIST digits apart.

Its modules: ``objective`` (one trial: k-fold cross-validation of the training images), ``fold_arrays``
(the per-worker arrays the folds share), ``replicate`` (confirmation and refit), ``export`` (``numpy_nn.py``
and the lab's figures). Importing the package registers the task."""

from typing import Any

from optuna.trial import FrozenTrial

from objectives.hooks import Confirmation, Exporter, Refit, RefitRequest
from objectives.numpy_mlp.export import export_numpy_mlp
from objectives.numpy_mlp.objective import evaluate, load_data, objective
from objectives.numpy_mlp.replicate import refit_numpy_mlp, retrain_numpy_mlp
from objectives.task import Task, register
from spaces.numpy_mlp import SPACE


def _refit(trial: FrozenTrial, data: Any, path: Any, request: RefitRequest) -> dict[str, Any]:
    epochs = request.confirmed_epochs_for(trial)
    record = refit_numpy_mlp(trial, data, path, epochs=epochs, seed=request.seed_for(trial))
    return record | {"trial": trial.number, "device": "cpu", "confirmed_epochs": epochs}


TASK = register(
    Task(
        name="numpy-mlp",
        space=SPACE,
        metric="val_error",
        direction="minimize",
        load_data=load_data,
        objective=objective,
        evaluate=evaluate,
        # Small matrices: a second BLAS thread loses on a busy machine while a second worker gains
        # (docs/measurements.md, "numpy-mlp threads"). An explicit --threads overrides this.
        max_threads=1,
        # ASHA stopped most of the best tenth of an unpruned 5-fold study, and a 5-fold trial costs about
        # half a second (docs/measurements.md, "numpy-mlp pruning").
        default_pruner="none",
        confirmation=Confirmation(retrain_numpy_mlp, schemes=("fold", "seed"), default=("fold", 5)),
        refit=Refit(_refit, suffix=".npz", fixed="it trains its confirmed epochs on all its images"),
        exporter=Exporter(export_numpy_mlp),
    )
)
