"""The labelled images ``rpztune validate`` judges accuracy on; the labels stay in the host.

MyNet: FashionMNIST test images of ``--data`` (``FashionMNIST/raw/``, as ``rpztune run mynet --data`` reads
it), else ``fashion_mnist_sample.npz`` beside this file: 500 official FashionMNIST test images (50 per class,
from Debian's ``dataset-fashion-mnist`` package, MIT licence, Zalando Research), each drawn from those
already public in the shared data's test split, so that none of the lab's hidden test images is shipped.
The sample is public, so a zip could know it: each run draws its images with a fresh seed and adds a fresh
one-grey-level dither, which defeats answering by exact lookup, not by a nearest-neighbour one; ``--data``
with images the zip cannot know is the strong check. FinetuneNet: the photos of ``--data``
(``dogs_and_cats/``, as ``rpztune run finetune`` reads them), else none: its accuracy is unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objectives.sources import DataError

__all__ = ["SAMPLE", "JudgingData", "load_judging_data"]

SAMPLE = Path(__file__).with_name("fashion_mnist_sample.npz")


@dataclass(frozen=True)
class JudgingData:
    """Images (float32 in [0, 1], NCHW) with their labels, and where they came from."""

    fashion_x: np.ndarray
    fashion_y: np.ndarray
    fashion_source: str
    photos_x: np.ndarray | None
    photos_y: np.ndarray | None
    photos_source: str


def load_judging_data(
    data: str | Path | None, seed: int, *, fashion_images: int = 1000, photos: int = 200
) -> JudgingData:
    """Draw the judging images with ``seed``.

    Raises:
        DataError: when ``data`` does not exist, or a part of it that is there does not load.
    """
    rng = np.random.default_rng(seed)
    fashion = photo_part = None
    if data is not None:
        root = Path(data).expanduser()
        if not root.exists():
            raise DataError(f"--data {str(root)!r} does not exist")
        fashion = _fashion_from(root, rng, fashion_images)
        photo_part = _photos_from(root, seed, photos)
    if fashion is None:
        fashion = _sample(rng, note="" if data is None else f"; no FashionMNIST/raw/ under {data}")
    if photo_part is None:
        where = "no --data" if data is None else f"no photo folders (dogs_and_cats/) under {data}"
        photo_part = (None, None, where)
    return JudgingData(*fashion, *photo_part)


def _sample(rng: np.random.Generator, note: str) -> tuple[np.ndarray, np.ndarray, str]:
    with np.load(SAMPLE) as sample:
        x, y = sample["x"].astype(np.int16), sample["y"].astype(np.int64)
    order = rng.permutation(len(x))
    x = np.clip(x[order] + rng.integers(-1, 2, size=x.shape), 0, 255).astype(np.float32) / 255
    return x[:, None], y[order], f"the {len(x)}-image FashionMNIST sample shipped with rpztune{note}"


def _fashion_from(root: Path, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    if root.name == "FashionMNIST" and (root / "raw").is_dir():
        root = root.parent
    if not (root / "FashionMNIST" / "raw").is_dir():
        return None
    from torchvision.datasets import FashionMNIST

    try:
        test = FashionMNIST(root, train=False, download=False)
    except Exception as exc:  # torchvision's checks raise RuntimeError, AssertionError, ValueError ...
        where = root / "FashionMNIST" / "raw"
        raise DataError(f"FashionMNIST's test images under {where} do not load: {exc}") from None
    x, y = test.data.numpy(), test.targets.numpy().astype(np.int64)
    pick = rng.permutation(len(x))[:n]
    source = f"{len(pick)} of the {len(x)} FashionMNIST test images under {root / 'FashionMNIST' / 'raw'}"
    return x[pick, None].astype(np.float32) / 255, y[pick], source


def _photos_from(root: Path, seed: int, n: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    from objectives.finetune.photos import find_photo_root, load_photos

    named = [root / "dogs_and_cats", root / "dogs_and_cats.zip"]
    holds_photos = any(p.exists() for p in named) or root.is_file()
    if not holds_photos:
        folders = [d for d in root.iterdir() if d.is_dir()]
        suffixes = (".jpg", ".jpeg", ".png")
        holds_photos = any(f.suffix.lower() in suffixes for d in folders for f in d.iterdir())
    if not holds_photos:
        return None
    photo_root = find_photo_root(root)
    photos = load_photos(photo_root, max_images=n, seed=seed % 2**32)
    x = photos.x.numpy().astype(np.float32) / 255
    source = f"{len(x)} photos drawn from {photos.source} ({', '.join(photos.classes)})"
    return x, photos.y.numpy().astype(np.int64), source
