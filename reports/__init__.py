"""Reports: tables, figures and HTML pages made from what the storage holds (they never write to it).

Names are imported on first use (lazy_loader, PEP 562): ``from reports import studies_frame`` needs
pandas, not plotly, matplotlib or scikit-learn."""

import lazy_loader

_SUBMODULE_NAMES = {
    "lab_plots": ["plot_classification", "plot_training"],
    "tables": ["studies_frame"],
    "trials": ["curves_frame", "trials_frame"],
    "analysis": ["Importances", "Savings", "StudyData", "pruning_savings"],
    "pages": ["index_page", "study_page"],
    "write": ["ReportError", "write_reports", "write_tables"],  # and, from reports.write, its helpers
    "dashboard": ["require_dashboard", "run_dashboard"],
}

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs=_SUBMODULE_NAMES)
