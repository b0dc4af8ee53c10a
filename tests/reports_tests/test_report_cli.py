"""``rpztune report`` run for real in subprocesses against real SQLite storages (they are only read)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import rpz_cli

from search.cli import main

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)


def rpztune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the real ``rpztune ARGS`` in a subprocess."""
    return rpz_cli.rpztune(*args, cwd=cwd, check=False, timeout=300)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rpztune {result.args[3:]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dump(url: str) -> list[str]:
    """Every row of the storage as SQL text (what "only read" must leave unchanged)."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return list(connection.iterdump())


def main_ok(*args: str) -> str:
    """Run the real ``main`` in this process; return what it printed."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(list(args))
    assert code == 0, stdout.getvalue()
    return stdout.getvalue()


def main_error(*args: str) -> str:
    """Run the real ``main`` in this process (errors need no subprocess); return its one error line."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"rpztune {args[0]}: error: "), lines
    return lines[0]


@pytest.mark.slow
def test_report_cli_writes_a_page_per_study_and_an_index_reading_only(
    report_storage, hostile, tmp_path
) -> None:
    before = dump(report_storage)
    out = ok(rpztune("report", "--storage", report_storage, "--out", "site", cwd=tmp_path))
    assert dump(report_storage) == before
    site = tmp_path / "site"
    pages = sorted(p.name for p in site.glob("study-*.html"))
    assert len(pages) == 3 and "study-mlp.html" in pages and "study-mynet.html" in pages
    hostile_page = next(p for p in pages if p not in ("study-mlp.html", "study-mynet.html"))
    assert "<" not in hostile_page and '"' not in hostile_page
    index = (site / "index.html").read_text()
    for page in pages:
        assert f'href="{page}"' in index and page in out
    assert "open site/index.html" in out
    mlp = (site / "study-mlp.html").read_text()
    assert "studies-checkpoints/mlp/trial-00001.npz (not on disk" in mlp  # trial 1 is best, its file gone
    assert "sqlite:///" in mlp and not (tmp_path / "rpztune-reports").exists()


def test_report_cli_one_study_with_plotlyjs_beside(report_storage, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    main_ok("report", "--storage", report_storage, "--study", "mynet", "--plotlyjs", "beside")
    site = tmp_path / "rpztune-reports"  # the default --out
    assert sorted(p.name for p in site.iterdir()) == ["index.html", "plotly.min.js", "study-mynet.html"]
    index = (site / "index.html").read_text()
    assert 'href="study-mynet.html"' in index and index.count("<a href=") == 1  # all listed, one linked
    assert '<script src="plotly.min.js"' in (site / "study-mynet.html").read_text()
    assert (site / "plotly.min.js").stat().st_size > 1_000_000


def test_report_cli_csv_tables_round_trip(report_storage, tmp_path) -> None:
    out = main_ok("report", "--storage", report_storage, "--study", "mlp", "--csv", "--out", str(tmp_path))
    trials = pd.read_csv(tmp_path / "mlp-trials.csv")
    curves = pd.read_csv(tmp_path / "mlp-curves.csv")
    assert "mlp-trials.csv" in out and "index.html" not in out
    counts = trials["state"].value_counts().to_dict()
    assert len(trials) == 9 and counts == {"COMPLETE": 4, "PRUNED": 3, "FAIL": 1, "RUNNING": 1}
    assert {"params_lr", "params_activation", "pruned_epoch", "checkpoint", "duration_s"} <= set(
        trials.columns
    )
    assert len(curves) == 3 * (4 * 5 + 3 * 2 + 1)  # 3 curves: 4 x 5 epochs, 3 x 2 pruned, 1 running


def test_report_cli_parquet_tables_round_trip(report_storage, tmp_path) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pyarrow is not installed (a dependency of rpztune)")
        pytest.skip("pyarrow is not installed; the next test covers that case")
    main_ok("report", "--storage", report_storage, "--study", "mynet", "--parquet", "--out", str(tmp_path))
    trials = pd.read_parquet(tmp_path / "mynet-trials.parquet")
    assert trials["extra_orig"].tolist() == pytest.approx([0.9, 0.95, 0.8])
    assert trials["started"].dtype.kind == "M" and trials["best_epoch"].isna().all()
    curves = pd.read_parquet(tmp_path / "mynet-curves.parquet")
    assert curves["curve"].unique().tolist() == ["train_loss", "val_loss", "val_accuracy"]
    assert len(curves) == 3 * 3 * 3  # 3 trials, 3 curves, 3 epochs


def test_report_cli_parquet_without_pyarrow_names_the_package(report_storage, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what Python does for a package not installed
    monkeypatch.chdir(tmp_path)
    assert "pip install pyarrow" in main_error("report", "--storage", report_storage, "--parquet")
    assert not (tmp_path / "rpztune-reports").exists()


def test_report_cli_unknown_study_names_the_studies_there(report_storage, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = main_error("report", "--storage", report_storage, "--study", "nope")
    assert "no study 'nope'" in line and "mlp" in line and "mynet" in line


def test_report_cli_unwritable_out_is_one_line(report_storage, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        line = main_error("report", "--storage", report_storage, "--out", str(out))
        assert f"cannot write reports to {str(out)!r}" in line


def test_report_cli_missing_storage_is_not_created(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = main_error("report", "--storage", "sqlite:///missing.db")
    assert "no storage at 'sqlite:///missing.db'" in line
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.slow
def test_report_cli_on_a_real_numpy_mlp_study(data_dir, tmp_path) -> None:
    run = [*RUN, "numpy-mlp", "--trials", "4", "--seed", "1", "--set", "epochs=3", "--quiet"]
    ok(rpztune(*run, "--data", str(data_dir), cwd=tmp_path))
    ok(rpztune("report", "--study", "numpy-mlp", cwd=tmp_path))
    page = (tmp_path / "rpztune-reports" / "study-numpy-mlp.html").read_text()
    assert "How it was trained" in page and "(on disk)" in page  # the best trial keeps its checkpoint
    assert "train_loss" in page and "val_loss" in page and "widths" in page


@pytest.mark.slow
def test_report_cli_on_a_real_mynet_study(data_dir, tmp_path) -> None:
    # mynet keeps epochs under config["train"] and records test_accuracy (not test_error).
    tiny = ["--set", "epochs=3", "--set", "data_fraction=0.01", "--set", "stages=1", "--set", "channels=8"]
    run = [*RUN, "mynet", "--trials", "3", "--seed", "0", "--threads", "1", "--device", "cpu", "--quiet"]
    ok(rpztune(*run, *tiny, "--data", str(data_dir), cwd=tmp_path))
    ok(rpztune("report", "--study", "mynet", cwd=tmp_path))
    ok(rpztune("report", "--study", "mynet", "--csv", "--out", "tables", cwd=tmp_path))
    trials = pd.read_csv(tmp_path / "tables" / "mynet-trials.csv")
    assert trials["epochs"].tolist() == [3, 3, 3] and trials["test_error"].isna().all()
    complete = trials[trials["state"] == "COMPLETE"]
    best = complete.sort_values(["value", "number"], ascending=[False, True]).iloc[0]
    page = (tmp_path / "rpztune-reports" / "study-mynet.html").read_text()
    run_epochs = int(best["epochs_run"])
    assert f"<th>epochs run / configured</th><td>{run_epochs} / 3</td>" in page
    shown = f"{best['test_accuracy']:.4g} on 5000 images"
    assert f"<th>test accuracy (never used for tuning)</th><td>{shown}</td>" in page
    assert "test error" not in page and "left out" not in page
    assert all(f"<h4>{name}</h4>" in page for name in ("model", "train", "augment"))
    assert "{&quot;" not in page  # no JSON: settings as --set writes them
    if (trials["state"] == "PRUNED").any():
        assert "they skipped 0 epochs" not in page
