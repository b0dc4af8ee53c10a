"""Export a study's winner as the lab's files; one exporter module per task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..winner import Winner
from .finetune import export_finetune
from .mynet import export_mynet
from .numpy_mlp import export_numpy_mlp

__all__ = ["EXPORTERS", "export"]

EXPORTERS: dict[str, Callable[[Winner, Path, str | None], list[Path]]] = {
    "numpy-mlp": export_numpy_mlp,
    "mynet": export_mynet,
    "finetune": export_finetune,
}


def export(winner: Winner, out: str | Path, *, data: str | None = None) -> list[Path]:
    """Write the winner's files into ``out`` (created if needed); return the paths written.

    Raises:
        ValueError: when the study's task has no exporter.
    """
    exporter = EXPORTERS.get(winner.task.name)
    if exporter is None:
        raise ValueError(f"no exporter for task {winner.task.name!r}; exporters: {', '.join(EXPORTERS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return exporter(winner, out, data)
