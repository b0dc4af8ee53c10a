"""MyNetEnsemble: the lab's ``MyNet()`` when an ensemble is exported: :data:`MYNET_MEMBERS` averaged.

An exported ``pytorch_cnn.py`` holds this file with ``MYNET_MEMBERS`` set to the members' architectures and
rebinds the lab's names at its end (``MemberMyNet, MyNet = MyNet, MyNetEnsemble``), so ``MyNet()`` with no
argument builds the ensemble and one ``model.pt`` (``models.ensemble.pack_states``) restores it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ensemble import AveragedEnsemble
from .mynet import MyNet as MemberMyNet
from .mynet import MyNetCfg

__all__ = ["MYNET_MEMBERS", "MyNetEnsemble"]


class MyNetEnsemble(AveragedEnsemble):
    """MyNets averaged: ``[B, 1, 28, 28]`` -> ``[B, 10]`` log of the mean probability.

    Args:
        cfgs: The members' architectures; ``None`` builds ``MYNET_MEMBERS``.
    """

    def __init__(self, cfgs: Sequence[MyNetCfg] | None = None) -> None:
        super().__init__([MemberMyNet(cfg) for cfg in (MYNET_MEMBERS if cfgs is None else cfgs)])


# The members ``MyNetEnsemble()`` builds; an exported pytorch_cnn.py sets them.
MYNET_MEMBERS: tuple[MyNetCfg, ...] = (MyNetCfg(),)
