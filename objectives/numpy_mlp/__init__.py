"""The ``numpy-mlp`` task (lab part 1): a NumPy MLP telling two MNIST digits apart.

Its modules: ``objective`` (one trial: k-fold cross-validation of the training images), ``fold_arrays``
(the per-worker arrays the folds share), ``replicate`` (confirmation and refit), ``export`` (``numpy_nn.py``
and the lab's figures). Importing the package registers the task."""

from objectives.hooks import Confirmation, Exporter, Refit, confirmed_epochs_refit
from objectives.numpy_mlp.export import export_numpy_mlp
from objectives.numpy_mlp.objective import evaluate, load_data, objective
from objectives.numpy_mlp.replicate import refit_numpy_mlp, retrain_numpy_mlp
from objectives.task import BudgetShares, Task, register
from spaces.numpy_mlp import BASELINE, SPACE


TASK = register(
    Task(
        name="numpy-mlp",
        space=SPACE,
        metric="val_error",
        direction="minimize",
        load_data=load_data,
        objective=objective,
        evaluate=evaluate,
        baseline=BASELINE,
        # Small matrices: a second BLAS thread loses on a busy machine while a second worker gains
        # (docs/measurements.md, "numpy-mlp threads"). An explicit --threads overrides this.
        max_threads=1,
        # trials and replicates take seconds: a large confirmation share buys folds for the top trials
        budget=BudgetShares(search=0.55, confirm=0.35, refit=0.1, top=3, overhead_s=3.0),
        # ASHA stopped most of the best tenth of an unpruned 5-fold study, and a 5-fold trial costs about
        # half a second (docs/measurements.md, "numpy-mlp pruning").
        default_pruner="none",
        confirmation=Confirmation(retrain_numpy_mlp, schemes=("fold", "seed"), default=("fold", 5)),
        refit=Refit(
            confirmed_epochs_refit(refit_numpy_mlp),
            suffix=".npz",
            fixed="it trains its confirmed epochs on all its images",
        ),
        exporter=Exporter(export_numpy_mlp),
    )
)
