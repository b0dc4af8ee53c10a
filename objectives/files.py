"""Atomic file writes: a temporary file (or folder) beside the target, then a rename; and removing the
temporaries a killed process left behind.

A temporary's name says who made it (``.NAME.HOST-PID.XXXX``), so a later run on the same host removes
those of processes that no longer run, and never another live process's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_copy", "atomic_write_text", "remove_stale_temps", "replace_atomically", "staged_folder"]

_OWNER = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+(\.[A-Za-z0-9]+)?$")


def _umask_mode() -> int:
    # mkstemp creates 0600 files; exported files should get the usual mode (0644 under umask 022).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _prefix(path: Path) -> str:
    return f".{path.name}.{_host()}-{os.getpid()}."


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    return replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    return replace_atomically(dst, lambda tmp: shutil.copyfile(src, tmp))


def replace_atomically(path: Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same file system), give it the usual mode and
    rename it to ``path``; on any failure the temporary is removed and ``path`` is as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write a set of files into. When the block ends normally its
    files are moved into ``out`` (created if needed; each file renamed atomically, other files of ``out``
    kept); when it raises, the folder is removed: ``out`` never holds part of the set."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=_prefix(out)))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for item in sorted(stage.rglob("*")):
            target = out / item.relative_to(stage)
            if item.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` left by processes of this host that no longer
    run (a kill -9 mid-write); return what was removed."""
    removed = []
    host = _host()
    for path in folder.glob(".*"):
        owner = _OWNER.match(path.name)
        if owner is None or owner["host"] != host or _running(int(owner["pid"])):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
