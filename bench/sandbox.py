"""Benchmark of validate's sandbox: what bubblewrap adds to a run of the zip's code.

Usage: ``python bench/sandbox.py [--repeats N]``

Side by side in one run, alternating so that the machine's load hits both alike, it times (median of
``--repeats``): ``true`` in the sandbox (the fixed cost of making one), and ``python -I -c "import numpy,
torch"`` (what every validate's checker starts with) plainly and in the sandbox; it prints the seconds and the
ratio sandboxed / plain.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.delivery.sandbox import run_sandboxed  # noqa: E402

IMPORT = [sys.executable, "-I", "-c", "import numpy, torch"]


def _plain() -> float:
    start = time.monotonic()
    subprocess.run(IMPORT, check=True, env={"OMP_NUM_THREADS": "1"})
    return time.monotonic() - start


def _sandboxed(command: list[str]) -> float:
    result = run_sandboxed(command, readonly={}, cwd="/", env={"OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise SystemExit(f"sandboxed {command} failed: {result.stderr}")
    return result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    _sandboxed(["true"])  # the one-off preflight
    empty, plain, boxed = [], [], []
    for _ in range(args.repeats):
        empty.append(_sandboxed(["true"]))
        plain.append(_plain())
        boxed.append(_sandboxed(IMPORT))
    median = statistics.median
    print(f"sandbox with `true`:               {median(empty):.3f} s")
    print(f"import numpy, torch, plain:        {median(plain):.2f} s")
    print(f"import numpy, torch, in sandbox:   {median(boxed):.2f} s")
    print(f"ratio sandboxed / plain:           {median(boxed) / median(plain):.2f}")


if __name__ == "__main__":
    main()
