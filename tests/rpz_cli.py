"""The real ``rpztune`` command in a subprocess, for the CLI tests (imported by tests, not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rpz_offline import OFFLINE_PRELUDE

ROOT = Path(__file__).resolve().parents[1]
_MAIN = "from search.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def rpztune(
    *args: str,
    cwd: Path,
    check: bool = True,
    offline: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ``rpztune ARGS`` in ``cwd`` with this checkout's code and a cache folder ``cwd/cache``.

    Args:
        check: Fail (with the command's output) unless it exits 0.
        offline: Every socket fails; a network attempt fails the test.
        env: Extra environment variables.
    """
    command = ["-c", OFFLINE_PRELUDE + _MAIN] if offline else ["-m", "search.cli"]
    result = subprocess.run(
        [sys.executable, *command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RPZTUNE_CACHE": str(cwd / "cache"), **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"rpztune {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    if offline:
        assert "NETWORK ATTEMPT" not in result.stderr
    return result
