"""rpztune's search side: the study engine, choosing the winner, and the lab's delivery, under one CLI.

The public names below are imported on first use (lazy_loader), so ``rpztune --help`` starts without the
engine, torch or Optuna's storages."""

import lazy_loader

_SUBMODULE_NAMES = {
    "delivery.export": ["export"],
    "engine.storage": ["DEFAULT_STORAGE", "StorageError", "get_storage"],
    "engine.study": ["RunSummary", "StudyError", "load_study", "run_study"],
    "selection.winner": ["Winner", "evaluate", "find_winner"],
}

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs=_SUBMODULE_NAMES)
