"""The ``finetune`` task (lab part 3): a pretrained backbone fine-tuned on Dogs-vs-Cats photos.

Its modules: ``photos`` (photo folders and zips), ``augment`` (training policies), ``proxy`` (the
leaderboard proxy: ORIG, AUG, NEW), ``feature_cache`` (frozen-backbone features on disk), ``stages``
(linear probes, then fine-tuning of the leaders), ``objective`` (one trial), ``replicate`` (confirmation and
refit), ``export`` (``pytorch_cnn.py``, ``finetuned.pt``) and ``ensemble``. Importing the package registers
the task."""

from typing import Any

from optuna.trial import FrozenTrial

from objectives.finetune.ensemble import ensemble_figure, ensemble_source_for, model_config
from objectives.finetune.export import export_finetune
from objectives.finetune.objective import evaluate, load_data, load_model, objective
from objectives.finetune.replicate import refit_finetune, retrain_finetune
from objectives.hooks import Confirmation, Ensembling, Exporter, Refit, RefitRequest
from objectives.task import Task, register
from spaces.finetune import BASELINE, SPACE


def _refit(trial: FrozenTrial, data: Any, path: Any, request: RefitRequest) -> dict[str, Any]:
    epochs = request.confirmed_epochs_for(trial)
    record = refit_finetune(
        trial, data, path, epochs=epochs, seed=request.seed_for(trial), settings=request.settings
    )
    return record | {"trial": trial.number, "device": "cpu", "confirmed_epochs": epochs}


TASK = register(
    Task(
        name="finetune",
        space=SPACE,
        metric="proxy",
        direction="maximize",
        load_data=load_data,
        objective=objective,
        evaluate=evaluate,
        baseline=BASELINE,
        confirmation=Confirmation(retrain_finetune, schemes=("fold", "seed"), default=("fold", 5)),
        refit=Refit(_refit, fixed="it trains its confirmed epochs on every photo"),
        exporter=Exporter(export_finetune, standalone=True),
        ensembling=Ensembling(
            metric="proxy (ORIG, AUG, NEW)",
            figure=ensemble_figure,
            load_model=load_model,
            model_config=model_config,
            source=ensemble_source_for,
            class_name="FinetuneNet",
            weights_name="finetuned.pt",
            input_shape=(100, 3, 96, 96),
            needs_timm=lambda plain_torch: not plain_torch,
        ),
    )
)
