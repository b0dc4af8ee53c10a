"""Writing reports: HTML pages and an index for a storage's studies, or their tables as CSV/Parquet files.

The storage is only read. Files are written atomically (a temporary file renamed into place), so an
interrupted run leaves the previous report whole.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import sqlalchemy

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PLOTLYJS_MODES",
    "TABLE_FORMATS",
    "ReportError",
    "page_filename",
    "storage_label",
    "write_reports",
    "write_tables",
    "write_text",
]

TABLE_FORMATS = ("csv", "parquet")
PLOTLYJS_MODES = ("inline", "beside")
PLOTLYJS_FILE = "plotly.min.js"


class ReportError(ValueError):
    """An output folder or table format that reports cannot be written to, or a study that is not there."""


def write_reports(
    backend: optuna.storages.BaseStorage,
    out: str | Path,
    *,
    studies: Sequence[str] | None = None,
    checkpoint_dir: Callable[[str], Path | None] = lambda name: None,
    plotlyjs: str = "inline",
    storage_name: str = "",
) -> list[Path]:
    """Write one HTML page per study in ``studies`` (default: all) and ``index.html`` comparing all studies
    (search studies: a confirmation's replicates show on its search study's page).

    Args:
        backend: The opened storage to read.
        out: The output folder (created when missing).
        studies: Names of the studies that get a page; the index always lists every study of the storage
            and links the pages present in ``out``.
        checkpoint_dir: Study name -> its checkpoint folder (for checkpoint paths on the pages).
        plotlyjs: ``"inline"``: plotly.js inside every page (each page opens alone, offline);
            ``"beside"``: one ``plotly.min.js`` written into ``out`` and loaded by every page.
        storage_name: How the pages name the storage (see ``storage_label``).

    Returns:
        The files written: the study pages, then ``index.html`` (and ``plotly.min.js`` first, if beside).

    Raises:
        ReportError: for an unknown study, an unknown ``plotlyjs`` mode or an output folder that cannot be
            written.
    """
    if plotlyjs not in PLOTLYJS_MODES:
        raise ReportError(f"plotly.js mode must be one of {', '.join(PLOTLYJS_MODES)}, but got {plotlyjs!r}")
    # plotly, scikit-learn (fANOVA): imported here so the CLI and the tables start without them
    from plotly.offline import get_plotlyjs

    from .analysis import StudyData
    from .pages import index_page, study_page
    from .tables import is_confirmation

    summaries = optuna.get_all_study_summaries(backend, include_best_trial=False)
    confirmed = {s.study_name: s.user_attrs["confirm_of"] for s in summaries if is_confirmation(s)}
    for name in set(studies or ()) & set(confirmed):  # a confirmation shows on its search study's page
        raise ReportError(
            f"study {name!r} is the confirmation of study {confirmed[name]!r}: its ranking is on that "
            f"study's page (--study {confirmed[name]})"
        )
    names = [s.study_name for s in summaries if s.study_name not in confirmed]
    selected = _select(names, studies, storage_name)
    folder = output_folder(out)
    written = []
    script = "inline"
    if plotlyjs == "beside":
        written.append(write_text(folder / PLOTLYJS_FILE, get_plotlyjs()))
        script = PLOTLYJS_FILE
    loaded = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=backend)
        data = StudyData.load(
            study, checkpoint_dir=checkpoint_dir(name), storage=storage_name, importances=name in selected
        )
        if name in selected:
            written.append(
                write_text(
                    folder / page_filename(name), study_page(data, plotlyjs=script, index="index.html")
                )
            )
        loaded.append(data)
    links = {n: page_filename(n) for n in names if (folder / page_filename(n)).is_file()}
    index = index_page(loaded, links, storage=storage_name, plotlyjs=script)
    written.append(write_text(folder / "index.html", index))
    return written


def write_tables(
    backend: optuna.storages.BaseStorage,
    out: str | Path,
    *,
    studies: Sequence[str] | None = None,
    fmt: str = "csv",
    checkpoint_dir: Callable[[str], Path | None] = lambda name: None,
) -> list[Path]:
    """Write each study's trials and curves frames as ``<study>-trials.<fmt>`` and ``<study>-curves.<fmt>``.

    Raises:
        ReportError: for an unknown format or study, parquet without pyarrow, or an output folder that cannot
            be written.
    """
    if fmt not in TABLE_FORMATS:
        raise ReportError(f"table format must be one of {', '.join(TABLE_FORMATS)}, but got {fmt!r}")
    from .trials import curves_frame, trials_frame

    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ReportError("--parquet needs the package pyarrow: pip install pyarrow (or use --csv)")
    selected = _select(_study_names(backend), studies, "")
    folder = output_folder(out)
    written = []
    for name in selected:
        study = optuna.load_study(study_name=name, storage=backend)
        trials = study.get_trials(deepcopy=False)
        frames = {
            "trials": trials_frame(study, checkpoint_dir=checkpoint_dir(name), trials=trials),
            "curves": curves_frame(study, trials=trials),
        }
        for kind, frame in frames.items():
            path = folder / f"{_safe_name(name)}-{kind}.{fmt}"
            written.append(_write_frame(frame, path, fmt))
    return written


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8).

    Raises:
        ReportError: when the file cannot be written.
    """
    return _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def output_folder(out: str | Path) -> Path:
    """Create the output folder ``out`` if needed.

    Raises:
        ReportError: when it is a file, lies under a file, or cannot be created or written.
    """
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is a file" if folder.is_file() else (exc.strerror or str(exc))
        raise ReportError(f"cannot write reports to {str(folder)!r}: {reason}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write reports to {str(folder)!r}: permission denied")
    return folder


def page_filename(study_name: str) -> str:
    """The file name of a study's page: ``study-<name>.html``, the name made safe (distinct names stay
    distinct, and no study page can be ``index.html``)."""
    return f"study-{_safe_name(study_name)}.html"


def storage_label(url: str) -> str:
    """A storage URL as the pages show it: a server URL's password hidden."""
    if url.split(":", 1)[0].lower() in ("sqlite", "journal"):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "?"


def _study_names(backend: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]


def _select(names: list[str], studies: Sequence[str] | None, where: str) -> list[str]:
    if studies is None:
        return names
    for name in studies:
        if name not in names:
            place = f" in {where}" if where else ""
            raise ReportError(f"no study {name!r}{place}; studies there: {', '.join(names) or 'none'}")
    return list(dict.fromkeys(studies))


def _write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "csv":
        return _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object and len({type(v) for v in frame[column].dropna()}) > 1:
            frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            write(tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return path


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe != name or safe in ("", ".", ".."):
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe
