"""Reports: tables, figures and HTML pages made from what the storage holds (they never write to it)."""

from .lab_plots import plot_classification
from .lab_plots import plot_training
from .tables import studies_frame
from .trials import curves_frame
from .trials import trials_frame
from .analysis import Importances
from .analysis import Savings
from .analysis import StudyData
from .analysis import pruning_savings
from .pages import index_page
from .pages import study_page
from .write import PLOTLYJS_MODES
from .write import TABLE_FORMATS
from .write import ReportError
from .write import page_filename
from .write import storage_label
from .write import write_reports
from .write import write_tables
from .write import write_text
from .dashboard import require_dashboard
from .dashboard import run_dashboard

__all__ = [
    "plot_classification",
    "plot_training",
    "studies_frame",
    "curves_frame",
    "trials_frame",
    "Importances",
    "Savings",
    "StudyData",
    "pruning_savings",
    "index_page",
    "study_page",
    "PLOTLYJS_MODES",
    "TABLE_FORMATS",
    "ReportError",
    "page_filename",
    "storage_label",
    "write_reports",
    "write_tables",
    "write_text",
    "require_dashboard",
    "run_dashboard",
]
