"""Augmented views of the training photos for linear probes, at cached speed.

A probe with ``probe_views`` V trains on the backbone features of its plain training photos and of V changed
copies of each. Copy ``v`` of a photo is mirrored left-right with probability 1/2 and, with probability
``view_strength``, put under one imaging condition of the proxy's kinds (brightness, contrast, blur, noise,
JPEG, rotation, crop: :func:`objectives.finetune.proxy.condition_bank`), drawn from seeds the proxy's AUG
bank never uses. The copies depend only on the photos, ``v`` and the strength, so each view's features are
computed once per backbone, resolution and weights and cached like the plain ones (one cache file per view:
a probe with 2 views reuses the first 2 of one with 4).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.finetune import FinetuneCfg
from objectives.finetune.feature_cache import FeatureCache
from objectives.finetune.proxy import condition_bank

__all__ = ["training_view", "view_features"]

_SEED = 7_000_000  # the proxy's banks use seeds 0 (validation) and 1 (all photos)


def training_view(x: torch.Tensor, view: int, strength: float) -> torch.Tensor:
    """Copy ``view`` of every uint8 photo of ``x`` ``[N, 3, H, W]``: a seeded mirror and, for a seeded share
    ``strength`` of the photos, an imaging condition."""
    seed = _SEED + 1_000 * view + round(100 * strength)
    changed, _ = condition_bank(x, copies=1, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    conditioned = torch.rand(len(x), generator=generator) < strength
    out = torch.where(conditioned[:, None, None, None], changed, x)
    mirrored = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(mirrored[:, None, None, None], out.flip(-1), out)


def view_features(
    cfg: FinetuneCfg,
    x: torch.Tensor,
    views: int,
    strength: float,
    *,
    fingerprint: str,
    weights: str,
    extract: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, int]:
    """The features of views ``0..views-1`` of the photos ``x`` (view-major: ``[views * N, F]``) under the
    backbone and resolution of ``cfg``, and how many views came from the cache. ``fingerprint`` names the
    photos, ``weights`` the backbone's weights; ``extract(photos)`` computes features (and raises at the
    run's deadline: nothing of that view is cached)."""
    cache, parts, hits = FeatureCache(), [], 0
    for view in range(views):
        features, hit = cache.get_or_compute(
            cfg.backbone,
            cfg.resolution,
            f"{fingerprint}-view{view}-s{round(100 * strength)}",
            weights,
            lambda view=view: {"train": extract(training_view(x, view, strength))},
        )
        parts.append(features["train"])
        hits += hit
    return torch.cat(parts), hits
