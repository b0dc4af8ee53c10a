"""Shared fixtures: the real data folder (``$RPZTUNE_DATA``, default ``../shared/data``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from rpz_offline import NO_RPZTUNE_PRELUDE, OFFLINE_PRELUDE

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules whose tests are all slow first (real runs, services: the longest), then those with more
    slow tests, each module's own order kept: ``make test`` runs each module whole in one of two processes
    (``--dist loadfile``), taking modules in this order, so the long ones start early and the two processes
    end together instead of one running the last long module alone."""
    module = {item: item.nodeid.split("::")[0] for item in items}
    slow = Counter(module[item] for item in items if item.get_closest_marker("slow"))
    tests = Counter(module.values())
    items.sort(key=lambda item: (slow[module[item]] < tests[module[item]], -slow[module[item]]))  # stable


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder; missing data fails under CI=true and skips elsewhere."""
    # absolute, so that subprocesses started in a temporary folder find it too
    path = Path(os.environ.get("RPZTUNE_DATA", ROOT.parent / "shared" / "data")).resolve()
    if not (path / "mnist" / "full-mnist.npz").is_file():
        message = f"real data not found at {path} (set RPZTUNE_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def photos_dir(data_dir: Path) -> Path:
    """The shared Dogs-vs-Cats photo folder (``cat/``, ``dog/``); missing photos fail under CI=true."""
    path = data_dir / "dogs_and_cats"
    if not (path / "cat").is_dir():
        pytest.fail(f"no Dogs-vs-Cats photos at {path}") if os.environ.get("CI") == "true" else pytest.skip()
    return path


@pytest.fixture
def small_finetune() -> dict[str, object]:
    """The fine-tuning search at its smallest (EfficientNet-Lite0 at 96 px, only the leading probe
    fine-tuned), for ``space.with_overrides``; a test adds its epochs and stage sizes."""
    return {"backbone": ["tf_efficientnet_lite0"], "resolution": [96], "finetune_top": 1}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny networks: a second torch thread gains nothing and, on a loaded machine, spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _offline_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Downloads and feature caches go to a throw-away cache, never to the user's; session-scoped so that the
    # module fixtures (built before any function-scoped one) see it too, and a warm ~/.cache changes nothing.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RPZTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def offline_prelude() -> str:
    """Python source that makes every socket use fail loudly (prints ``NETWORK ATTEMPT``)."""
    return OFFLINE_PRELUDE


@pytest.fixture(scope="session")
def run_standalone():
    """Run ``script`` as ``check.py`` in ``folder`` with ``python -I``, offline and without rpztune."""

    def run(script: str, folder: Path) -> subprocess.CompletedProcess:
        (folder / "check.py").write_text(OFFLINE_PRELUDE + NO_RPZTUNE_PRELUDE + script)
        return subprocess.run(
            [sys.executable, "-I", "check.py"], cwd=folder, capture_output=True, text=True, timeout=300
        )

    return run
