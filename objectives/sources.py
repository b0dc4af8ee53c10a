"""Where a task's data comes from, shared by the tasks' loaders: the user cache, and one-line reasons for
data that is missing, unreadable or could not be downloaded."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataError", "cache_dir", "download_reason", "unreadable_reason"]


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
