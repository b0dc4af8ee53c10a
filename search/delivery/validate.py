"""Validate a lab submission zip the way the upload system would use it, without rpztune and offline.

The zip is untrusted. It is checked for its layout (the lab's files, all at the root) and its declared
sizes; one over the limits is refused before anything is unpacked, and unpacking streams every file with a
hard cap (a header that lies stops it). Each checkpoint is read here, by the host, with
``torch.load(weights_only=True)``. The zip's code then runs in a bubblewrap sandbox (``sandbox.py``: no
network, a read-only system, a writable scratch folder only, an unprivileged uid, time/memory/process
limits) in a fresh ``python -I`` which cannot import rpztune (``sandbox_checks.py``).

**The sandbox returns raw outputs, the host judges** (``docs/delivery.md``, "How validate judges"). After the
zip's code is imported, the host sends requests on the sandbox's stdin, each with a fresh random nonce, and
accepts only the reply that follows that nonce's marker: the numpy layers' outputs on arrays the host drew,
MyNet's and FinetuneNet's outputs and ``classify`` on images the host chose with a fresh seed (labelled
FashionMNIST images and photos mixed with random tensors; the labels never leave the host). The host checks
shapes, that log-probabilities sum to one, that ``classify`` is their argmax, and the accuracy; it measures
the CPU time the sandbox's processes spend on each answer (the kernel's figures). A crash, an early exit, a
timeout or a missing answer fails the check it belongs to. Nothing the sandboxed process says about itself
(a result, a time, an audit line) counts as a pass.
"""

from __future__ import annotations

import ast
import secrets
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from search.delivery.judge import judge_in_sandbox
from search.delivery.sandbox import SandboxLimits

__all__ = [
    "FINETUNE_MIN_ACCURACY",
    "LAB_MODULES",
    "MYNET_MIN_ACCURACY",
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
MYNET_MIN_ACCURACY = 0.75  # the lab's threshold for MyNet on FashionMNIST
FINETUNE_MIN_ACCURACY = 0.90  # FinetuneNet on the photos given


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
        data: A data folder (``submit --data``'s layout): FashionMNIST's test images under
            ``FashionMNIST/raw/`` judge MyNet, the photos of ``dogs_and_cats/`` judge FinetuneNet. Without
            it (or without either part), MyNet is judged on the sample shipped with rpztune and
            FinetuneNet's accuracy is unchecked (the report is then incomplete, not a pass).
        fashion_images: How many FashionMNIST test images of ``data`` to draw (fresh seed per run).
        photos: How many photos of ``data`` to draw (fresh seed per run).
        seed: The draw's seed (``None``: a fresh random one, the default; tests may fix it).
    """

    zip_mb: float | None = None
    file_mb: float | None = None
    mynet_ms: float | None = None
    finetune_ms: float | None = None
    threads: int = 1
    strict_imports: bool = False
    unpack_mb: float = 1024.0
    sandbox: SandboxLimits = SandboxLimits()
    data: Path | None = None
    fashion_images: int = 1000
    photos: int = 200
    seed: int | None = None


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok`` (``None``: information only) and what was found; ``unchecked``: it could
    not be judged (no data for it), which is not a pass."""

    name: str
    ok: bool | None
    detail: str
    unchecked: bool = False

    @property
    def mark(self) -> str:
        return "UNCHECKED" if self.unchecked else {True: "PASS", False: "FAIL", None: "INFO"}[self.ok]


@dataclass
class Report:
    """All checks of one zip; ``ok`` when none failed."""

    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Passed: no check failed and none was left unchecked."""
        return not self.failed and not self.unchecked

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` (a check failed) or ``INCOMPLETE`` (none failed, some could not be judged)."""
        return "FAIL" if self.failed else "INCOMPLETE" if self.unchecked else "PASS"

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def unchecked(self) -> list[Check]:
        return [c for c in self.checks if c.unchecked]

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
        DataError: when ``limits.data`` does not exist or its images do not load.
        SandboxUnavailable: when no sandbox can be made here (bubblewrap missing or refused).
    """
    from search.delivery.judge_data import load_judging_data

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no submission zip at {path}")
    seed = limits.seed if limits.seed is not None else secrets.randbits(63)
    data = load_judging_data(limits.data, seed, fashion_images=limits.fashion_images, photos=limits.photos)
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
        report.checks += [_checkpoint_check(unpacked / name) for name in ("model.pt", "finetuned.pt")]
        runner = Path(tmp) / "runner"
        runner.mkdir(mode=0o755)
        (runner / "check.py").write_text(_SANDBOX.read_text())
        needed = {m for f in unpacked.glob("*.py") for m in _imports_or_none(f)}
        trusted = ["numpy", "torch", *(m for m in _PREIMPORT[2:] if m in needed)]
        report.checks += judge_in_sandbox(runner, unpacked, trusted, limits, data, seed)
    return report


def _checkpoint_check(file: Path) -> Check:
    """Read a checkpoint here, in the host, as the evaluator would (``weights_only=True``): a state dict of
    named tensors, all finite."""
    import torch

    name = f"{file.name} read by the host (torch.load weights_only=True)"
    if not file.is_file():
        return Check(name, False, f"no {file.name} in the zip")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure: the file is not a safe state dict
        said = " ".join(str(exc).split())
        return Check(name, False, f"not a state dict torch loads safely: {type(exc).__name__}: {said[:200]}")
    if not isinstance(state, dict) or not state:
        return Check(name, False, f"holds a {type(state).__name__}, not a state dict of named tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        return Check(name, False, f"entry {bad[0]!r} is not a named tensor ({len(bad)} such)")
    floats = [v for v in state.values() if v.is_floating_point()]
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        return Check(name, False, f"non-finite values in {', '.join(broken[:3])} ({len(broken)} tensors)")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    return Check(
        name,
        True,
        f"{len(state)} tensors, {sum(v.numel() for v in floats):,} floating-point values "
        f"({', '.join(dtypes)}), {file.stat().st_size / _MB:.2f} MiB",
    )


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
