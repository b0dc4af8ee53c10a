"""Export a study's winner as the lab's files; one exporter module per task."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.files import atomic_write_text

if TYPE_CHECKING:
    from search.selection.winner import Winner

__all__ = ["EXPORTERS", "TIMM_TASKS", "export"]


def _lazy(module: str, name: str) -> Callable[..., list[Path]]:
    # The exporter's module (torch, timm, matplotlib) is imported when a winner of its task is exported.
    def exporter(*args: object, **kwargs: object) -> list[Path]:
        return getattr(importlib.import_module(module, __name__), name)(*args, **kwargs)

    exporter.__name__ = name
    return exporter


# exporter(winner, out, data) -> paths written; those of TIMM_TASKS also take plain_torch=.
EXPORTERS: dict[str, Callable[..., list[Path]]] = {
    "numpy-mlp": _lazy(".numpy_mlp", "export_numpy_mlp"),
    "mynet": _lazy(".mynet", "export_mynet"),
    "finetune": _lazy(".finetune", "export_finetune"),
}
TIMM_TASKS = ("finetune",)


def export(
    winner: Winner, out: str | Path, *, data: str | None = None, standalone: bool = False
) -> list[Path]:
    """Write the winner's files into ``out`` (created if needed); return the paths written.

    Args:
        winner: The study's winner.
        out: The output folder.
        data: Data path for the exporters that score the winner (default: the study's own data).
        standalone: A finetune ``pytorch_cnn.py`` that needs only torch (no timm; EfficientNet-Lite
            backbones). The other tasks' files need only torch or numpy already: ignored with a note.

    Raises:
        ValueError: when the study's task has no exporter, or (``standalone``) its backbone has no
            plain-torch version.
    """
    exporter = EXPORTERS.get(winner.task.name)
    if exporter is None:
        raise ValueError(f"no exporter for task {winner.task.name!r}; exporters: {', '.join(EXPORTERS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if winner.task.name in TIMM_TASKS:
        written = exporter(winner, out, data, plain_torch=standalone)
    else:
        if standalone:
            print(f"--standalone ignored: the {winner.task.name} files need no timm already")
        written = exporter(winner, out, data)
    _record_selection(winner, out / "winner.json")
    return written


def _record_selection(winner: Winner, summary_file: Path) -> None:
    """Add how the winner was selected (confirmed figure ± spread and why, or the best validation value)."""
    if not summary_file.is_file():  # an exporter that writes no summary
        return
    summary = json.loads(summary_file.read_text())
    summary["selection"] = winner.describe()
    summary["confirmed"] = winner.confirmed
    atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
