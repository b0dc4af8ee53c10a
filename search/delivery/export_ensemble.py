"""Export an ensemble: the confirmed winner and the next K - 1 confirmed configurations packed into one
``MyNet()`` / ``FinetuneNet()`` (``models/_ensemble_source.py``) with one state dict, written only when
confirmation shows the ensemble scoring higher than the winner (``search/selection/ensemble.py``).

Files: ``pytorch_cnn.py``, ``model.pt`` (mynet) or ``finetuned.pt`` (finetune), ``winner.json`` with the
members, the paired held-out estimate and the CPU milliseconds per 100 images of the winner alone and of
the ensemble (1 thread, as ``rpztune validate`` times them). The written file is imported and checked: its
output must be the log of the mean of the members' softmax (over flips too with TTA).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import ensemble_source
from models.ensemble import AveragedEnsemble, pack_states
from objectives.files import atomic_write_text
from objectives.hooks import Ensembling
from objectives.training.cpu_cost import cpu_ms_per_100
from objectives.training.fit import save_state
from search.engine.study import study_dir
from search.selection.ensemble import EnsembleEstimate, estimate_ensemble, member_weights
from search.selection.winner import Winner

__all__ = ["EnsembleExport", "export_ensemble", "packed_ensemble", "submission_ensembles"]

_MAX_DIFF = 1e-4


@dataclass(frozen=True)
class EnsembleExport:
    """What an ensemble export wrote and measured."""

    written: list[Path]
    estimate: EnsembleEstimate
    single_ms: float
    ensemble_ms: float
    sources: list[str]


def packed_ensemble(
    winner: Winner, trials: list[int], folder: Path, *, flip: bool = False
) -> tuple[list[Any], AveragedEnsemble, list[str], list[torch.nn.Module]]:
    """The members' configurations, the ensemble with their weights loaded, where each member's weights
    came from (``refit`` or ``trial``) and the member nets.

    Raises:
        CheckpointError: when a member's weights were not kept or do not load.
    """
    load_model = _hooks(winner).load_model
    all_trials = winner.study.get_trials(deepcopy=False)
    weights = member_weights(winner.study, folder, trials)
    nets = [load_model(all_trials[t], path) for t, (path, _) in zip(trials, weights, strict=True)]
    cfgs = [net.cfg for net in nets]
    ensemble = AveragedEnsemble(nets, flip=flip).eval()
    return cfgs, ensemble, [source for _, source in weights], nets


def export_ensemble(
    winner: Winner,
    out: Path,
    k: int,
    *,
    storage: str,
    checkpoints: str | Path | None = None,
    flip: bool = False,
    plain_torch: bool = False,
    require_gain: bool = True,
) -> EnsembleExport:
    """Write the ensemble of the top ``k`` confirmed configurations when confirmation shows it scores higher
    (``require_gain=False`` writes it regardless, for measuring; the CLI always requires the gain).

    Raises:
        ValueError: for another task, too few confirmed configurations, missing held-out predictions, or
            when the ensemble does not score higher than the winner on the confirmation replicates (the
            message gives both figures); or when the written file does not reproduce the ensemble.
        CheckpointError: when a member's weights were not kept or do not load.
    """
    study = winner.study
    if winner.confirmed is None:
        raise ValueError(
            f"--ensemble {k}: export the confirmed winner (no --trial), the ensemble is built around it"
        )
    estimate = estimate_ensemble(study, study_dir(storage, study.study_name), k, flip=flip)
    if require_gain and not estimate.helps:
        raise ValueError(
            f"--ensemble {k}: confirmation shows no gain, so no ensemble is written: {estimate.describe()}; "
            "export without --ensemble writes the winner alone"
        )
    hooks = _hooks(winner)
    folder = (
        winner.checkpoint.parent if checkpoints is None else study_dir(storage, study.study_name, checkpoints)
    )
    cfgs, ensemble, sources, nets = packed_ensemble(winner, list(estimate.members), folder, flip=flip)
    source = hooks.source(cfgs, flip, plain_torch)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / hooks.weights_name
    written = [atomic_write_text(out / "pytorch_cnn.py", source)]
    written.append(save_state(pack_states([net.state_dict() for net in nets]), weights))
    _check_file(out / "pytorch_cnn.py", hooks, ensemble, weights)
    single_ms = cpu_ms_per_100(nets[0], hooks.input_shape[1:])
    ensemble_ms = cpu_ms_per_100(ensemble, hooks.input_shape[1:])
    summary: dict[str, Any] = {
        "study": study.study_name,
        "trial": winner.trial.number,
        "selection": winner.describe(),
        "ensemble": estimate.to_dict() | {"weights": sources},
        "cpu_ms_per_100": {"single": single_ms, "ensemble": ensemble_ms, "threads": 1},
        "configs": [
            t.user_attrs["config"] for t in (study.get_trials(deepcopy=False)[m] for m in estimate.members)
        ],
        "needs_timm": hooks.needs_timm(plain_torch),
        "usage": (
            f"from pytorch_cnn import {hooks.class_name}, classify; model = {hooks.class_name}(); "
            f"model.load_state_dict(torch.load('{weights.name}', weights_only=True)); classify(model, x)"
        ),
    }
    if hooks.test_figures is not None:
        summary |= hooks.test_figures(ensemble, nets[0], winner.data)
    written.append(atomic_write_text(out / "winner.json", json.dumps(summary, indent=2) + "\n"))
    return EnsembleExport(written, estimate, single_ms, ensemble_ms, sources)


def _check_file(path: Path, hooks: Ensembling, ensemble: AveragedEnsemble, weights: Path) -> None:
    """Import the written file, build the lab's class with no argument, load ``weights`` strictly, and
    compare its output with ``ensemble``'s (the mean of the members' softmax) on random images."""
    name = "_rpztune_exported_ensemble"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import the exported {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        model = getattr(module, hooks.class_name)()
    finally:
        del sys.modules[name]
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # strict
    x = torch.rand(4, *hooks.input_shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = ensemble.eval()(x), model.eval()(x)
    diff = (got - expected).abs().max().item()
    if got.shape != expected.shape or diff > _MAX_DIFF:
        raise ValueError(
            f"the exported ensemble's output differs from the members' mean softmax by {diff:.2e}"
        )


def submission_ensembles(
    storage: str,
    winners: dict[str, Winner],
    choices: dict[str, tuple[int, bool]],
    work: Path,
    *,
    plain_torch: bool = False,
    checkpoints: str | Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[str, dict[str, Path], dict[str, str]]:
    """A submission's ``pytorch_cnn.py`` text and weights with ensembles where confirmation shows a gain.

    Each part (``winners``: ``"mynet"``, ``"finetune"``) named in ``choices`` (part → members ``k``, flip
    TTA) is an ensemble of the top ``k`` confirmed configurations when its paired gain is positive, else its
    winner alone (``log`` says which and why).

    Returns:
        The file's text, the weights files written under ``work`` (``model.pt``, ``finetuned.pt``) for the
        parts that are ensembles, and a note per such file.

    Raises:
        ValueError: as :func:`search.selection.ensemble.estimate_ensemble` (too few confirmed configurations,
            missing predictions), or for a part whose winner is not its study's confirmed winner.
        CheckpointError: when a member's weights were not kept or do not load.
    """
    cfgs: dict[str, list[Any]] = {}
    files: dict[str, Path] = {}
    notes: dict[str, str] = {}
    flipped = False
    for task, winner in winners.items():
        if task not in choices:
            continue
        k, flip = choices[task]
        use_flip = flip and _hooks(winner).flip is None
        estimate = estimate_ensemble(
            winner.study, study_dir(storage, winner.study.study_name), k, flip=use_flip
        )
        if not estimate.helps:
            log(f"{task}: the winner alone, confirmation shows no gain for the {estimate.describe()}")
            continue
        folder = winner.checkpoint.parent
        members, _, sources, nets = packed_ensemble(winner, list(estimate.members), folder, flip=use_flip)
        log(f"{task}: {estimate.describe()}: used")
        cfgs[task] = members
        flipped = flipped or use_flip
        name = _hooks(winner).weights_name
        files[name] = save_state(pack_states([net.state_dict() for net in nets]), work / name)
        notes[name] = f"an ensemble of trials {list(estimate.members)} ({', '.join(sources)} weights)"
    mynet_cfgs = cfgs.get("mynet") or ([_config(winners["mynet"])] if "mynet" in winners else None)
    finetune_cfgs = cfgs.get("finetune") or (
        [_config(winners["finetune"])] if "finetune" in winners else None
    )
    source = ensemble_source(mynet_cfgs, finetune_cfgs, flip=flipped, plain_torch=plain_torch)
    return source, files, notes


def _config(winner: Winner) -> Any:
    return _hooks(winner).model_config(winner.trial.user_attrs["config"])


def _hooks(winner: Winner) -> Ensembling:
    if winner.task.ensembling is None:
        raise ValueError(f"--ensemble: a {winner.task.name} study has no ensembles")
    return winner.task.ensembling
