"""Where a task's data comes from, shared by the tasks' loaders: the user cache, and one-line reasons for
data that is missing, unreadable or could not be downloaded."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["IDX_FILES", "DataError", "cache_dir", "damaged_idx_file", "download_reason", "unreadable_reason"]


class DataError(ValueError):
    """The data the user pointed at is missing, unreadable or in an unknown layout."""


def cache_dir() -> Path:
    """Where downloads go: ``$RPZTUNE_CACHE`` or ``~/.cache/rpztune``."""
    return Path(os.environ.get("RPZTUNE_CACHE", Path.home() / ".cache" / "rpztune"))


def download_reason(exc: BaseException, limit: int = 300) -> str:
    """One line saying why a download failed (torchvision's text spans lines: file, mirror, error)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unreadable_reason(raw: Path, exc: BaseException) -> str | None:
    """Why torchvision could not read the files present in ``raw`` (``None``: the files are missing)."""
    files = [f for f in raw.iterdir() if f.is_file()] if raw.is_dir() else []
    if not files or "Dataset not found" in str(exc):
        return None
    reason = download_reason(exc)
    return f"{raw} holds {len(files)} files but they cannot be read (one may be truncated): {reason}"


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def damaged_idx_file(raw: Path) -> str | None:
    """Why one of the (Fashion)MNIST idx files present in ``raw`` cannot be read, naming it (``None``: the
    files present are whole). Checked before torchvision reads them: its errors on a damaged file are an
    ``int()`` of an empty header or an ``assert``."""
    for name in IDX_FILES:
        path = raw / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(4)
            if len(header) < 4 or header[:3] != b"\x00\x00\x08" or not 1 <= header[3] <= 3:
                return (
                    f"{path} is not an idx file ({size} bytes, header {header.hex() or 'empty'}); replace it"
                )
            dims = handle.read(4 * header[3])
        if len(dims) < 4 * header[3]:
            return f"{path} is truncated in its header ({size} bytes); replace it"
        expected = (
            4 + len(dims) + math.prod(int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4))
        )
        if size != expected:
            return f"{path} has {size} bytes where its header promises {expected} (truncated?); replace it"
    return None
