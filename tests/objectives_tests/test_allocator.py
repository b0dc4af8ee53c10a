"""The allocator setting: large freed blocks are reused (no page faults per step), and handed back after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains to measure the allocator (4 s)

ROOT = Path(__file__).resolve().parents[2]
STEPS = """
import json, resource, numpy as np
from objectives.training.allocator import keep_freed_memory, release_free_memory
from objectives.training.memory import rss_mb
took = keep_freed_memory()
faults = []
for _ in range(6):  # a training step's pattern: a 64 MiB activation allocated, filled and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(8 * 2**20)
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
held = rss_mb()
release_free_memory()
print(json.dumps({"took": took, "faults": faults[1:], "held_mb": held, "released_mb": rss_mb()}))
"""


def steps(malloc: str) -> dict:
    env = {**os.environ, "RPZTUNE_MALLOC": malloc, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_large_blocks_are_reused_then_released() -> None:
    default, kept = steps("default"), steps("")
    assert not default["took"] and kept["took"]
    # glibc maps a 64 MiB block afresh each time: at least a fault per 2 MiB (huge pages), mostly one per page
    assert min(default["faults"]) >= 32
    assert max(kept["faults"]) < min(default["faults"]) / 20, "kept: the freed block is reused"
    assert kept["held_mb"] - kept["released_mb"] > 32, "release_free_memory hands the block back"
