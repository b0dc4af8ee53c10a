"""What a task plugs into the engine after its search: confirmation replicates, the refit, the export of
its winner and ensembles of its confirmed configurations.

Each task package fills these in where it defines its :class:`~objectives.task.Task`; the engine
(``search/``) calls them and never asks which task it is running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from objectives.files import atomic_write_text

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from objectives.replicate import Replicate

__all__ = [
    "Confirmation",
    "Ensembling",
    "ExportJob",
    "Exporter",
    "Refit",
    "RefitRequest",
    "confirmed_epochs_refit",
]


@dataclass(frozen=True)
class Confirmation:
    """How a task re-trains a configuration on fresh folds or seeds.

    Args:
        replicate: ``(trial, data, replicate, settings, device) -> record``: one re-training; the record
            holds ``value`` (the task's metric, in the search's direction), ``best_epoch`` and, for
            ensembles, held-out class ``predictions``.
        schemes: The schemes it can confirm with (``"fold"``, ``"seed"``).
        default: The plan ``confirm`` uses when none is asked, e.g. ``("fold", 5)``.
        prep_factor: The replicates' one-off preparation (before the first of them trains) as a multiple of
            what a trial of the same ``prep_key`` paid (its ``prep_seconds`` user attribute; finetune: the
            features of two condition-bank copies of every photo, 3,000 images for 1,500 photos, against a
            trial's split and its validation copies, 2,100: the photos' own features are the split's). The
            pipeline plans the confirmation with it.
    """

    replicate: Callable[[FrozenTrial, Any, Replicate, dict[str, Any], str], dict[str, Any]]
    schemes: tuple[str, ...]
    default: tuple[str, int]
    prep_factor: float = 1.0


@dataclass(frozen=True)
class RefitRequest:
    """What the user (or the pipeline) asks of a refit.

    Args:
        epochs: ``--epochs`` (``None``: the task's default).
        confirmed_epochs: The confirmation's median best epoch of the trial, when it was confirmed.
        seed: ``--seed`` (``None``: the trial's own).
        data_fraction: ``--data-fraction`` (``None``: the study's).
        device: ``auto``, ``cpu`` or ``cuda``.
        settings: The study's settings.
        deadline: ``time.time()`` by which the refit must end (the pipeline's budget; ``None``: none). A
            refit checks :meth:`out_of_time` every few seconds of work and, when it says ``True``, raises
            :class:`objectives.DeadlineReached` without writing anything (export keeps the trial's weights).
        teachers: ``--teachers``: completed trials and their checkpoints whose average the refit is
            distilled from (a task with the ``"teachers"`` option; empty: none).
    """

    epochs: int | None = None
    confirmed_epochs: int | None = None
    seed: int | None = None
    data_fraction: float | None = None
    device: str = "auto"
    settings: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    teachers: list[tuple[FrozenTrial, Path]] = field(default_factory=list)

    def out_of_time(self) -> bool:
        """Whether :attr:`deadline` has passed."""
        return self.deadline is not None and time.time() >= self.deadline

    def seed_for(self, trial: FrozenTrial) -> int:
        """The asked seed, else the trial's own."""
        return int(trial.user_attrs.get("seed", trial.number)) if self.seed is None else self.seed

    def confirmed_epochs_for(self, trial: FrozenTrial) -> int:
        """The confirmed epoch count, else the trial's best epoch, else its configured epochs."""
        config = trial.user_attrs["config"]
        configured = config.get("epochs") or config["train"]["epochs"]  # numpy-mlp's flat, the torch tasks'
        return self.confirmed_epochs or int(trial.user_attrs.get("best_epoch") or configured)


@dataclass(frozen=True)
class Refit:
    """How a task retrains its winner on all its training images.

    Args:
        train: ``(trial, data, path, request) -> record``: writes the weights to ``path`` (atomically) and
            returns a JSON-ready record (``checkpoint``, ``epochs``, ``n_train``, ``seconds``, ...).
        suffix: The weights file's suffix (``.pt``; numpy-mlp ``.npz``, like its checkpoints).
        options: The request fields a user may set (``"epochs"``, ``"data_fraction"``, ``"teachers"``);
            the others are refused with :attr:`fixed`.
        fixed: Why the other options do not apply (``"it trains its confirmed epochs on all its images"``).
        quick: Seconds, not minutes: ``confirm`` refits the confirmed winner right away.
        seconds: ``(trial, request) -> seconds`` the refit is estimated to train (the pipeline starts it
            only when they fit its budget); ``None``: the trial's own training seconds.
        teachers: The pipeline distils its refit from this many trials (the ``"teachers"`` option) when
            that refit's estimate fits its budget, else refits without; 0: never.
    """

    train: Callable[[FrozenTrial, Any, Path, RefitRequest], dict[str, Any]]
    suffix: str = ".pt"
    options: frozenset[str] = frozenset()
    fixed: str = ""
    quick: bool = True
    seconds: Callable[[FrozenTrial, RefitRequest], float] | None = None
    teachers: int = 0


def confirmed_epochs_refit(
    train: Callable[..., dict[str, Any]], *, settings: bool = False, stops: bool = False
) -> Callable[[FrozenTrial, Any, Path, RefitRequest], dict[str, Any]]:
    """A :attr:`Refit.train` that calls ``train(trial, data, path, epochs=, seed=)`` (and ``settings=`` when
    ``settings``, ``stop=request.out_of_time`` when ``stops``: ``train`` then raises
    :class:`objectives.DeadlineReached` without writing) with the trial's confirmed epochs and refit seed,
    and records them."""

    def refit(trial: FrozenTrial, data: Any, path: Path, request: RefitRequest) -> dict[str, Any]:
        epochs = request.confirmed_epochs_for(trial)
        extra: dict[str, Any] = {"settings": request.settings} if settings else {}
        if stops:
            extra["stop"] = request.out_of_time
        record = train(trial, data, path, epochs=epochs, seed=request.seed_for(trial), **extra)
        return record | {"trial": trial.number, "device": "cpu", "confirmed_epochs": epochs}

    return refit


@dataclass(frozen=True)
class ExportJob:
    """One export: the trial, the weights to write and where.

    Args:
        study_name: The study the trial belongs to.
        trial: The exported trial.
        study_attrs: The study's user attributes (data source, settings, ...).
        weights: The weights to export: the trial's refit when one is stored, else its checkpoint.
        refit: The refit's record, when the weights are a refit's.
        data: Data path for scoring the export (``None``: the study's own).
        out: The output folder (exists).
        standalone: A ``pytorch_cnn.py`` that needs only torch (see :attr:`Exporter.standalone`).
    """

    study_name: str
    trial: FrozenTrial
    study_attrs: dict[str, Any]
    weights: Path
    refit: dict[str, Any] | None
    data: str | None
    out: Path
    standalone: bool = False

    def write_winner_json(self, metric: str, **fields: Any) -> Path:
        """Write ``winner.json`` into :attr:`out`: the study, the trial, its ``metric`` value, its best epoch,
        which weights were exported (``trial`` or ``refit``), then ``fields``."""
        summary = {
            "study": self.study_name,
            "trial": self.trial.number,
            metric: self.trial.value,
            "best_epoch": self.trial.user_attrs.get("best_epoch"),
            "weights": "trial" if self.refit is None else "refit",
            "refit": self.refit,
            **fields,
        }
        return atomic_write_text(self.out / "winner.json", json.dumps(summary, indent=2) + "\n")

    def weights_source(self, images: str = "images") -> str:
        """Where the exported weights come from, in words."""
        if self.refit is None:
            best = self.trial.user_attrs.get("best_epoch")
            return f"trial {self.trial.number}'s checkpoint (best epoch {best}); no refit stored"
        return (
            f"the refit of trial {self.trial.number} ({self.refit['epochs']} epochs on "
            f"{self.refit['n_train']} {images}, {self.weights.name})"
        )


@dataclass(frozen=True)
class Exporter:
    """How a task writes its winner as the lab's files.

    Args:
        write: ``job -> paths written`` (``winner.json`` among them).
        standalone: Whether ``--standalone`` changes anything (a plain-torch ``pytorch_cnn.py``); the
            other tasks' files need no timm already.
    """

    write: Callable[[ExportJob], list[Path]]
    standalone: bool = False


@dataclass(frozen=True)
class Ensembling:
    """How a task averages its confirmed configurations into one exported network.

    Args:
        metric: The figure an ensemble is judged by, in words (``"accuracy"``).
        figure: ``(members' held-out predictions, flip) -> figure`` on one confirmation replicate.
        load_model: ``(trial, weights) -> network`` of a member.
        model_config: ``trial config dict -> the network's configuration`` (what the source is built from).
        source: ``(configs, flip, plain_torch) -> pytorch_cnn.py`` text whose lab class is the ensemble.
        class_name: The lab's class in ``pytorch_cnn.py`` (``MyNet``, ``FinetuneNet``).
        weights_name: The lab's weights file (``model.pt``, ``finetuned.pt``).
        input_shape: A batch of 100 of the evaluator's inputs (timings, checks).
        flip: ``None`` when flip TTA may be used, else why not.
        needs_timm: ``plain_torch -> bool``: whether the exported file imports timm.
        test_figures: ``(ensemble, single, data) -> figures`` on the task's test split, for information.
    """

    metric: str
    figure: Callable[[Sequence[dict[str, np.ndarray]], bool], float]
    load_model: Callable[[FrozenTrial, Path], nn.Module]
    model_config: Callable[[dict[str, Any]], Any]
    source: Callable[[list[Any], bool, bool], str]
    class_name: str
    weights_name: str
    input_shape: tuple[int, ...]
    flip: str | None = None
    needs_timm: Callable[[bool], bool] = lambda plain_torch: False
    test_figures: Callable[[nn.Module, nn.Module, str | None], dict[str, Any]] | None = None
