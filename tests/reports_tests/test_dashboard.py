"""``rpztune dashboard``: the install hint when optuna-dashboard is missing, a real server when it is not."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from search.cli import main

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_dashboard_missing_tells_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # what Python does for a missing package
    monkeypatch.chdir(tmp_path)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["dashboard", "--storage", "sqlite:///studies.db"])
    assert code == 2
    assert stderr.getvalue().strip() == (
        "rpztune dashboard: error: optuna-dashboard is not installed; install it with: "
        "pip install 'rpztune[dashboard]' (or: pip install optuna-dashboard)"
    )
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.slow
def test_dashboard_serves_the_storage_over_http(report_storage, tmp_path) -> None:
    try:
        import optuna_dashboard  # noqa: F401
    except ModuleNotFoundError:
        message = "optuna-dashboard is not installed (pip install -e '.[dashboard]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "dashboard",
        "--storage",
        report_storage,
        "--port",
        str(port),
    ]
    log = tmp_path / "dashboard.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the dashboard exited:\n{log.read_text()}"
            try:
                status, body = get(f"http://127.0.0.1:{port}/api/studies")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no answer on port {port}:\n{log.read_text()}"
                time.sleep(0.5)
        assert status == 200
        names = {s["study_name"] for s in json.loads(body)["study_summaries"]}
        assert {"mlp", "mynet"} <= names
        status, page = get(f"http://127.0.0.1:{port}/")  # redirected to the dashboard's page
        assert status == 200 and b"Optuna Dashboard" in page
        assert f"http://127.0.0.1:{port}/" in log.read_text()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # loaded machine: a request in flight holds wsgiref's thread
            server.kill()
            server.wait(timeout=30)
