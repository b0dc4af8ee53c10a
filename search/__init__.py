"""The study engine: storages, samplers and pruners, running studies, finding and exporting winners."""

from .export import export
from .storage import DEFAULT_STORAGE
from .storage import StorageError
from .storage import get_storage
from .study import RunSummary
from .study import StudyError
from .study import load_study
from .study import run_study
from .winner import Winner
from .winner import evaluate
from .winner import find_winner

__all__ = [
    "DEFAULT_STORAGE",
    "RunSummary",
    "StorageError",
    "StudyError",
    "Winner",
    "evaluate",
    "export",
    "find_winner",
    "get_storage",
    "load_study",
    "run_study",
]
