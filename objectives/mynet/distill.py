"""Distillation of an ensemble of MyNets (e.g. a confirmed ensemble) into one MyNet.

The student trains on the labelled split as usual and, on every step, on a batch of the split's unlabelled
"additional" images: the target of each is the teachers' mean class probabilities of the image as it is,
given to a strong view of it (``objectives.training.fit.Unlabelled`` with ``teacher``). The student keeps
one network's CPU cost; the teachers' labels of the additional images are never read. Measured against the
student trained alone in ``bench/ceiling_mynet.py`` (figures: docs/measurements.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from objectives.training.fit import Unlabelled

__all__ = ["teacher_probabilities", "distillation_targets"]

_CHUNK = 1024


def teacher_probabilities(teachers: Sequence[nn.Module], images: torch.Tensor) -> torch.Tensor:
    """The teachers' mean class probabilities ``[M, K]`` of uint8 images ``[M, C, H, W]`` (eval mode; the
    networks give log-probabilities)."""
    total = None
    with torch.inference_mode():
        for teacher in teachers:
            teacher.eval()
            probs = torch.cat(
                [
                    teacher(images[i : i + _CHUNK].float().div(255)).float().exp()
                    for i in range(0, len(images), _CHUNK)
                ]
            )
            total = probs if total is None else total + probs
    if total is None:
        raise ValueError("distillation needs at least one teacher")
    return total / len(teachers)


def distillation_targets(
    teachers: Sequence[nn.Module], images: torch.Tensor, weight: float = 1.0
) -> Unlabelled:
    """Unlabelled ``images`` (a split's additional images, never its validation holdout) with the teachers'
    probabilities, for ``fit(..., unlabelled=...)``; ``weight``: the distillation loss beside the labelled
    loss."""
    return Unlabelled(images, weight, threshold=0.0, teacher=teacher_probabilities(teachers, images))
