"""Bad data folders through the real command: a failed download leaves the folder as it was and says why in
full; a truncated FashionMNIST file is reported as unreadable, not as missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rpz_offline import OFFLINE_PRELUDE

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.slow  # real data files and a failed download, through the real command (4-6 s each)

ROOT = Path(__file__).resolve().parents[2]
_MAIN = "from search.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def rpztune_offline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command with every socket failing (a download is tried and fails, as on a machine offline)."""
    return subprocess.run(
        [sys.executable, "-c", OFFLINE_PRELUDE + _MAIN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RPZTUNE_CACHE": str(cwd / "cache")},
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line != "NETWORK ATTEMPT"]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_data_faults_a_failed_mnist_download_writes_nothing_and_says_why(tmp_path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    result = rpztune_offline(*RUN, "numpy-mlp", "--trials", "1", "--data", str(folder), cwd=tmp_path)
    line = error_line(result)
    assert "the download failed: Error downloading train-images-idx3-ubyte.gz: Tried https://" in line
    assert "<urlopen error network access blocked by the test>" in line, line
    assert list(folder.iterdir()) == [], "no MNIST/raw/ left in the user's folder"
    assert not (tmp_path / "studies.db").exists()


def test_data_faults_a_truncated_fashionmnist_file_is_unreadable_not_missing(data_dir, tmp_path) -> None:
    raw = tmp_path / "fashion" / "FashionMNIST" / "raw"
    shutil.copytree(data_dir / "FashionMNIST" / "raw", raw)
    images = raw / "train-images-idx3-ubyte"
    images.chmod(0o644)
    os.truncate(images, images.stat().st_size // 2)
    result = rpztune_offline(*RUN, "mynet", "--trials", "1", "--data", str(raw.parents[1]), cwd=tmp_path)
    line = error_line(result)
    promised = 16 + 60_000 * 28 * 28  # the idx header's dimensions
    assert f"{images} has {images.stat().st_size} bytes where its header promises {promised}" in line, line
    assert not (tmp_path / "studies.db").exists()
