"""Export a mynet winner: ``pytorch_cnn.py`` (``MyNet()`` builds the winner), ``model.pt``, the lab's training
figure and ``winner.json``. The weights are the trial's refit when one is stored (the engine's
``search/selection/refit.py`` finds it)."""

from __future__ import annotations

from pathlib import Path

from models import pytorch_cnn_source
from objectives.files import atomic_copy, atomic_write_text
from objectives.hooks import ExportJob
from objectives.mynet.data import load_fashion
from objectives.mynet.objective import load_model
from objectives.training.fit import accuracy
from reports import plot_training
from spaces.mynet import MyNetTrialConfig

__all__ = ["export_mynet"]


def export_mynet(job: ExportJob) -> list[Path]:
    """Write pytorch_cnn.py, model.pt (a stored refit's weights first), the lab's figure, winner.json."""
    trial, out = job.trial, job.out
    cfg = MyNetTrialConfig.from_dict(trial.user_attrs["config"])
    weights = out / "model.pt"
    written = [atomic_write_text(out / "pytorch_cnn.py", pytorch_cnn_source(cfg.model))]
    written.append(atomic_copy(job.weights, weights))

    curves = trial.user_attrs["curves"]
    best_epoch = trial.user_attrs.get("best_epoch")
    written.append(
        plot_training(
            {"validation accuracy": [100 * a for a in curves["val_accuracy"]]},
            out / "pytorch_cnn_training.png",
            ylabel="%",
            best_epoch=best_epoch,
            title=f"{job.study_name}: trial {trial.number}",
        )
    )

    images = load_fashion(job.data or job.study_attrs.get("data"))
    test_accuracy = accuracy(load_model(trial, weights), images.x_test, images.y_test)
    source = job.weights_source()
    tested = f"{len(images.y_test)} {images.test_name} images"
    print(f"model.pt: {source}; test_accuracy {test_accuracy:.4f} on {tested}")
    written.append(
        job.write_winner_json(
            "val_accuracy",
            test_accuracy=test_accuracy,
            n_test=len(images.y_test),
            n_params=trial.user_attrs.get("n_params"),
            config=trial.user_attrs["config"],
            data_source=images.source,
            usage=(
                "from pytorch_cnn import MyNet, classify; model = MyNet(); "
                "model.load_state_dict(torch.load('model.pt', weights_only=True)); classify(model, x)"
            ),
        )
    )
    return written
