"""The lab's ``pytorch_cnn.py`` with ensembles: ``MyNet()`` and/or ``FinetuneNet()`` build averaged
ensembles (``models/ensemble.py``) of fixed architectures, still with no argument and one state dict.

The file is merged like every export (``_standalone.standalone_source``: the modules' own source, the
member tuples rebound to the exported ones), then its last lines rebind the lab's names to the ensembles
(``MemberMyNet, MyNet = MyNet, MyNetEnsemble``). A part given one configuration is exported as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from . import ensemble, finetune_ensemble, mynet, mynet_ensemble, prediction
from ._standalone import config_literal, finetune_modules, standalone_source
from .finetune import FinetuneCfg
from .mynet import MyNetCfg

__all__ = ["ensemble_source"]

_HEADER = '''"""pytorch_cnn.py: the lab's network file, exported by rpztune.

{parts}
Restore weights with ``model.load_state_dict(torch.load(path, weights_only=True))``; ``classify(model, x)``
returns the predicted classes. An ensemble's output is the log of its members' mean softmax probability
(MyNet: log-probabilities; FinetuneNet: logits). {needs}
"""
'''
_MYNET = {
    False: "``MyNet()`` builds the tuned FashionMNIST CNN (``MYNET_CFG``; weights: ``model.pt``).",
    True: (
        "``MyNet()`` builds an ensemble of {n} tuned FashionMNIST CNNs (``MYNET_MEMBERS``; weights: one\n"
        "``model.pt``) averaging their probabilities."
    ),
}
_FINETUNE = {
    False: (
        "``FinetuneNet()`` builds the tuned Dogs-vs-Cats net (``FINETUNE_CFG``; weights:\n``finetuned.pt``)."
    ),
    True: (
        "``FinetuneNet()`` builds an ensemble of {n} tuned Dogs-vs-Cats nets (``FINETUNE_MEMBERS``;\n"
        "weights: one ``finetuned.pt``) averaging their probabilities{flip}."
    ),
}


class _Members:
    """A tuple of configurations whose ``repr`` is one per line (like ruff format)."""

    def __init__(self, cfgs: tuple[Any, ...]) -> None:
        self.cfgs = cfgs

    def __repr__(self) -> str:
        items = "".join("    " + config_literal(c).replace("\n", "\n    ") + ",\n" for c in self.cfgs)
        return f"(\n{items})"


def ensemble_source(
    mynet_cfgs: Sequence[MyNetCfg] | None = None,
    finetune_cfgs: Sequence[FinetuneCfg] | None = None,
    *,
    flip: bool = False,
    plain_torch: bool = False,
) -> str:
    """The text of a ``pytorch_cnn.py`` whose ``MyNet()`` / ``FinetuneNet()`` build the given members.

    Args:
        mynet_cfgs: MyNet's members (one: a single MyNet, as ``pytorch_cnn_source``); ``None``: no MyNet.
        finetune_cfgs: FinetuneNet's members; ``None``: no FinetuneNet.
        flip: FinetuneNet averages over left-right flipped images too (test-time augmentation).
        plain_torch: FinetuneNet's backbones in plain torch (EfficientNet-Lite only; no timm needed).

    Raises:
        ValueError: with no part, an empty member list, ``flip`` without a FinetuneNet, or with
            ``plain_torch`` for a backbone without a plain-torch version.
    """
    if not mynet_cfgs and not finetune_cfgs:
        raise ValueError("ensemble_source needs MyNet or FinetuneNet members")
    if flip and not finetune_cfgs:
        raise ValueError("flip test-time augmentation is for FinetuneNet")
    modules: list[ModuleType] = [prediction]
    defaults: dict[str, Any] = {}
    tail, parts = [], []
    many_mynet = bool(mynet_cfgs) and len(mynet_cfgs) > 1
    many_finetune = bool(finetune_cfgs) and (len(finetune_cfgs) > 1 or flip)
    if mynet_cfgs:
        modules.append(mynet)
        defaults["MYNET_CFG"] = mynet_cfgs[0]
        parts.append(_MYNET[many_mynet].format(n=len(mynet_cfgs)))
    if many_mynet or many_finetune:
        modules.append(ensemble)
    if many_mynet:
        modules.append(mynet_ensemble)
        defaults["MYNET_MEMBERS"] = _Members(tuple(mynet_cfgs))
        tail.append("MemberMyNet, MyNet = MyNet, MyNetEnsemble")
    if finetune_cfgs:
        backbones = [finetune_modules(cfg, plain_torch=plain_torch)[0] for cfg in finetune_cfgs]
        modules += [*dict.fromkeys(backbones), finetune_modules(finetune_cfgs[0], plain_torch=plain_torch)[1]]
        defaults["FINETUNE_CFG"] = finetune_cfgs[0]
        flipped = " and over left-right flips (test-time augmentation)" if flip else ""
        parts.append(_FINETUNE[many_finetune].format(n=len(finetune_cfgs), flip=flipped))
    if many_finetune:
        modules.append(finetune_ensemble)
        defaults["FINETUNE_MEMBERS"] = _Members(tuple(finetune_cfgs))
        defaults["FINETUNE_FLIP"] = flip
        tail.append("MemberFinetuneNet, FinetuneNet = FinetuneNet, FinetuneNetEnsemble")
    needs = "Needs only torch." if plain_torch or not finetune_cfgs else "Needs torch and timm."
    header = _HEADER.format(parts="\n".join(parts), needs=needs)
    source = standalone_source(modules, defaults, header=header)
    if tail:
        source += "\n\n# The lab's names build the ensembles (members are built from the Member* classes).\n"
        source += "\n".join(tail) + "\n"
    return source
