"""Export a study's winner as the lab's files: the weights to export (its refit first), then its task's
exporter (:class:`objectives.hooks.Exporter`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.files import atomic_write_text, staged_folder
from objectives.hooks import ExportJob
from search.selection.refit import find_refit

if TYPE_CHECKING:
    from search.selection.winner import Winner

__all__ = ["export"]


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
    exporter = winner.task.exporter
    if exporter is None:
        raise ValueError(f"task {winner.task.name!r} has no exporter")
    out = Path(out)
    if standalone and not exporter.standalone:
        print(f"--standalone ignored: the {winner.task.name} files need no timm already")
    refit = find_refit(winner)
    with staged_folder(out) as stage:  # a failed export leaves nothing in ``out``
        job = ExportJob(
            study_name=winner.study.study_name,
            trial=winner.trial,
            study_attrs=dict(winner.study.user_attrs),
            weights=winner.checkpoint if refit is None else refit[1],
            refit=None if refit is None else refit[0],
            data=data or winner.data,
            out=stage,
            standalone=standalone and exporter.standalone,
        )
        written = [out / path.relative_to(stage) for path in exporter.write(job)]
        _record_selection(winner, stage / "winner.json")
    return written


def _record_selection(winner: Winner, summary_file: Path) -> None:
    """Add how the winner was selected (confirmed figure ± spread and why, or the best validation value)."""
    if not summary_file.is_file():  # an exporter that writes no summary
        return
    summary = json.loads(summary_file.read_text())
    summary["selection"] = winner.describe()
    summary["confirmed"] = winner.confirmed
    atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
