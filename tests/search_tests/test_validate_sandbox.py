"""``rpztune validate`` treats a zip as untrusted: hostile zips through the real CLI are contained by the
sandbox (no network, no writes outside its scratch folder, process/time/memory limits) and fail with a line
saying what they tried; a zip bomb is refused before anything big is written; an untrained zip's outputs
pass every check but accuracy. (Forged verdicts: test_validate_forgery.py.)"""

from __future__ import annotations

import importlib.util
import io
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from models import submission_source
from models.finetune import FinetuneCfg
from models.mynet import MyNetCfg
from nn_numpy import standalone_source
from search.delivery.sandbox import SandboxUnavailable
from search.delivery.validate import REQUIRED_FILES, Limits
from search.delivery.validate import validate as validate_library

ROOT = Path(__file__).resolve().parents[2]
# numpy_nn.py imports first: the hostile code runs there, before torch is needed.
QUICK = ["--timeout", "60"]


@pytest.fixture(scope="session")
def bwrap() -> None:
    """bubblewrap on the PATH (``scripts/ensure-bubblewrap.sh`` installs it): fails under CI=true, skips
    elsewhere."""
    if shutil.which("bwrap") is None:
        message = "bubblewrap is not installed (scripts/ensure-bubblewrap.sh)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def hostile_zip(path: Path, numpy_nn: str, pytorch_cnn: str = "") -> Path:
    """The lab's files with the hostile code in ``numpy_nn.py`` (and ``pytorch_cnn.py``), run at import;
    everything else dummy."""
    sources = {"numpy_nn.py": textwrap.dedent(numpy_nn), "pytorch_cnn.py": pytorch_cnn}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in REQUIRED_FILES:
            data = _png() if name.endswith(".png") else b"not a checkpoint"
            archive.writestr(name, sources.get(name, data))
    return path


@pytest.fixture(scope="module")
def good_zip(tmp_path_factory) -> Path:
    """A zip of the exporter's own files (numpy layers, MyNet, a plain-torch FinetuneNet) with untrained
    weights: everything validate checks, in seconds, without a study."""
    folder = tmp_path_factory.mktemp("good")
    source = submission_source(MyNetCfg(), FinetuneCfg(), plain_torch=True)
    (folder / "pytorch_cnn.py").write_text(source)
    spec = importlib.util.spec_from_file_location("_good_pytorch_cnn", folder / "pytorch_cnn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    weights = {}
    for name, model in (("model.pt", module.MyNet()), ("finetuned.pt", module.FinetuneNet())):
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        weights[name] = buffer.getvalue()
    path = folder / "good.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in REQUIRED_FILES:
            if name.endswith(".png"):
                archive.writestr(name, _png())
        archive.writestr("numpy_nn.py", standalone_source())
        archive.writestr("pytorch_cnn.py", source)
        for name, data in weights.items():
            archive.writestr(name, data)
    return path


def validate(zip_path: Path, *args: str, limit_file_mb: int | None = None) -> subprocess.CompletedProcess:
    """``rpztune validate ZIP ARGS`` as a real subprocess; ``limit_file_mb``: it may write no file larger
    (RLIMIT_FSIZE: a bigger write kills it with SIGXFSZ)."""

    def limit() -> None:
        if limit_file_mb is not None:
            size = limit_file_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    scratch = _scratch(zip_path)
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "search.cli", "validate", str(zip_path), *args],
        cwd=zip_path.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)},
        preexec_fn=limit,
    )


def _scratch(zip_path: Path) -> Path:
    """The TMPDIR of the validate run of ``zip_path``: its files are bound into the sandbox from there."""
    return zip_path.parent / "validate-tmp"


def line(result: subprocess.CompletedProcess, start: str) -> str:
    """The report line starting with ``start`` (after its PASS/FAIL mark)."""
    for text in result.stdout.splitlines():
        if text.strip().split(None, 1)[-1].startswith(start):
            return text.strip()
    raise AssertionError(f"no line {start!r} in:\n{result.stdout}\n{result.stderr}")


# Every way out the issue names, tried at import; each outcome (what the kernel answered) goes into the
# exception that ends the import, so that the report shows it. pytorch_cnn.py then asks for 64 GiB.
ESCAPES = """
    import _socket, os, socket, subprocess, tempfile

    outcomes = []

    def attempt(what, action):
        try:
            action()
            outcomes.append(f"{what}: DONE")
        except OSError as exc:
            outcomes.append(f"{what}: refused ({exc.strerror})")

    raw = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    attempt("raw connect", lambda: raw.connect(("1.1.1.1", 80)))
    attempt("socket connect", lambda: socket.create_connection(("pypi.org", 443), timeout=5))
    for path in TARGETS:
        attempt(f"write {path}", lambda: open(path, "w").write("pwned"))
    attempt("overwrite model.pt", lambda: open("model.pt", "wb").write(b"pwned"))
    with tempfile.TemporaryFile() as scratch:  # TMPDIR is the scratch folder: allowed, not reported
        scratch.write(b"fine")
    os.system("touch ~/pwned-shell %s" % SHELL_TARGET)
    outcomes.append("id: " + subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip())
    raise RuntimeError("; ".join(outcomes))
"""


@pytest.fixture(scope="module")
def escapes(bwrap, tmp_path_factory) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """One validate run of the zip trying every escape; the host paths it tried to write."""
    folder = tmp_path_factory.mktemp("escapes")
    tag = f"rpztune-pwned-{os.getpid()}"
    targets = [Path.home() / tag, Path("/tmp") / tag, ROOT / tag, folder / tag]
    shell_target = Path("/tmp") / f"{tag}-shell"
    code = f"TARGETS = {[str(t) for t in targets]!r}\nSHELL_TARGET = {str(shell_target)!r}\n"
    code += textwrap.dedent(ESCAPES)
    path = hostile_zip(folder / "escapes.zip", code, pytorch_cnn="x = bytearray(64 * 2**30)\n")
    result = validate(path, *QUICK)
    written = [*targets, shell_target, Path.home() / "pwned-shell"]
    yield result, written
    for file in written:
        file.unlink(missing_ok=True)


@pytest.mark.slow
def test_validate_sandbox_refuses_network_even_through_raw_socket_and_says_so(escapes) -> None:
    result, _ = escapes
    assert result.returncode == 1, result.stdout + result.stderr
    imported = line(result, "numpy_nn.py imports")
    assert imported.startswith("FAIL")
    assert "tried to use the network: connect to ('1.1.1.1', 80)" in imported
    assert "tried to use the network: look up ('pypi.org', 443)" in imported
    # what the kernel answered: no interface leads anywhere
    assert "raw connect: refused (Network is unreachable)" in imported
    assert "socket connect: refused" in imported and "socket connect: DONE" not in imported
    assert line(result, "sandbox: no network").startswith("FAIL")


@pytest.mark.slow
def test_validate_sandbox_refuses_writes_outside_scratch_and_says_which(escapes) -> None:
    result, written = escapes
    imported = line(result, "numpy_nn.py imports")
    for path in written[:4]:
        assert f"tried to write outside the scratch folder: open('{path}', 'w')" in imported, path
        assert f"write {path}: refused" in imported
    assert "overwrite model.pt: refused (Read-only file system)" in imported
    assert "TemporaryFile" not in imported and "/scratch" not in imported
    assert "tried to start a process: os.system 'touch ~/pwned-shell" in imported
    assert "tried to start a process: subprocess.Popen ['id', '-u']" in imported
    assert "id: 2" in imported, "the zip's processes run as an unprivileged uid (200000 up), not root"
    assert [p for p in written if p.exists()] == []


@pytest.mark.slow
def test_validate_sandbox_memory_hog_fails_at_the_memory_limit(escapes) -> None:
    result, _ = escapes
    imported = line(result, "pytorch_cnn.py imports")
    assert imported.startswith("FAIL") and "MemoryError: over the sandbox's memory limit" in imported
    assert line(result, "MyNet with model.pt").startswith("FAIL")
    assert "(limit 8192 MiB of address space per process)" in imported


def _checkers_running(zip_path: Path) -> list[str]:
    """Processes still running a sandboxed checker of the validate run of ``zip_path``: those under a bwrap
    whose command line binds that run's files (another test's sandbox may run meanwhile, in the other pytest
    process)."""
    token = str(_scratch(zip_path)).encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"/checker/check.py" in cmdline.read_bytes() and _below(int(cmdline.parent.name), token):
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def _below(pid: int, token: bytes) -> bool:
    """Whether an ancestor of process ``pid`` has ``token`` in its command line."""
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(row for row in status.splitlines() if row.startswith("PPid:")).split()[1])
        if pid > 1 and token in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
    return False


FORK_BOMB = """
    import os, time

    children = 0
    while True:
        try:
            pid = os.fork()
        except OSError as exc:
            refused = exc
            break
        if pid == 0:  # every child forks for ever (sleeping between refusals, to spare the shared CPUs)
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.05)
        children += 1
    raise RuntimeError(f"fork refused after {children} children: {refused}")
"""


@pytest.fixture(scope="module")
def bomb_then_loop(bwrap, tmp_path_factory) -> subprocess.CompletedProcess:
    """One validate run (24 processes, 25 s) of a zip whose numpy_nn.py is a fork bomb and whose
    pytorch_cnn.py then loops for ever."""
    path = hostile_zip(tmp_path_factory.mktemp("bomb") / "bomb.zip", FORK_BOMB, "while True:\n    pass\n")
    return validate(path, "--max-processes", "24", "--timeout", "25")


@pytest.mark.slow
def test_validate_sandbox_contains_a_fork_bomb_by_the_process_limit(bomb_then_loop) -> None:
    # The bomb never lets the process answer, so it gives no account of itself: the time limit ends it, and
    # every check fails for want of an answer.
    result = bomb_then_loop
    assert result.returncode == 1, result.stdout + result.stderr
    imported = line(result, "numpy_nn.py imports")
    assert imported.startswith("FAIL") and "no answer: killed at the time limit of 25 s" in imported
    assert "Traceback" not in result.stderr
    assert _checkers_running(Path(result.args[4])) == [], "the bomb's processes end with the sandbox"


@pytest.mark.slow
def test_validate_sandbox_kills_a_runaway_at_the_time_limit(bomb_then_loop) -> None:
    result = bomb_then_loop
    killed = "FAIL  time limit: killed at the time limit of 25 s while waiting for 'the imports of numpy_nn"
    assert killed in result.stdout
    for check in ("pytorch_cnn.py imports", "MyNet() on torch.rand", "numpy_nn.Linear", "time: MyNet"):
        assert line(result, check).startswith("FAIL"), check  # each check the timeout left unanswered
    assert result.stdout.rstrip().splitlines()[-1].startswith("FAIL: ")


def _bomb(path: Path, mb: int, declared: int | None = None) -> Path:
    """A zip whose ``model.pt`` is ``mb`` MiB of zeros (deflated to a fraction of a MiB); ``declared``:
    the size its headers claim instead."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in REQUIRED_FILES:
            archive.writestr(name, bytes(mb * 1024 * 1024) if name == "model.pt" else b"x")
    if declared is not None:
        real = (mb * 1024 * 1024).to_bytes(4, "little")
        data = path.read_bytes()
        assert data.count(real) == 2  # the local header and the central directory
        path.write_bytes(data.replace(real, declared.to_bytes(4, "little")))
    return path


def test_validate_refuses_a_zip_bomb_before_unpacking_it(tmp_path) -> None:
    path = _bomb(tmp_path / "bomb.zip", 200)
    assert path.stat().st_size < 1024 * 1024
    # under RLIMIT_FSIZE 8 MiB: writing more than that to any file would kill validate with SIGXFSZ
    result = validate(path, "--max-file-mb", "50", limit_file_mb=8)
    assert result.returncode == 1, result.stdout + result.stderr
    refused = "FAIL  unpack: refused before unpacking: model.pt would unpack to 200.0 MiB (cap 50)"
    assert refused in result.stdout
    assert "numpy_nn.py imports" not in result.stdout


def test_validate_stops_unpacking_a_file_larger_than_its_header_says(tmp_path) -> None:
    path = _bomb(tmp_path / "liar.zip", 20, declared=1000)
    report = validate_library(path, Limits(file_mb=5))
    unpack = report.check("unpack")
    assert unpack.ok is False and "model.pt" in unpack.detail, unpack
    assert "numpy_nn.py imports" not in [c.name for c in report.checks]


def test_validate_without_bubblewrap_is_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailable, match="needs bwrap, which is not installed .apt-get install"):
        validate_library(hostile_zip(tmp_path / "any.zip", "x = 1\n"))


@pytest.mark.slow
def test_validate_sandbox_runs_an_untrained_zip_and_fails_it_on_accuracy_alone(bwrap, good_zip) -> None:
    result = validate(good_zip, "--max-memory-mb", "6144")
    assert result.returncode == 1, result.stdout + result.stderr
    assert line(result, "sandbox: no network").startswith("INFO")
    for check in ("numpy_nn.Linear", "MyNet() on torch.rand", "FinetuneNet() builds", "classify(", "time: F"):
        assert line(result, check).startswith("PASS"), check
    accuracy = line(result, "MyNet accuracy on the 500-image FashionMNIST sample shipped with rpztune")
    assert accuracy.startswith("FAIL") and "below the threshold" in accuracy
    assert line(result, "FinetuneNet accuracy on photos").startswith("UNCHECKED  FinetuneNet accuracy")
    assert result.stdout.rstrip().splitlines()[-1].startswith("FAIL: 1 of ")
