"""Atomic file writes for exporters: a temp file in the target folder, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_copy", "atomic_write_text"]


def _umask_mode() -> int:
    # mkstemp creates 0600 files; exported files should get the usual mode (0644 under umask 022).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    return _replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    return _replace_atomically(dst, lambda tmp: shutil.copyfile(src, tmp))


def _replace_atomically(path: Path, write: Callable[[str], object]) -> Path:
    # Write a temporary file beside ``path`` (same file system), give it the usual mode, rename it in place.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
