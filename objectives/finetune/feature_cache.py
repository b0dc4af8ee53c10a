"""On-disk cache of frozen-backbone features, so a linear-probe trial trains only its head (seconds).

Layout: ``<root>/<backbone>/r<resolution>/<weights tag>-<data fingerprint>.pt``, a dict of float32
``[N, num_features]`` tensors (``"train"``, ``"val"``, ``"aug"``, ``"new"``), written atomically (a temp
file, then a rename). Features are pooled pre-logits of the backbone in eval mode, which is exactly what a
frozen backbone computes in training too (its batch norms stay in eval mode). Workers share the cache: the
first to miss computes under a lock file (``fcntl.flock``, in ``<root>/.locks``), the others wait for it
and then read its file.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import torch

from objectives.sources import cache_dir
from objectives.training.fit import save_state

__all__ = ["FeatureCache", "weights_tag"]


class FeatureCache:
    """Features per backbone, resolution and data fingerprint.

    Args:
        root: The cache folder (default ``$RPZTUNE_CACHE/features`` or ``~/.cache/rpztune/features``).

    Example:
        >>> cache = FeatureCache(tmp)  # doctest: +SKIP
        >>> feats, hit = cache.get_or_compute("resnet18", 96, "ab12", "w1", compute)  # doctest: +SKIP
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "features"

    def path(self, backbone: str, resolution: int, fingerprint: str, weights: str) -> Path:
        """The file holding one backbone's features of one data set at one resolution."""
        for name, value in (("backbone", backbone), ("fingerprint", fingerprint), ("weights", weights)):
            if not re.fullmatch(r"[\w.-]+", value):
                raise ValueError(f"feature cache {name} must be a plain file-name part, got {value!r}")
        return self.root / backbone / f"r{int(resolution)}" / f"{weights}-{fingerprint}.pt"

    def get_or_compute(
        self,
        backbone: str,
        resolution: int,
        fingerprint: str,
        weights: str,
        compute: Callable[[], dict[str, torch.Tensor]],
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """The cached features, or ``compute()``'s, written to the cache; and whether it was a hit. A
        ``compute`` that raises (e.g. :class:`~objectives.task.DeadlineReached` part-way) writes nothing: the
        cache only ever holds whole features."""
        path = self.path(backbone, resolution, fingerprint, weights)
        cached = _load(path)
        if cached is not None:
            return cached, True
        path.parent.mkdir(parents=True, exist_ok=True)
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{backbone}-r{int(resolution)}-{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker computing the same features: wait for it
            cached = _load(path)
            if cached is not None:
                return cached, True
            features = {k: v.detach().float().contiguous() for k, v in compute().items()}
            save_state(features, path)
        return features, False


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (unreadable or truncated: recompute and replace it)
        return None


def weights_tag(source: str, state: dict[str, torch.Tensor]) -> str:
    """A short stable tag of a state dict (its source and a sample of its values), for cache keys."""
    digest = hashlib.sha256(source.encode())
    for key in sorted(state)[:: max(1, len(state) // 16)]:
        tensor = state[key]
        digest.update(key.encode())
        digest.update(tensor.detach().float().flatten()[:64].numpy().tobytes())
    return digest.hexdigest()[:12]
