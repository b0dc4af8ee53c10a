"""The CLI's light paths import only what they need: no torch, timm or plotly for ``--help`` or ``status``.

Each case runs in a fresh interpreter (this test process has torch loaded already) and reports which of the
heavy packages ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm", "plotly", "sklearn", "matplotlib", "optuna_dashboard")

_PROBE = """
import json, sys
from search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def _loaded(*argv: str, cwd: Path) -> tuple[int, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(
    "argv", [("--help",), ("run", "--help"), ("validate", "--help"), ("report", "--help")]
)
def test_cli_imports_help_without_heavy_packages(argv: tuple[str, ...], tmp_path: Path) -> None:
    code, modules = _loaded(*argv, cwd=tmp_path)
    assert code == 0
    heavy = modules & {*HEAVY, "pandas"}
    assert not heavy, f"rpztune {' '.join(argv)} imported {heavy}"


def test_cli_imports_status_without_heavy_packages(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    code, modules = _loaded("status", "--storage", storage, cwd=tmp_path)
    assert code == 0
    assert "pandas" in modules  # the probe does see what a command imports
    assert not modules & set(HEAVY), f"rpztune status imported {modules & set(HEAVY)}"


def test_cli_imports_lazy_packages_keep_their_names() -> None:
    # The packages' public names still resolve (PEP 562); search.export stays the function.
    import models
    import objectives
    import reports
    import search

    assert callable(search.export) and callable(search.run_study)
    assert {"numpy-mlp", "mynet", "finetune"} <= set(objectives.task_names())
    assert objectives.get_task("numpy-mlp").name == "numpy-mlp"
    assert callable(reports.studies_frame) and callable(models.MyNet)
    with pytest.raises(AttributeError):
        reports.no_such_name  # noqa: B018
