"""Reports: tables and figures made from what the storage holds (they never write to it)."""

from .lab_plots import plot_classification
from .lab_plots import plot_training
from .tables import studies_frame

__all__ = ["plot_classification", "plot_training", "studies_frame"]
