"""Photo folders for the finetune task: an ImageFolder directory or the lab's ``dogs_and_cats.zip``.

Each image is decoded and resized once (as the evaluator does: PIL ``Resize((96, 96))``, bilinear, then
``ToTensor``; kept as uint8, which ``ToTensor`` divides by 255 exactly). Corrupt or non-image files are
skipped with a warning and counted. A zip is extracted once into the cache, refusing absolute paths and ``..``
entries. A photo of more than ``MAX_PIXELS`` (25 megapixels, the size of a large phone photo) is skipped and
counted too, before it is decoded (a 12,000-pixel square decodes at 1.9 GB). Classes are the sub-folder names
in sorted order, as ``ImageFolder`` has them; the lab's models have two outputs, so a folder must hold exactly
two classes, each with readable photos.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from objectives.sources import DataError, cache_dir

__all__ = [
    "IMAGE_SIZE",
    "MAX_PIXELS",
    "N_CLASSES",
    "Photos",
    "find_photo_root",
    "load_photos",
    "safe_extract",
    "seeded_split",
]

IMAGE_SIZE = 96
MAX_PIXELS = 25_000_000  # larger photos are skipped before decoding (a decompression bomb, or a scan)
N_CLASSES = 2  # cat, dog: the lab's models have two outputs
_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
_FOLDER_NAMES = ("dogs_and_cats", "dogs_and_cats.zip")


@dataclass
class Photos:
    """Decoded photos of one folder.

    Args:
        x: uint8 images ``[N, 3, 96, 96]``.
        y: int64 class indices ``[N]`` (ImageFolder order).
        classes: Class names, sorted.
        source: The folder (or zip) read.
        fingerprint: sha256 prefix over the used files' names, classes and bytes.
        skipped: ``(file, reason)`` of every file that could not be decoded.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    source: str
    fingerprint: str
    skipped: list[tuple[str, str]] = field(default_factory=list)


def find_photo_root(path: str | Path) -> Path:
    """The ImageFolder root that ``path`` names: the folder itself, its ``dogs_and_cats/`` (or the zip there),
    or a zip file (extracted into the cache).

    Raises:
        DataError: when ``path`` does not exist or holds no class folders.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        for name in _FOLDER_NAMES:
            if (path / name).exists():
                return find_photo_root(path / name)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DataError(f"data path {str(path)!r} is neither a folder nor a zip of photos")
        path = _extracted(path)
    classes = [d for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if len(classes) == 1 and not any(_is_image_name(f) for f in classes[0].iterdir()):
        return find_photo_root(classes[0])  # a zip whose one top folder holds the classes
    if len(classes) < 2:
        raise DataError(
            f"data path {str(path)!r} holds no photo classes: give an ImageFolder root with one sub-folder "
            "per class (cat/, dog/) or the lab's dogs_and_cats.zip"
        )
    return path


def load_photos(path: str | Path, *, max_images: int | None = None, seed: int = 0) -> Photos:
    """Decode and resize every photo under ``path`` (see :func:`find_photo_root`) to 96x96, once.

    Args:
        max_images: Keep a seeded, class-stratified subset of this many files (``None``: all), chosen before
            decoding.
        seed: The subset's seed.

    Raises:
        DataError: when the folder does not hold exactly two classes, or a class has no readable image.
    """
    root = find_photo_root(path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) != N_CLASSES:
        raise DataError(
            f"{root} holds {len(classes)} class folders ({', '.join(classes)}), but the lab's models tell "
            f"{N_CLASSES} classes apart: give a folder with exactly {N_CLASSES} (cat/, dog/)"
        )
    files = [
        (f, label)
        for label, name in enumerate(classes)
        for f in sorted((root / name).rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    ]
    if max_images is not None and max_images < len(files):
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
        files = sorted((files[i] for i in order[:max_images]), key=lambda item: (item[1], str(item[0])))
    digest = hashlib.sha256()
    images, labels, skipped = [], [], []
    for file, label in files:
        raw = file.read_bytes()
        try:
            images.append(_decode(file))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            skipped.append((str(file.relative_to(root)), f"{type(exc).__name__}: {exc}"))
            continue
        labels.append(label)
        digest.update(f"{classes[label]}/{file.name}:{len(raw)}:".encode())
        digest.update(hashlib.sha256(raw).digest())
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {len(files)} files under {root} are not readable images and were skipped, "
            f"e.g. {skipped[0][0]} ({skipped[0][1]})",
            stacklevel=2,
        )
    if not images:
        raise DataError(f"no readable image under {root}")
    counts = torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=len(classes)).tolist()
    empty = [name for name, count in zip(classes, counts, strict=True) if count == 0]
    if empty:
        subset = "" if max_images is None else f" among the {max_images} drawn (max_images)"
        raise DataError(
            f"class folder {str(root / empty[0])!r} has no readable image{subset}; each class needs photos"
        )
    return Photos(
        x=torch.stack(images),
        y=torch.tensor(labels, dtype=torch.int64),
        classes=classes,
        source=str(root),
        fingerprint=digest.hexdigest()[:16],
        skipped=skipped,
    )


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices of ``n`` items, like the lab's ``random_split`` (80/20 by default)."""
    n_train = int((1 - val_fraction) * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n_train], order[n_train:]


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract ``archive`` into ``target``, refusing entries with absolute paths or ``..`` components.

    Raises:
        DataError: naming the first unsafe entry (nothing is extracted then).
    """
    target = Path(target)
    with zipfile.ZipFile(archive) as handle:
        for info in handle.infolist():
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
                raise DataError(f"zip {str(archive)!r} holds an unsafe entry {info.filename!r}; refusing it")
        target.mkdir(parents=True, exist_ok=True)
        handle.extractall(target)
    return target


def _extracted(archive: Path) -> Path:
    """The archive extracted once into the cache, keyed by its content hash (atomically)."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    final = cache_dir() / "photos" / f"{archive.stem}-{digest}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        safe_extract(archive, tmp)
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _decode(file: Path) -> torch.Tensor:
    with warnings.catch_warnings():  # PIL warns before it refuses: our limit below is the one that counts
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(file)  # reads the header only: the size is known before decoding
        except Image.DecompressionBombError:  # beyond PIL's own limit, far beyond ours
            raise ValueError(f"more pixels than the {MAX_PIXELS:,} a photo may have (MAX_PIXELS)") from None
        with opened as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(
                    f"{width}x{height} pixels, more than the {MAX_PIXELS:,} a photo may have (MAX_PIXELS)"
                )
            image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return pil_to_tensor(image)


def _is_image_name(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _EXTENSIONS
