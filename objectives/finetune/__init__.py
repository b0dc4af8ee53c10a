"""The ``finetune`` task (lab part 3): a pretrained backbone fine-tuned on Dogs-vs-Cats photos.

Its modules: ``photos`` (photo folders and zips), ``augment`` (training policies), ``proxy`` (the
leaderboard proxy: ORIG, AUG, NEW), ``feature_cache`` (frozen-backbone features on disk), ``stages``
(linear probes, then fine-tuning of the leaders), ``objective`` (one trial), ``replicate`` (confirmation and
refit), ``export`` (``pytorch_cnn.py``, ``finetuned.pt``) and ``ensemble``. Importing the package registers
the task."""

from objectives.finetune.ensemble import ensemble_figure, ensemble_source_for, model_config
from objectives.finetune.export import export_finetune
from objectives.finetune.objective import evaluate, load_data, load_model, objective
from objectives.finetune.replicate import refit_finetune, retrain_finetune
from objectives.hooks import Confirmation, Ensembling, Exporter, Refit, confirmed_epochs_refit
from objectives.task import BudgetShares, Task, register
from spaces.finetune import BASELINE, SPACE


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
        # a probe's replicates extract every photo and 2 condition-bank copies of each once (3 N images),
        # a trial its split's 80 % + 20 % and 2 copies of the 20 % (1.4 N)
        confirmation=Confirmation(
            retrain_finetune, schemes=("fold", "seed"), default=("fold", 5), prep_factor=1.5
        ),
        refit=Refit(
            confirmed_epochs_refit(refit_finetune, settings=True, stops=True),
            fixed="it trains its confirmed epochs on every photo",
        ),
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
        # a probe's replicate or refit trains on cached features: seconds (docs/pipeline.md)
        budget=BudgetShares(search=0.75, confirm=0.15, refit=0.1, top=3, overhead_s=10.0),
        data_subfolder="dogs_and_cats",
    )
)
