"""FinetuneNetEnsemble: the lab's ``FinetuneNet()`` when an ensemble is exported: :data:`FINETUNE_MEMBERS`
averaged, over a horizontal flip too when :data:`FINETUNE_FLIP`.

An exported ``pytorch_cnn.py`` holds this file with ``FINETUNE_MEMBERS`` and ``FINETUNE_FLIP`` set and
rebinds the lab's names at its end (``MemberFinetuneNet, FinetuneNet = FinetuneNet, FinetuneNetEnsemble``),
so ``FinetuneNet()`` with no argument builds the ensemble and one ``finetuned.pt`` restores it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ensemble import AveragedEnsemble
from .finetune import FinetuneCfg
from .finetune import FinetuneNet as MemberFinetuneNet

__all__ = ["FINETUNE_FLIP", "FINETUNE_MEMBERS", "FinetuneNetEnsemble"]


class FinetuneNetEnsemble(AveragedEnsemble):
    """FinetuneNets averaged: ``[B, 3, H, W]`` -> ``[B, 2]`` log of the mean probability (valid logits).

    Args:
        cfgs: The members' architectures; ``None`` builds ``FINETUNE_MEMBERS``.
        flip: Average over left-right flips too; ``None``: ``FINETUNE_FLIP``.
    """

    def __init__(self, cfgs: Sequence[FinetuneCfg] | None = None, flip: bool | None = None) -> None:
        members = [MemberFinetuneNet(cfg) for cfg in (FINETUNE_MEMBERS if cfgs is None else cfgs)]
        super().__init__(members, flip=FINETUNE_FLIP if flip is None else flip)


# The members ``FinetuneNetEnsemble()`` builds and whether it averages flips; an exported file sets them.
FINETUNE_MEMBERS: tuple[FinetuneCfg, ...] = (FinetuneCfg(),)
FINETUNE_FLIP = False
