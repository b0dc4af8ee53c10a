"""Export a finetune winner: ``pytorch_cnn.py`` (``FinetuneNet()`` builds the winner without downloading;
with ``plain_torch`` it needs no timm), ``finetuned.pt`` (every weight: backbone and head) and ``winner.json``
(the proxy and its parts)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from models import finetune, finetune_modules, prediction, standalone_source
from objectives.files import atomic_copy, atomic_write_text
from objectives.finetune.objective import load_model
from objectives.hooks import ExportJob
from spaces.finetune import FinetuneTrialConfig

__all__ = ["export_finetune", "finetune_source"]

_HEADER = '''"""pytorch_cnn.py: the lab's FinetuneNet, exported by rpztune.

``FinetuneNet()`` builds the tuned architecture (``FINETUNE_CFG``), nothing is downloaded:
{backbone}
Restore every weight with ``model.load_state_dict(torch.load("finetuned.pt", weights_only=True))``. Input
``[B, 3, 96, 96]`` in ``[0, 1]`` (``Resize((96, 96))`` + ``ToTensor()``), output ``[B, 2]`` logits, classes
cat=0, dog=1; ``classify(model, x)`` returns the ``[B]`` class indices (the lab's evaluator calls it).
"""
'''
_TIMM = "the backbone comes from timm (``pretrained=False``). Needs torch and timm."
_PLAIN = "a plain-torch EfficientNet-Lite backbone with timm's keys and outputs. Needs only torch."
_MAX_DIFF = 1e-4  # logits of the exported file vs the trained net (measured: 0 on the CPU)


def finetune_source(cfg: finetune.FinetuneCfg, *, plain_torch: bool = False) -> str:
    """The text of a ``pytorch_cnn.py`` whose ``FinetuneNet()`` builds ``cfg``, with the lab's ``classify``.

    Args:
        cfg: The winner's architecture.
        plain_torch: Build the backbone without timm, so the file needs only torch.

    Raises:
        ValueError: with ``plain_torch``, when ``cfg.backbone`` is not an EfficientNet-Lite (naming those).
    """
    return standalone_source(
        [prediction, *finetune_modules(cfg, plain_torch=plain_torch)],
        {"FINETUNE_CFG": cfg},
        header=_HEADER.format(backbone=_PLAIN if plain_torch else _TIMM),
    )


def export_finetune(job: ExportJob) -> list[Path]:
    """Write pytorch_cnn.py, finetuned.pt and winner.json; check that the weights load into the file's net
    and give the trained net's logits.

    Args:
        job: The export; with ``job.standalone`` the ``pytorch_cnn.py`` needs only torch (EfficientNet-Lite
            backbones only). The photos are not needed to export.

    Raises:
        ValueError: when the checkpoint does not fit the file's architecture or their logits differ, or
            with ``plain_torch``, for a backbone that has no plain-torch version.
    """
    trial, out, plain_torch = job.trial, job.out, job.standalone
    cfg = FinetuneTrialConfig.from_dict(trial.user_attrs["config"])
    source = finetune_source(cfg.model, plain_torch=plain_torch)
    written = [atomic_write_text(out / "pytorch_cnn.py", source)]
    written.append(atomic_copy(job.weights, out / "finetuned.pt"))
    _check_file_net(out / "pytorch_cnn.py", load_model(trial, out / "finetuned.pt"), out / "finetuned.pt")
    attrs = trial.user_attrs
    written.append(
        job.write_winner_json(
            "proxy",
            orig_acc=attrs.get("orig_acc"),
            aug_acc=attrs.get("aug_acc"),
            new_acc=attrs.get("new_acc"),
            proxy_note=attrs.get("proxy_note"),
            weights_source=attrs.get("weights_source"),
            n_params=attrs.get("n_params"),
            config=attrs["config"],
            needs_timm=not plain_torch,
            data_source=job.study_attrs.get("data_source"),
            backbones=job.study_attrs.get("backbones"),
            classes=["cat", "dog"],
            usage=(
                "from pytorch_cnn import FinetuneNet, classify; model = FinetuneNet(); "
                "model.load_state_dict(torch.load('finetuned.pt', weights_only=True)); classify(model, x)"
            ),
        )
    )
    print(
        f"finetuned.pt: {job.weights_source('photos')}; proxy "
        f"{trial.value:.4f} = ORIG {attrs.get('orig_acc')}, AUG {attrs.get('aug_acc')} "
        f"({attrs.get('proxy_note')})"
    )
    return written


def _check_file_net(path: Path, trained: torch.nn.Module, weights: Path) -> None:
    """Import the written ``pytorch_cnn.py``, load ``weights`` strictly into its ``FinetuneNet()``, compare
    its logits with ``trained``'s on random images and its ``classify`` with their argmax."""
    name = "_rpztune_exported_pytorch_cnn"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import the exported {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        model = module.FinetuneNet()
    finally:
        del sys.modules[name]
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # strict
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = trained.eval()(x), model.eval()(x)
    if got.shape != expected.shape:
        raise ValueError(f"the exported FinetuneNet returns {tuple(got.shape)}, not {tuple(expected.shape)}")
    diff = (got - expected).abs().max().item()
    if diff > _MAX_DIFF:
        raise ValueError(f"the exported FinetuneNet's logits differ from the trained net's by {diff:.2e}")
    if not torch.equal(module.classify(model, x), got.argmax(dim=1)):
        raise ValueError("the exported classify disagrees with the argmax of FinetuneNet's logits")
