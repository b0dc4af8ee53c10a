"""Assemble the lab's submission zip from three studies' winners (and an FCNet study), then validate it.

The zip holds, at its root: ``numpy_nn.py`` and its two figures (the numpy-mlp winner), ``pytorch_cnn.py``
holding ``MyNet``, ``FinetuneNet`` and ``classify`` together (:func:`models._standalone.submission_source`),
``model.pt`` (the mynet winner, its refit when one is stored, as ``rpztune export`` picks it),
``finetuned.pt`` (the finetune winner), ``pytorch_cnn_training.png`` (MyNet's curve),
``pytorch_fcnet_training.png`` (the lab's fully-connected baseline: the best trial of an FCNet study, a mynet
study restricted to ``stages=0``; a short one is run when the storage has none) and ``cnn.ipynb`` (a short
notebook saying where everything came from). The zip is written atomically.
"""

from __future__ import annotations

import json
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from models import submission_source
from objectives.files import replace_atomically
from reports import plot_training
from search.delivery.export import export
from search.delivery.export_ensemble import submission_ensembles
from search.delivery.validate import REQUIRED_FILES
from search.engine.storage import get_storage
from search.engine.study import run_study
from search.selection.ensemble import chosen_ensemble
from search.selection.refit import find_refit
from search.selection.winner import Winner, find_winner
from spaces.finetune import FinetuneTrialConfig
from spaces.mynet import MyNetTrialConfig

__all__ = ["FCNET_QUICK", "FCNET_QUICK_TRIALS", "Submission", "SubmissionError", "build_submission"]

# The short FCNet study run when none exists: the lab's fully-connected network on the pixels (no conv
# stage, one hidden layer), a few epochs on the lab's 9 % split; well under a minute on 2 CPU cores.
FCNET_QUICK = (
    "stages=0",
    "fc_layers=1",
    "fc_width=256",
    "epochs=5",
    "optimizer=sgd",
    "sgd_lr={low=0.02, high=0.2, log=true}",
    "batch_size=64",
    "dropout=0.0",
    "label_smoothing=0.0",
    "augment_shift=0",
    "augment_flip=false",
    "augment_erase=0.0",
)
FCNET_QUICK_TRIALS = 2
_TASKS = {"numpy": "numpy-mlp", "mynet": "mynet", "finetune": "finetune", "fcnet": "mynet"}


class SubmissionError(ValueError):
    """A study that cannot supply its part of the submission (wrong task, an FCNet with conv stages, ...)."""


@dataclass
class Submission:
    """A written submission zip and where each of its files came from."""

    path: Path
    sources: dict[str, str] = field(default_factory=dict)
    fcnet_ran: bool = False


def build_submission(
    storage: str,
    out: str | Path,
    *,
    numpy_study: str = "numpy-mlp",
    mynet_study: str = "mynet",
    finetune_study: str = "finetune",
    fcnet_study: str = "fcnet",
    standalone: bool = False,
    checkpoints: str | Path | None = None,
    ensemble: int | None = None,
    flip: bool = False,
    single: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> Submission:
    """Write the lab's zip at ``out`` from the studies' winners; run a short FCNet study when none exists.

    Args:
        storage: The storage holding the studies.
        out: The zip to write (replaced atomically).
        standalone: Write ``FinetuneNet`` in plain torch (no timm needed where it is evaluated).
        ensemble: ``MyNet`` and ``FinetuneNet`` average the top ``ensemble`` confirmed configurations of
            their studies, each where its confirmation shows a gain (``search/delivery/export_ensemble.py``).
        flip: With ``ensemble``, FinetuneNet averages left-right flips too.
        single: Without ``ensemble``: each winner alone, not the ensemble ``rpztune run`` chose for it
            (``search.selection.ensemble.chosen_ensemble``).
        log: Called with one line per step (the CLI prints them).

    Raises:
        StudyError: when a study is missing or has no completed trial.
        CheckpointError: when a winner's (or its refit's) checkpoint is missing or does not load.
        SubmissionError: when a study is of the wrong task, the FCNet study has conv stages, or
            ``standalone`` is asked for a backbone without a plain-torch version.
    """
    if flip and ensemble is None:
        raise ValueError("--tta flip averages an ensemble's members over flips: give --ensemble K too")
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {str(out.parent)!r} of --out does not exist")
    numpy = _winner(storage, numpy_study, "numpy", checkpoints)
    mynet = _winner(storage, mynet_study, "mynet", checkpoints)
    finetune = _winner(storage, finetune_study, "finetune", checkpoints)
    mynet_cfg = MyNetTrialConfig.from_dict(mynet.trial.user_attrs["config"]).model
    finetune_cfg = FinetuneTrialConfig.from_dict(finetune.trial.user_attrs["config"]).model
    try:
        source = submission_source(mynet_cfg, finetune_cfg, plain_torch=standalone)
    except ValueError as exc:  # a backbone without a plain-torch version
        raise SubmissionError(f"--standalone: {exc}") from None

    submission = Submission(out)
    fcnet, submission.fcnet_ran = _fcnet_winner(storage, fcnet_study, mynet, checkpoints, log)
    with tempfile.TemporaryDirectory(prefix="rpztune-submit-") as tmp:
        work = Path(tmp)
        files: dict[str, Path] = {}
        for name, winner in (("numpy", numpy), ("mynet", mynet), ("finetune", finetune)):
            log(f"exporting {winner.describe()}")
            export(winner, work / name)
        files["numpy_nn.py"] = work / "numpy" / "numpy_nn.py"
        files["numpy_nn_training.png"] = work / "numpy" / "numpy_nn_training.png"
        files["numpy_nn_classification.png"] = work / "numpy" / "numpy_nn_classification.png"
        files["model.pt"] = work / "mynet" / "model.pt"
        files["pytorch_cnn_training.png"] = work / "mynet" / "pytorch_cnn_training.png"
        files["finetuned.pt"] = work / "finetune" / "finetuned.pt"
        files["pytorch_cnn.py"] = work / "pytorch_cnn.py"
        files["pytorch_cnn.py"].write_text(source)
        parts = {"mynet": mynet, "finetune": finetune}
        choices = _ensembles(parts, ensemble, flip, single)
        if choices:
            source, packed, notes = submission_ensembles(
                storage, parts, choices, work, plain_torch=standalone, checkpoints=checkpoints, log=log
            )
            files["pytorch_cnn.py"].write_text(source)
            files |= packed
        files["pytorch_fcnet_training.png"] = _plot_fcnet(fcnet, work / "pytorch_fcnet_training.png")
        refit = find_refit(mynet)
        submission.sources = {
            "numpy_nn.py": f"{_describe(numpy)} (layers; numpy only)"
            + (" with its refit's weights" if find_refit(numpy) else ""),
            "pytorch_cnn.py": f"MyNet of {_describe(mynet)}, FinetuneNet of {_describe(finetune)}"
            + (" (plain torch)" if standalone else ""),
            "model.pt": _describe(mynet) + (" (its refit)" if refit else " (the trial's own weights)"),
            "finetuned.pt": _describe(finetune) + (" (its refit)" if find_refit(finetune) else ""),
            "pytorch_fcnet_training.png": _describe(fcnet),
        }
        if choices:
            submission.sources |= {
                name: f"{submission.sources[name]}; {note}" for name, note in notes.items()
            }
        files["cnn.ipynb"] = _notebook(work / "cnn.ipynb", submission.sources)
        assert set(REQUIRED_FILES) <= set(files), "every required file has a source"
        _write_zip(out, files)
    return submission


def _ensembles(
    parts: dict[str, Winner], ensemble: int | None, flip: bool, single: bool
) -> dict[str, tuple[int, bool]]:
    """Part → (members, flip): the asked ``ensemble`` for both, else what the pipeline chose for each."""
    if ensemble is not None:
        return {part: (ensemble, flip) for part in parts}
    if single:
        return {}
    chosen = {part: chosen_ensemble(winner.study) for part, winner in parts.items() if winner.confirmed}
    return {part: (len(c["members"]), bool(c["flip"])) for part, c in chosen.items() if c}


def _winner(storage: str, study: str, role: str, checkpoints: str | Path | None) -> Winner:
    winner = find_winner(storage, study, checkpoints=checkpoints)
    if winner.task.name != _TASKS[role]:
        raise SubmissionError(
            f"study {study!r} is a {winner.task.name} study; the {role} part needs a {_TASKS[role]} study"
        )
    return winner


def _fcnet_winner(
    storage: str, study: str, mynet: Winner, checkpoints: str | Path | None, log: Callable[[str], None]
) -> tuple[Winner, bool]:
    """The FCNet study's winner; a short study (``FCNET_QUICK``) is run first when the storage has none."""
    ran = False
    if study not in _study_names(storage):
        log(
            f"no study {study!r}: running a short FCNet study ({FCNET_QUICK_TRIALS} trials of a mynet study "
            "with stages=0, 5 epochs on the lab's 9 % split; well under a minute on 2 CPU cores)"
        )
        start = time.monotonic()
        summary = run_study(
            "mynet",
            study_name=study,
            storage=storage,
            data=mynet.data,
            seed=0,
            pruner="none",
            overrides=FCNET_QUICK,
            n_trials=FCNET_QUICK_TRIALS,
            checkpoints=checkpoints,
            device="cpu",
            progress=False,
        )
        log(
            f"  {study!r}: best val_accuracy {summary.best_value:.4f} (trial {summary.best_trial}), "
            f"{time.monotonic() - start:.0f} s"
        )
        ran = True
    winner = _winner(storage, study, "fcnet", checkpoints)
    channels = winner.trial.user_attrs["config"]["model"]["channels"]
    if channels:
        raise SubmissionError(
            f"study {study!r} is no FCNet: its winner has conv stages {channels}; run one with "
            f"rpztune run mynet --study {study} --set stages=0, or name another --fcnet-study"
        )
    return winner, ran


def _study_names(storage: str) -> list[str]:
    summaries = optuna.get_all_study_summaries(get_storage(storage), include_best_trial=False)
    return [s.study_name for s in summaries]


def _describe(winner: Winner) -> str:
    metric = winner.study.user_attrs.get("metric", "value")
    return f"trial {winner.trial.number} of {winner.study.study_name!r} ({metric} {winner.trial.value:.4f})"


def _plot_fcnet(winner: Winner, path: Path) -> Path:
    curves = winner.trial.user_attrs["curves"]
    return plot_training(
        {"validation_accuracy": [100 * a for a in curves["val_accuracy"]]},
        path,
        ylabel="%",
        best_epoch=winner.trial.user_attrs.get("best_epoch"),
        title=f"FCNet ({winner.study.study_name}: trial {winner.trial.number})",
    )


def _notebook(path: Path, sources: dict[str, str]) -> Path:
    """A small ``cnn.ipynb``: where each file came from, and how to load the networks."""
    rows = "\n".join(f"| `{name}` | {text} |" for name, text in sources.items())
    cells: Sequence[tuple[str, str]] = (
        ("markdown", f"# RPZ CNN lab: submission made by rpztune\n\n| file | from |\n|---|---|\n{rows}\n"),
        (
            "code",
            "import torch\n"
            "from pytorch_cnn import FinetuneNet, MyNet, classify\n\n"
            "mynet = MyNet()\n"
            'mynet.load_state_dict(torch.load("model.pt", weights_only=True))\n'
            "finetune = FinetuneNet()\n"
            'finetune.load_state_dict(torch.load("finetuned.pt", weights_only=True))\n'
            "classify(mynet, torch.rand(8, 1, 28, 28))",
        ),
    )
    notebook: dict[str, Any] = {
        "cells": [
            {"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True)}
            | ({"execution_count": None, "outputs": []} if kind == "code" else {})
            for kind, text in cells
        ],
        "metadata": {"language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1) + "\n")
    return path


def _write_zip(out: Path, files: dict[str, Path]) -> Path:
    """Write ``files`` (name in the zip -> file) at the zip's root, atomically: a temp file, then a rename."""

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(files):
                archive.write(files[name], arcname=name)

    return replace_atomically(out, write)
