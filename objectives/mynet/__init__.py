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
from objectives.task import BudgetShares, Task, register
from spaces.mynet import BASELINE, SPACE, MyNetTrialConfig

# A step that also trains on a batch of unlabelled images (consistency or distillation) costs about 3 of
# its labelled step alone (docs/measurements.md, "mynet: the unlabelled images and distillation")
_UNLABELLED_COST = 3.0


def _refit_epochs(trial: FrozenTrial, request: RefitRequest) -> int:
    # a study searched at a short budget refits at a longer one (its ``refit_epochs`` setting)
    best = int(trial.user_attrs.get("best_epoch") or 0)
    return request.epochs or max(best, int(request.settings.get("refit_epochs") or best))


def _refit_seconds(trial: FrozenTrial, request: RefitRequest) -> float:
    """The refit's epochs at the trial's seconds per epoch, on the validation images too (1 % on 9 %)."""
    attrs = trial.user_attrs
    trained = attrs.get("epochs_trained") or len((attrs.get("curves") or {}).get("train_loss", [])) or 1
    per_epoch = float(attrs.get("train_seconds") or 0.0) / int(trained)
    cfg = MyNetTrialConfig.from_dict(attrs["config"])
    searched = _UNLABELLED_COST if cfg.train.unlabelled_weight else 1.0  # the trial's seconds include it
    refitted = _UNLABELLED_COST if (request.teachers or cfg.train.unlabelled_weight) else 1.0
    return per_epoch * refitted / searched * _refit_epochs(trial, request) * 10 / 9


def _refit(trial: FrozenTrial, data: Any, path: Any, request: RefitRequest) -> dict[str, Any]:
    epochs = _refit_epochs(trial, request)
    teachers = [load_model(t, checkpoint) for t, checkpoint in request.teachers]
    record = refit(
        trial, data, path, data_fraction=request.data_fraction, device=request.device, seed=request.seed,
        epochs=epochs, stop=request.out_of_time, teachers=teachers,
    )  # fmt: skip
    return record | ({"teachers": [t.number for t, _ in request.teachers]} if teachers else {})


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
        refit=Refit(
            _refit,
            options=frozenset({"epochs", "data_fraction", "teachers"}),
            quick=False,
            seconds=_refit_seconds,
            teachers=3,  # t10k +0.0039 ± 0.0018 over 3 seeds (docs/measurements.md, distillation)
        ),
        # a replicate trains a whole schedule: confirmation needs a large share (docs/pipeline.md)
        budget=BudgetShares(search=0.5, confirm=0.35, refit=0.15, top=2, overhead_s=8.0),
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
