"""Reports: tables, figures and HTML pages made from what the storage holds (they never write to it).

Names are imported on first use (PEP 562): ``from reports import studies_frame`` needs pandas, not plotly,
matplotlib or scikit-learn."""

import importlib
from typing import Any

_EXPORTS = {
    "plot_classification": "lab_plots",
    "plot_training": "lab_plots",
    "studies_frame": "tables",
    "curves_frame": "trials",
    "trials_frame": "trials",
    "Importances": "analysis",
    "Savings": "analysis",
    "StudyData": "analysis",
    "pruning_savings": "analysis",
    "index_page": "pages",
    "study_page": "pages",
    "PLOTLYJS_MODES": "write",
    "TABLE_FORMATS": "write",
    "ReportError": "write",
    "page_filename": "write",
    "storage_label": "write",
    "write_reports": "write",
    "write_tables": "write",
    "write_text": "write",
    "require_dashboard": "dashboard",
    "run_dashboard": "dashboard",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
