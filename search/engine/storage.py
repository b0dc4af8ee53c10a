"""Storage URLs -> Optuna storages, and where a storage keeps its trials' checkpoints.

``sqlite:///FILE`` (the embedded default; WAL mode and a busy timeout so several local workers can share it),
``postgresql://…`` / ``mysql://…`` (many machines), ``journal:///FILE`` (Optuna's journal file, for many
local workers). RDB storages get heartbeats so a dead worker's trial is failed and retried.

An SQLite file is checked before Optuna opens it (a damaged or foreign file is one ``StorageError``), a
read-only one is opened read-only (reading commands work; ``check_writable`` refuses writers up front), and
processes creating the schema of a fresh file take turns (a lock on its folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage

from search.engine.recovery import retry_callback

__all__ = [
    "DEFAULT_STORAGE",
    "StorageError",
    "check_storage_url",
    "check_writable",
    "checkpoint_root",
    "get_storage",
    "open_existing",
    "storage_exists",
    "study_dirname",
]

DEFAULT_STORAGE = "sqlite:///studies.db"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
SQLITE_BUSY_TIMEOUT_S = 60
PG_IDLE_IN_TRANSACTION_S = 10  # a PostgreSQL transaction idle this long is ended by the server
_SCHEMA_RETRIES = 8
_MAX_DIRNAME = 240  # a longer name (which no file system took) is cut and hashed
_KEPT_OPEN = 8  # storages a process keeps open (a test process opens many)
_opened: dict[tuple[str, object], optuna.storages.BaseStorage] = {}
_opened_lock = threading.Lock()


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_wal(dbapi_connection, connection_record) -> None:  # noqa: ANN001
    if isinstance(dbapi_connection, sqlite3.Connection):
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname != "SQLITE_READONLY":
                raise
            # a read-only file stays in its journal mode; reading works in any
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class StorageError(ValueError):
    """A storage URL that is malformed, unsupported or unreachable."""


def get_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at ``url``, opened once per process (creating an SQLite or journal file when it does not
    exist yet). A command passes URLs (they cross to worker processes); each process opens a URL once and
    later calls get the same object, until the file behind it is replaced.

    Raises:
        StorageError: for an unknown scheme, a missing parent folder or an unreachable server.
    """
    scheme = check_storage_url(url)
    key = (url, _file_identity(url, scheme))
    with _opened_lock:
        storage = _opened.pop(key, None)
        if storage is None:
            storage = _open(url, scheme)
            key = (url, _file_identity(url, scheme))  # a file it created
        _opened[key] = storage  # most recently used last
        while len(_opened) > _KEPT_OPEN:
            _opened.pop(next(iter(_opened)))
        return storage


def _file_identity(url: str, scheme: str) -> tuple[int, int, bool] | None:
    # A file storage is reopened when its file is created, replaced or changes writability.
    if scheme not in ("sqlite", "journal"):
        return None
    path = Path(url.split(":///", 1)[1])
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, os.access(path, os.W_OK)


def _open(url: str, scheme: str) -> optuna.storages.BaseStorage:
    if scheme == "journal":
        path = _local_path(url, "journal:///")
        _check_journal_file(url, path)
        return JournalStorage(JournalFileBackend(str(path)))
    if scheme == "sqlite":
        # Each worker process opens its own engine (spawned, never forked: no connection crosses a
        # process); WAL lets readers run beside the writer; SQLite's busy handler retries a locked
        # database for up to SQLITE_BUSY_TIMEOUT_S before giving up.
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        path = _local_path(url, "sqlite:///")
        _check_sqlite_file(url, path)
        target = url
        if path.is_file() and _write_error(path) is not None:
            target = f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"
        with _folder_lock(path.parent):  # two processes creating a fresh file's tables take turns
            return _rdb(target, engine_kwargs, shown=url)
    if url.split(":", 1)[0].split("+")[0] in ("postgresql", "postgres"):
        # A machine whose link is cut in the middle of a transaction keeps its row locks on the server until
        # the connection is known dead, and the other machines' heartbeat recovery waits on them; rpztune's
        # transactions never sit idle, so the server ends one that does after PG_IDLE_IN_TRANSACTION_S.
        timeout = f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_S * 1000}"
        return _rdb(url, {"pool_pre_ping": True, "connect_args": {"options": timeout}})
    return _rdb(url, {"pool_pre_ping": True})


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must exist already: reading commands never create an empty one.

    Raises:
        StorageError: as :func:`get_storage`, and when a file storage's file does not exist.
    """
    if not storage_exists(url):
        raise StorageError(f"no storage at {url!r}: the file does not exist")
    return get_storage(url)


def storage_exists(url: str) -> bool:
    """Whether a file storage's file exists (a server storage is assumed to).

    Raises:
        StorageError: for a malformed URL.
    """
    scheme = check_storage_url(url)
    return scheme not in ("sqlite", "journal") or Path(url.split(":///", 1)[1]).is_file()


def check_writable(url: str, checkpoints: str | Path | None = None) -> None:
    """Check that a run can write the storage's file (when it is a file) and its checkpoint folder.

    Raises:
        StorageError: naming what is read-only, before anything is written.
    """
    scheme = check_storage_url(url)
    if scheme in ("sqlite", "journal"):
        path = Path(url.split(":///", 1)[1])
        error = _write_error(path) if path.exists() else _folder_write_error(path.parent)
        if error is not None:
            raise StorageError(f"storage {url!r} is not writable ({error}); a run must record its trials")
    root = checkpoint_root(url, checkpoints)
    folder = next((p for p in (root, *root.parents) if p.exists()), Path("."))
    error = _folder_write_error(folder) if folder.is_dir() else f"{str(folder)!r} is not a folder"
    if error is not None:
        raise StorageError(
            f"checkpoint folder {str(root)!r} cannot be written ({error}); pass --checkpoints DIR"
        )


def check_storage_url(url: str) -> str:
    """Check a storage URL without touching the storage; return its scheme (``sqlite``, ``journal``, ``rdb``).

    Raises:
        StorageError: for an unknown scheme or a file storage in a missing folder.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("journal", "sqlite"):
        _local_path(url, f"{scheme}:///")
        return scheme
    if scheme.split("+")[0] in ("postgresql", "postgres", "mysql"):
        return "rdb"
    raise StorageError(
        f"unsupported storage URL {url!r}; use sqlite:///FILE, postgresql://USER@HOST/DB or journal:///FILE"
    )


def checkpoint_root(url: str, override: str | Path | None = None) -> Path:
    """The folder holding a storage's checkpoints: ``override``, else beside a file storage, else ``./``."""
    if override is not None:
        return Path(override)
    for prefix in ("sqlite:///", "journal:///"):
        if url.startswith(prefix):
            path = Path(url[len(prefix) :])
            return path.with_name(f"{path.stem}-checkpoints")
    return Path("rpztune-checkpoints")


def study_dirname(study_name: str) -> str:
    """A file-system-safe folder name for a study (distinct names stay distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name)
    if safe != study_name or safe in ("", ".", "..") or len(safe) > _MAX_DIRNAME:
        # a folder name has at most 255 bytes
        safe = f"{safe[:_MAX_DIRNAME]}-{hashlib.sha256(study_name.encode()).hexdigest()[:8]}"
    return safe


def _check_journal_file(url: str, path: Path) -> None:
    # Optuna reads a journal lazily: a foreign file would fail later, inside a trial, as a JSON error.
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as handle:
            record = json.loads(handle.readline())
        if not isinstance(record, dict) or "op_code" not in record:
            raise ValueError("no op_code")
    except (ValueError, UnicodeDecodeError, OSError):
        raise StorageError(
            f"storage {url!r}: {path} is not an Optuna journal file (its first line is no journal record)"
        ) from None


def _local_path(url: str, prefix: str) -> Path:
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StorageError(f"storage URL {url!r} must look like {prefix}FILE")
    path = Path(url[len(prefix) :])
    if not path.parent.is_dir():
        raise StorageError(f"storage URL {url!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise StorageError(f"storage URL {url!r} names a folder, not a file")
    return path


def _rdb(url: str, engine_kwargs: dict, shown: str | None = None) -> RDBStorage:
    shown = shown or url
    for attempt in range(_SCHEMA_RETRIES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=retry_callback(),
                )
            except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as exc:
                raise StorageError(f"malformed storage URL {shown!r}: {exc}") from None
            except sqlalchemy.exc.DBAPIError as exc:
                # Another process created the same tables or version row first (a server storage, or a
                # file system without locks): the schema exists now, so opening again succeeds.
                if _transient_open_error(exc) and attempt + 1 < _SCHEMA_RETRIES:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise StorageError(f"cannot open storage {shown!r}: {exc.orig}") from None
            except ImportError as exc:
                raise StorageError(f"storage {shown!r} needs its database driver installed: {exc}") from None
    raise AssertionError("unreachable")


def _transient_open_error(exc: sqlalchemy.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    # "disk I/O error": SQLite opening a file whose last other connection is deleting its -wal/-shm
    return (
        isinstance(exc, sqlalchemy.exc.IntegrityError)
        or "already exists" in text
        or "duplicate" in text
        or "disk i/o error" in text
    )


_IOERR_RETRIES = 8


def _check_sqlite_file(url: str, path: Path) -> None:
    """Refuse a file that is not an intact SQLite database before Optuna opens (and writes) it."""
    if not path.is_file() or path.stat().st_size == 0:
        return  # SQLite creates the database in a missing or empty file
    for attempt in range(_IOERR_RETRIES):
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
                verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            break
        except sqlite3.DatabaseError as exc:
            name = getattr(exc, "sqlite_errorname", "")
            # A worker process closing the database last deletes its -wal/-shm files; a read-only
            # connection opening meanwhile fails with an I/O error: try again. Processes that open and
            # close it all the time (several studies on one file) can keep that window open: then the
            # read-write open below checks the file (a damaged one fails there with its error).
            if name.startswith("SQLITE_IOERR"):
                if attempt + 1 < _IOERR_RETRIES:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                return
            if name not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise StorageError(f"cannot open storage {url!r}: {exc}") from None
            verdict = str(exc)
            break
    if verdict != "ok":
        raise StorageError(
            f"storage {url!r} is not an intact SQLite database ({verdict}); restore it from a backup "
            "or pass another --storage"
        )


def _write_error(path: Path) -> str | None:
    """Why ``path`` cannot be written (a read-only file or mount), else ``None``.

    Asked of the kernel (``access``, which reports a read-only mount even to root) without opening the file:
    closing any descriptor of a database file drops every POSIX lock this process holds on it, SQLite's
    included, so another process closing the database last would delete the WAL under this process's open
    connections and their later commits would be lost.
    """
    if os.access(path, os.W_OK):
        return None
    read_only = os.statvfs(path).f_flag & os.ST_RDONLY
    return f"{'Read-only file system' if read_only else 'Permission denied'}: {str(path)!r}"


def _folder_write_error(folder: Path) -> str | None:
    """Why no file can be created in ``folder``, else ``None`` (tried for real: root ignores modes)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".rpztune-probe-"):
            pass
    except OSError as exc:
        return f"{exc.strerror}: {str(folder)!r}"
    return None


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (flock on the folder itself: no lock file is left behind)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield  # nothing to lock; the schema retries still cover a race
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
