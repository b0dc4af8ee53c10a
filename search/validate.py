"""Validate a lab submission zip the way the upload system would use it, without rpztune and offline.

The zip is checked for its layout (the lab's files, all at the root), unpacked into an empty temporary
folder, and the lab's checks run there in a fresh ``python -I`` whose sockets fail and which cannot import
rpztune (``_sandbox_checks.py``): the numpy layers on the lab's example inputs, ``MyNet()`` on a
``[64, 1, 28, 28]`` batch, ``model.pt`` and ``finetuned.pt`` loading, ``classify``, ``FinetuneNet()``
building without a download, and CPU inference times. File sizes and times are compared with
:class:`Limits`; each ``.py`` file's third-party imports are listed (the evaluator may lack some).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
_SANDBOX = Path(__file__).with_name("_sandbox_checks.py")
_MB = 1024 * 1024


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
        timeout: Seconds the sandboxed checks may take.
    """

    zip_mb: float | None = None
    file_mb: float | None = None
    mynet_ms: float | None = None
    finetune_ms: float | None = None
    threads: int = 1
    strict_imports: bool = False
    timeout: float = 300.0


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
        unpacked.mkdir()
        if any(_unsafe(name) for name in names):
            report.checks.append(Check("unpack", False, "not unpacked: an entry leaves the folder"))
            return report
        archive.extractall(unpacked)
        report.checks += _import_checks(unpacked, limits)
        runner = Path(tmp) / "runner"
        runner.mkdir()
        (runner / "check.py").write_text(_SANDBOX.read_text())
        report.checks += _sandbox_checks(runner / "check.py", unpacked, limits)
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


def _sandbox_checks(script: Path, folder: Path, limits: Limits) -> list[Check]:
    try:
        result = subprocess.run(
            [sys.executable, "-I", str(script), str(limits.threads)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=limits.timeout,
        )
    except subprocess.TimeoutExpired:
        return [Check("lab checks", False, f"did not finish within {limits.timeout:g} s")]
    checks = []
    for line in result.stdout.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the submission's own prints
        if not isinstance(record, dict) or "name" not in record or "ok" not in record:
            continue
        checks.append(_as_check(record, limits))
    if result.returncode != 0 or not checks:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        checks.append(Check("lab checks ran", False, f"exit code {result.returncode}: {tail}"))
    return checks


def _as_check(record: dict, limits: Limits) -> Check:
    name, ok, detail = record["name"], bool(record["ok"]), str(record["detail"])
    if "params" in record:
        detail += f" ({record['params']:,} parameters)"
    if ok and "ms" in record:
        limit = limits.mynet_ms if "MyNet" in name else limits.finetune_ms
        ms = float(record["ms"])
        ok = _within(ms, limit)
        detail = f"{ms:.1f} ms per 100 images on the CPU, {record['threads']} thread(s){_limit(limit, 'ms')}"
    return Check(name, ok, detail)
