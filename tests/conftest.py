"""Shared fixtures: the real data folder (``$RPZTUNE_DATA``, default ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder; missing data fails under CI=true and skips elsewhere."""
    path = Path(os.environ.get("RPZTUNE_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "mnist" / "full-mnist.npz").is_file():
        message = f"real data not found at {path} (set RPZTUNE_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Downloads (if any) go to a throw-away cache, never to the user's.
    monkeypatch.setenv("RPZTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
