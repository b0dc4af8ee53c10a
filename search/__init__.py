"""The study engine: storages, samplers and pruners, running studies, finding and exporting winners.

Names other than ``export`` are imported on first use (lazy_loader, PEP 562), so the CLI starts without
the engine."""

import lazy_loader

# Eager: the subpackage ``search.export`` would otherwise shadow the function of the same name.
from .export import export

_SUBMODULE_NAMES = {
    "storage": ["DEFAULT_STORAGE", "StorageError", "get_storage"],
    "study": ["RunSummary", "StudyError", "load_study", "run_study"],
    "winner": ["Winner", "evaluate", "find_winner"],
}

__getattr__, __dir__, _lazy_all = lazy_loader.attach(__name__, submod_attrs=_SUBMODULE_NAMES)
__all__ = ["export", *_lazy_all]
