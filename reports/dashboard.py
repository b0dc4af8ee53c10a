"""``optuna-dashboard`` on a storage, when the optional extra is installed."""

from __future__ import annotations

import errno
import importlib
import importlib.util

import optuna

from .write import ReportError

__all__ = ["INSTALL_HINT", "require_dashboard", "run_dashboard"]

INSTALL_HINT = "pip install 'rpztune[dashboard]' (or: pip install optuna-dashboard)"


def require_dashboard() -> None:
    """Check that optuna-dashboard can be imported.

    Raises:
        ReportError: when it is not installed, naming how to install it.
    """
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ReportError(f"optuna-dashboard is not installed; install it with: {INSTALL_HINT}")


def run_dashboard(
    storage: optuna.storages.BaseStorage | str, *, host: str = "127.0.0.1", port: int = 8080
) -> None:
    """Serve optuna-dashboard for ``storage`` on ``http://host:port/`` until interrupted.

    Raises:
        ReportError: when optuna-dashboard is not installed (naming how to install it) or the port is taken.
    """
    require_dashboard()
    dashboard = importlib.import_module("optuna_dashboard")
    if not 1 <= port <= 65535:
        raise ReportError(f"--port must be between 1 and 65535, but got {port}")
    try:
        dashboard.run_server(storage, host=host, port=port)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise ReportError(f"cannot serve on {host}:{port}: {exc.strerror}; pass another --port") from None
        raise
