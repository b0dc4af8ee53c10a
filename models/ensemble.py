"""AveragedEnsemble: several classifiers as one, averaging their softmax probabilities (optionally over a
horizontal flip too); the exported ``MyNet()`` / ``FinetuneNet()`` of an ensemble export is one.

Its output is ``log`` of the members' mean probability, so it is a valid log-probability (MyNet's contract,
``exp`` rows sum to 1) and a valid logit (FinetuneNet's: ``softmax`` of it is the mean probability), and its
argmax is the averaged vote. Probabilities are averaged, not logits or log-probabilities: members trained
apart have logits on different scales (one confident member would outvote the rest), and the mean
probability is the ensemble's estimate of each class's probability, which is what the held-out accuracy of
confirmation scores (``search/selection/ensemble.py`` averages the same probabilities).

Example:
    >>> ensemble = AveragedEnsemble([MyNet(), MyNet()])
    >>> ensemble(torch.rand(4, 1, 28, 28)).exp().sum(dim=1)  # doctest: +SKIP
    tensor([1., 1., 1., 1.])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["AveragedEnsemble", "pack_states"]


class AveragedEnsemble(nn.Module):
    """Members ``[B, C]`` outputs (logits or log-probabilities) -> ``log`` of their mean softmax.

    Args:
        members: The networks (kept as ``self.members``: state-dict keys ``members.<i>.<key>``).
        flip: Test-time augmentation: average every member over ``x`` and ``x`` flipped left-right too.
    """

    def __init__(self, members: Sequence[nn.Module], *, flip: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` images -> ``[B, C]`` log of the mean probability over members (and flips)."""
        views = [x, x.flip(-1)] if self.flip else [x]
        logs = [member(v).log_softmax(dim=1) for member in self.members for v in views]
        return torch.logsumexp(torch.stack(logs), dim=0) - math.log(len(logs))


def pack_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One state dict for an :class:`AveragedEnsemble` from its members' state dicts, in member order."""
    return {f"members.{i}.{key}": value for i, state in enumerate(states) for key, value in state.items()}
