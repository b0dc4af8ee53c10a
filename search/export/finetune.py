"""Export a finetune winner: ``pytorch_cnn.py`` (``FinetuneNet()`` builds the winner without downloading),
``finetuned.pt`` (every weight: backbone and head) and ``winner.json`` (the proxy and its parts)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models import finetune
from models._standalone import standalone_source
from objectives.finetune import load_model
from spaces.finetune import FinetuneTrialConfig

from ..winner import Winner
from ._files import atomic_copy, atomic_write_text

__all__ = ["export_finetune", "finetune_source"]

_HEADER = '''"""pytorch_cnn.py: the lab's FinetuneNet, exported by rpztune.

``FinetuneNet()`` builds the tuned architecture (``FINETUNE_CFG``) from timm with ``pretrained=False``:
nothing is downloaded. Restore every weight with
``model.load_state_dict(torch.load("finetuned.pt", weights_only=True))``. Input ``[B, 3, 96, 96]`` in
``[0, 1]`` (``Resize((96, 96))`` + ``ToTensor()``), output ``[B, 2]`` logits, classes cat=0, dog=1.
Needs torch and timm.
"""
'''


def finetune_source(cfg: finetune.FinetuneCfg) -> str:
    """The text of a ``pytorch_cnn.py`` whose ``FinetuneNet()`` builds ``cfg``."""
    return standalone_source([finetune], {"FINETUNE_CFG": cfg}, header=_HEADER)


def export_finetune(winner: Winner, out: Path, data: str | None) -> list[Path]:
    """Write pytorch_cnn.py, finetuned.pt and winner.json; check that the weights load into the file's net.

    Raises:
        ValueError: when the checkpoint does not fit the trial's architecture.
    """
    trial = winner.trial
    cfg = FinetuneTrialConfig.from_dict(trial.user_attrs["config"])
    written = [atomic_write_text(out / "pytorch_cnn.py", finetune_source(cfg.model))]
    written.append(atomic_copy(winner.checkpoint, out / "finetuned.pt"))
    model = load_model(trial, out / "finetuned.pt")  # strict: every key and shape fits
    with torch.inference_mode():
        shape = tuple(model(torch.rand(1, 3, 96, 96)).shape)
    if shape != (1, cfg.model.num_classes):
        raise ValueError(f"the exported FinetuneNet returns {shape}, not (1, {cfg.model.num_classes})")
    attrs = trial.user_attrs
    summary = {
        "study": winner.study.study_name,
        "trial": trial.number,
        "proxy": trial.value,
        "orig_acc": attrs.get("orig_acc"),
        "aug_acc": attrs.get("aug_acc"),
        "new_acc": attrs.get("new_acc"),
        "proxy_note": attrs.get("proxy_note"),
        "best_epoch": attrs.get("best_epoch"),
        "weights_source": attrs.get("weights_source"),
        "n_params": attrs.get("n_params"),
        "config": attrs["config"],
        "data_source": winner.study.user_attrs.get("data_source"),
        "backbones": winner.study.user_attrs.get("backbones"),
        "classes": ["cat", "dog"],
        "usage": (
            "from pytorch_cnn import FinetuneNet; model = FinetuneNet(); "
            "model.load_state_dict(torch.load('finetuned.pt', weights_only=True)); model.eval(); model(x)"
        ),
    }
    written.append(atomic_write_text(out / "winner.json", json.dumps(summary, indent=2) + "\n"))
    print(
        f"finetuned.pt: trial {trial.number}'s checkpoint (best epoch {attrs.get('best_epoch')}); proxy "
        f"{trial.value:.4f} = ORIG {attrs.get('orig_acc')}, AUG {attrs.get('aug_acc')} "
        f"({attrs.get('proxy_note')})"
    )
    return written
