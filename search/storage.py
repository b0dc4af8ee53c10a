"""Storage URLs -> Optuna storages, and where a storage keeps its trials' checkpoints.

``sqlite:///FILE`` (the embedded default; WAL mode and a busy timeout so several local workers can share it),
``postgresql://…`` / ``mysql://…`` (many machines), ``journal:///FILE`` (Optuna's journal file, for many
local workers). RDB storages get heartbeats so a dead worker's trial is failed and retried.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

__all__ = [
    "DEFAULT_STORAGE",
    "StorageError",
    "check_storage_url",
    "checkpoint_root",
    "get_storage",
    "study_dirname",
]

DEFAULT_STORAGE = "sqlite:///studies.db"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
SQLITE_BUSY_TIMEOUT_S = 60


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_wal(dbapi_connection, connection_record) -> None:  # noqa: ANN001
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class StorageError(ValueError):
    """A storage URL that is malformed, unsupported or unreachable."""


def get_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage at ``url`` (creating an SQLite or journal file when it does not exist yet).

    Raises:
        StorageError: for an unknown scheme, a missing parent folder or an unreachable server.
    """
    scheme = check_storage_url(url)
    if scheme == "journal":
        return JournalStorage(JournalFileBackend(url[len("journal:///") :]))
    if scheme == "sqlite":
        # Each worker process opens its own engine (spawned, never forked: no connection crosses a
        # process); WAL lets readers run beside the writer; SQLite's busy handler retries a locked
        # database for up to SQLITE_BUSY_TIMEOUT_S before giving up.
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        return _rdb(url, engine_kwargs)
    return _rdb(url, {"pool_pre_ping": True})


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
    if safe != study_name or safe in ("", ".", ".."):
        safe = f"{safe}-{hashlib.sha256(study_name.encode()).hexdigest()[:8]}"
    return safe


def _local_path(url: str, prefix: str) -> Path:
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StorageError(f"storage URL {url!r} must look like {prefix}FILE")
    path = Path(url[len(prefix) :])
    if not path.parent.is_dir():
        raise StorageError(f"storage URL {url!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise StorageError(f"storage URL {url!r} names a folder, not a file")
    return path


def _rdb(url: str, engine_kwargs: dict) -> RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as exc:
            raise StorageError(f"malformed storage URL {url!r}: {exc}") from None
        except sqlalchemy.exc.OperationalError as exc:
            raise StorageError(f"cannot open storage {url!r}: {exc.orig}") from None
        except ImportError as exc:
            raise StorageError(f"storage {url!r} needs its database driver installed: {exc}") from None
