"""The ``mynet`` task (lab part 2): MyNet, a CNN trained on 9 % of FashionMNIST.

Its modules: ``data`` (FashionMNIST and the lab's split), ``validation`` (which images validate a trial),
``objective`` (one trial), ``rungs`` (training rung by rung under the rungs pruner), ``replicate``
(confirmation over seeds), ``export`` (``pytorch_cnn.py``, ``model.pt``, the lab's figure) and ``ensemble``
(averaging confirmed configurations). Importing the package registers the task."""

from typing import Any

from optuna.trial import FrozenTrial

from objectives.hooks import Confirmation, Ensembling, Exporter, Refit, RefitRequest
from objectives.mynet.ensemble import ensemble_figure, ensemble_source_for, model_config, test_figures
from objectives.mynet.export import export_mynet
from objectives.mynet.objective import evaluate, load_data, load_model, objective, refit
from objectives.mynet.replicate import retrain_mynet
from objectives.task import Task, register
from spaces.mynet import BASELINE, SPACE


def _refit(trial: FrozenTrial, data: Any, path: Any, request: RefitRequest) -> dict[str, Any]:
    # a study searched at a short budget refits at a longer one (its ``refit_epochs`` setting)
    best = int(trial.user_attrs.get("best_epoch") or 0)
    epochs = request.epochs or max(best, int(request.settings.get("refit_epochs") or best))
    return refit(
        trial, data, path, data_fraction=request.data_fraction, device=request.device, seed=request.seed,
        epochs=epochs,
    )  # fmt: skip


TASK = register(
    Task(
        name="mynet",
        space=SPACE,
        metric="val_accuracy",
        direction="maximize",
        load_data=load_data,
        objective=objective,
        evaluate=evaluate,
        baseline=BASELINE,
        default_pruner="rungs",  # complete 3- and 15-epoch schedules (docs/tasks/mynet.md, "Rungs")
        confirmation=Confirmation(retrain_mynet, schemes=("seed",), default=("seed", 2)),
        refit=Refit(_refit, options=frozenset({"epochs", "data_fraction"}), quick=False),
        exporter=Exporter(export_mynet),
        ensembling=Ensembling(
            metric="accuracy",
            figure=ensemble_figure,
            load_model=load_model,
            model_config=model_config,
            source=ensemble_source_for,
            class_name="MyNet",
            weights_name="model.pt",
            input_shape=(100, 1, 28, 28),
            flip="FashionMNIST classes are not left-right symmetric",
            test_figures=test_figures,
        ),
    )
)
