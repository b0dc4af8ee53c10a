"""The study engine: storages, samplers and pruners, running studies, finding and exporting winners.

Names other than ``export`` are imported on first use (PEP 562), so the CLI starts without the engine."""

import importlib
from typing import Any

# Eager: the subpackage ``search.export`` would otherwise shadow the function of the same name.
from .export import export

_EXPORTS = {
    "DEFAULT_STORAGE": "storage",
    "StorageError": "storage",
    "get_storage": "storage",
    "RunSummary": "study",
    "StudyError": "study",
    "load_study": "study",
    "run_study": "study",
    "Winner": "winner",
    "evaluate": "winner",
    "find_winner": "winner",
}

__all__ = ["export", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
