"""The real ``rpztune`` command in a subprocess, for the CLI tests (imported by tests, not a test module)."""

from __future__ import annotations

import os
import signal
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


def assert_refused(
    result: subprocess.CompletedProcess, message: str, cwd: Path, *, opens_a_study: bool = False
) -> None:
    """``rpztune``'s answer to bad input: exit 2, ``message`` and no traceback on stderr, and no
    ``studies.db`` written in ``cwd`` (unless ``opens_a_study``: a command naming a study may create one)."""
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, f"{message!r} not in {result.stderr!r}"  # no pytest rewrite here
    assert "Traceback" not in result.stderr, result.stderr
    assert opens_a_study or not (cwd / "studies.db").exists(), f"{cwd / 'studies.db'} written"


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """Start ``rpztune ARGS`` in ``cwd`` in its own process group (signals can reach all its workers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RPZTUNE_CACHE": str(cwd / "cache")},
        start_new_session=True,
        # a test run in the background inherits an ignored SIGINT, which Python then keeps ignoring
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """Wait for a :func:`start`-ed command: ``(exit code, stdout, stderr)``; on a timeout its whole process
    group is killed (no workers left running after a failed test)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err
