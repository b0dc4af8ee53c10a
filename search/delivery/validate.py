"""Validate a lab submission zip the way the upload system would use it, without rpztune and offline.

The zip is untrusted. It is checked for its layout (the lab's files, all at the root) and its declared
sizes; one over the limits is refused before anything is unpacked, and unpacking streams every file with a
hard cap (a header that lies stops it). The lab's checks then run in a bubblewrap sandbox
(``sandbox.py``: no network, a read-only system, a writable scratch folder only, an unprivileged uid,
time/memory/process limits) in a fresh ``python -I`` which cannot import rpztune
(``_sandbox_checks.py``), whose audit hook reports what the zip's code tried: the numpy layers on the
lab's example inputs, ``MyNet()`` on a ``[64, 1, 28, 28]`` batch, ``model.pt`` and ``finetuned.pt``
loading, ``classify``, ``FinetuneNet()`` building without a download, and CPU inference times. File
sizes and times are compared with :class:`Limits`; each ``.py`` file's third-party imports are listed
(the evaluator may lack some).
"""

from __future__ import annotations

import ast
import json
import signal
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from search.delivery.sandbox import SCRATCH, SandboxLimits, SandboxResult, run_sandboxed

__all__ = [
    "LAB_MODULES",
    "OPTIONAL_FILES",
    "REQUIRED_FILES",
    "Check",
    "Limits",
    "Report",
    "third_party_imports",
    "validate",
]

REQUIRED_FILES = (
    "numpy_nn.py",
    "numpy_nn_training.png",
    "numpy_nn_classification.png",
    "pytorch_cnn.py",
    "pytorch_fcnet_training.png",
    "pytorch_cnn_training.png",
    "model.pt",
    "finetuned.pt",
)
# The lab lists cnn.ipynb too, "for your convenience, will not be checked".
OPTIONAL_FILES = ("cnn.ipynb",)
# What the lab's own templates import; anything else may be missing where the submission is evaluated.
LAB_MODULES = ("matplotlib", "numpy", "torch", "torchvision")
# Packages the checker imports before the zip's code (trusted, from the venv) when the zip's files need them.
_PREIMPORT = ("numpy", "torch", "torchvision", "timm", "matplotlib")
_SANDBOX = Path(__file__).with_name("sandbox_checks.py")
_MB = 1024 * 1024
_MAX_ENTRIES = 100


@dataclass(frozen=True)
class Limits:
    """Limits a submission is held to; ``None``: only reported.

    Args:
        zip_mb: Size of the zip, MiB.
        file_mb: Size of any one unpacked file, MiB.
        mynet_ms: MyNet's CPU inference time per 100 images, ms.
        finetune_ms: FinetuneNet's CPU inference time per 100 images, ms.
        threads: Torch threads the times are measured with.
        strict_imports: Fail (not just warn) when a ``.py`` file imports a module outside ``LAB_MODULES``.
        unpack_mb: Hard cap on everything unpacked, MiB (each file is also held to ``file_mb``).
        sandbox: Time, memory and processes of the sandboxed checks (then all their processes are killed).
    """

    zip_mb: float | None = None
    file_mb: float | None = None
    mynet_ms: float | None = None
    finetune_ms: float | None = None
    threads: int = 1
    strict_imports: bool = False
    unpack_mb: float = 1024.0
    sandbox: SandboxLimits = SandboxLimits()


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok`` (``None``: information only) and what was found."""

    name: str
    ok: bool | None
    detail: str


@dataclass
class Report:
    """All checks of one zip; ``ok`` when none failed."""

    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def check(self, name: str) -> Check:
        """The check called ``name`` (or starting with it).

        Raises:
            KeyError: naming the checks there are.
        """
        for c in self.checks:
            if c.name == name or c.name.startswith(name):
                return c
        raise KeyError(f"no check {name!r}; checks: {[c.name for c in self.checks]}")


def validate(path: str | Path, limits: Limits = Limits()) -> Report:
    """Run every check on the submission zip at ``path``.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        SandboxUnavailable: when no sandbox can be made here (bubblewrap missing or refused).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no submission zip at {path}")
    report = Report(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        report.checks.append(Check("zip opens", False, f"{path} is not a zip file ({exc})"))
        return report
    with archive, tempfile.TemporaryDirectory(prefix="rpztune-validate-") as tmp:
        names = archive.namelist()
        report.checks += _layout_checks(names)
        report.checks += _size_checks(path, archive, limits)
        unpacked = Path(tmp) / "submission"
        unpacked.mkdir(mode=0o755)
        unpack = _unpack(archive, unpacked, limits)
        report.checks.append(unpack)
        if not unpack.ok:
            return report
        report.checks += _import_checks(unpacked, limits)
        runner = Path(tmp) / "runner"
        runner.mkdir(mode=0o755)
        (runner / "check.py").write_text(_SANDBOX.read_text())
        needed = {m for f in unpacked.glob("*.py") for m in _imports_or_none(f)}
        trusted = ["numpy", "torch", *(m for m in _PREIMPORT[2:] if m in needed)]
        report.checks += _sandbox_checks(runner, unpacked, trusted, limits)
    return report


def _layout_checks(names: list[str]) -> list[Check]:
    folders = sorted({n for n in names if "/" in n.rstrip("/") or n.endswith("/")})
    root = {n for n in names if "/" not in n}
    checks = [
        Check(
            "zip layout: every file at the root, no folders",
            not folders,
            "ok" if not folders else f"folders inside the zip: {', '.join(folders[:5])}",
        )
    ]
    missing = [n for n in REQUIRED_FILES if n not in root]
    detail = (
        f"all {len(REQUIRED_FILES)} present" if not missing else f"missing at the root: {', '.join(missing)}"
    )
    checks.append(Check("required files", not missing, detail))
    absent = [n for n in OPTIONAL_FILES if n not in root]
    extra = sorted(root - set(REQUIRED_FILES) - set(OPTIONAL_FILES))
    notes = [f"{n} absent (listed by the lab, not checked)" for n in absent]
    notes += [f"extra files: {', '.join(extra)}"] if extra else []
    if notes:
        checks.append(Check("other files", None, "; ".join(notes)))
    return checks


def _unpack(archive: zipfile.ZipFile, folder: Path, limits: Limits) -> Check:
    """Refuse on the headers alone (unsafe names, too many entries, declared sizes over the limits), then
    stream each file with a hard cap, so a zip bomb or a header that lies writes no more than the cap."""
    entries = [i for i in archive.infolist() if not i.is_dir()]
    file_cap = min(limits.file_mb or limits.unpack_mb, limits.unpack_mb) * _MB
    total = sum(i.file_size for i in entries)
    refused = None
    if any(_unsafe(i.filename) for i in archive.infolist()):
        refused = "an entry leaves the folder"
    elif len({i.filename for i in entries}) < len(entries):
        refused = "two entries have the same name"
    elif len(entries) > _MAX_ENTRIES:
        refused = f"{len(entries)} entries (at most {_MAX_ENTRIES})"
    elif over := [i for i in entries if i.file_size > file_cap]:
        refused = (
            f"{over[0].filename} would unpack to {over[0].file_size / _MB:.1f} MiB (cap {file_cap / _MB:g})"
        )
    elif total > limits.unpack_mb * _MB:
        refused = f"the files would unpack to {total / _MB:.1f} MiB (cap {limits.unpack_mb:g})"
    if refused:
        return Check("unpack", False, f"refused before unpacking: {refused}")
    written = 0
    for info in entries:
        target = folder / PurePosixPath(info.filename).name if "/" not in info.filename else None
        if target is None:
            continue  # the layout check fails it; nothing runs from a folder
        try:
            with archive.open(info) as source, target.open("xb") as out:
                size = 0
                while chunk := source.read(_MB):
                    size += len(chunk)
                    written += len(chunk)
                    if size > info.file_size or size > file_cap or written > limits.unpack_mb * _MB:
                        return Check(
                            "unpack",
                            False,
                            f"stopped: {info.filename} unpacks beyond its declared "
                            f"{info.file_size / _MB:.2f} MiB or the cap",
                        )
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            return Check("unpack", False, f"{info.filename} does not unpack: {exc}")
        target.chmod(0o644)
    return Check(
        "unpack", True, f"{len(entries)} files, {written / _MB:.2f} MiB (cap {limits.unpack_mb:g} MiB)"
    )


def _unsafe(name: str) -> bool:
    pure = PurePosixPath(name)
    return pure.is_absolute() or ".." in pure.parts or "\\" in name


def _size_checks(path: Path, archive: zipfile.ZipFile, limits: Limits) -> list[Check]:
    size = path.stat().st_size / _MB
    checks = [
        Check("zip size", _within(size, limits.zip_mb), f"{size:.2f} MiB{_limit(limits.zip_mb, 'MiB')}")
    ]
    files = sorted(
        ((i.file_size / _MB, i.filename) for i in archive.infolist() if not i.is_dir()), reverse=True
    )
    over = [name for mb, name in files if not _within(mb, limits.file_mb)]
    listing = ", ".join(f"{name} {mb:.2f}" for mb, name in files)
    detail = f"MiB: {listing}{_limit(limits.file_mb, 'MiB per file')}"
    checks.append(
        Check("file sizes", not over, detail if not over else f"over the limit: {', '.join(over)}; {detail}")
    )
    return checks


def _within(value: float, limit: float | None) -> bool:
    return limit is None or value <= limit


def _limit(limit: float | None, unit: str) -> str:
    return " (no limit set)" if limit is None else f" (limit {limit:g} {unit})"


def third_party_imports(source: str, local: set[str]) -> list[str]:
    """Top-level modules ``source`` imports that are neither the standard library nor in ``local``."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return sorted(
        m for m in modules if m not in sys.stdlib_module_names and m not in local and m != "__future__"
    )


def _import_checks(folder: Path, limits: Limits) -> list[Check]:
    files = sorted(folder.glob("*.py"))
    local = {f.stem for f in files}
    checks = []
    for file in files:
        try:
            needed = third_party_imports(file.read_text(), local)
        except SyntaxError as exc:
            checks.append(Check(f"imports: {file.name}", False, f"does not parse: {exc}"))
            continue
        outside = [m for m in needed if m not in LAB_MODULES]
        detail = f"needs {', '.join(needed) or 'nothing beyond the standard library'}"
        if outside:
            detail += (
                f"; {', '.join(outside)} not among the lab's template imports ({', '.join(LAB_MODULES)}): "
                "the evaluator may lack it"
            )
        checks.append(
            Check(f"imports: {file.name}", False if outside and limits.strict_imports else None, detail)
        )
    return checks


def _imports_or_none(file: Path) -> list[str]:
    try:
        return third_party_imports(file.read_text(errors="replace"), set())
    except SyntaxError:
        return []


def _sandbox_checks(runner: Path, folder: Path, trusted: list[str], limits: Limits) -> list[Check]:
    result = run_sandboxed(
        [sys.executable, "-I", "-B", "/checker/check.py", str(limits.threads), SCRATCH, ",".join(trusted)],
        readonly={"/submission": folder, "/checker": runner},
        cwd="/submission",
        env={v: str(limits.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        | {"MPLCONFIGDIR": SCRATCH, "XDG_CACHE_HOME": SCRATCH, "TORCH_HOME": f"{SCRATCH}/torch"},
        limits=limits.sandbox,
    )
    checks, attempts, running = [], [], None
    for line in result.stdout.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if "start" in record:
            running = record["start"]
        elif "attempt" in record:
            attempts.append(str(record["attempt"]))
        elif "name" in record and "ok" in record:
            checks.append(_as_check(record, limits))
            running = None
    tried = list(dict.fromkeys(attempts))
    checks.append(
        Check(
            "sandbox: no network, no writes outside the scratch folder, no processes",
            not tried,
            "nothing of the kind tried"
            if not tried
            else f"the zip's code tried ({len(tried)}): " + "; ".join(tried[:10]),
        )
    )
    if result.timed_out:
        during = f" during {running!r}" if running else ""
        checks.append(
            Check("time limit", False, f"killed at the time limit of {limits.sandbox.seconds:g} s{during}")
        )
    elif result.returncode != 0 or running is not None or not checks[:-1]:
        checks.append(Check("lab checks ran", False, _how_it_ended(result, running, limits)))
    return checks


def _how_it_ended(result: SandboxResult, running: str | None, limits: Limits) -> str:
    code = result.returncode
    number = -code if code < 0 else code - 128 if code > 128 else 0
    why = {
        signal.SIGXCPU: f"the CPU time limit ({limits.sandbox.seconds:g} s)",
        signal.SIGXFSZ: "the file size limit",
        signal.SIGKILL: "SIGKILL (out of memory?)",
    }.get(number, signal.Signals(number).name if number in signal.valid_signals() else f"exit code {code}")
    tail = " | ".join(result.stderr.strip().splitlines()[-3:])
    during = f" during {running!r}" if running else ""
    return f"ended by {why}{during}" + (f": {tail}" if tail else "")


def _as_check(record: dict, limits: Limits) -> Check:
    name, ok, detail = record["name"], bool(record["ok"]), str(record["detail"])
    if "MemoryError" in detail:
        detail += f" (limit {limits.sandbox.memory_mb} MiB of address space per process)"
    if "params" in record:
        detail += f" ({record['params']:,} parameters)"
    if ok and "ms" in record:
        limit = limits.mynet_ms if "MyNet" in name else limits.finetune_ms
        ms = float(record["ms"])
        ok = _within(ms, limit)
        detail = f"{ms:.1f} ms per 100 images on the CPU, {record['threads']} thread(s){_limit(limit, 'ms')}"
    return Check(name, ok, detail)
