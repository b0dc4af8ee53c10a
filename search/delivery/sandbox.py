"""Run untrusted Python (a submission's code) in a bubblewrap sandbox with time, memory and process limits.

What the sandbox is (see ``docs/delivery.md``, "What validate isolates"): new mount, network, PID, IPC and UTS
namespaces; a read-only view of ``/usr``, ``/etc``, the lib/bin links and the Python installation (nothing
else of the host: no ``/home``, ``/root``, ``/work``, ``/run``, host ``/tmp``); an empty read-only ``/tmp``
and ``$HOME``; one writable size-capped tmpfs at ``/scratch``; a network namespace whose only interface is
its own loopback; an unprivileged uid (root drops to a fresh uid via ``setpriv``; others get a user
namespace); ``RLIMIT_NPROC``/``AS``/``CPU``/``FSIZE`` via ``prlimit``; a wall-clock limit after which the
whole PID namespace is killed. The kernel enforces all of this; what the code *tried* is reported by an
audit hook in the sandboxed interpreter (``sandbox_checks.py``), not here.

:func:`run_sandboxed` runs a command to its end; :func:`start_sandboxed` keeps it running with a pipe each way
(:class:`SandboxProcess`), so that the host can ask questions after the code under test has been imported and
measure the CPU time all of the sandbox's processes spend on each answer.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SCRATCH",
    "SandboxLimits",
    "SandboxProcess",
    "SandboxResult",
    "SandboxUnavailable",
    "run_sandboxed",
    "sandbox_argv",
    "start_sandboxed",
]

SCRATCH = "/scratch"  # the only writable path inside the sandbox
HOME = "/home/sandbox"  # empty and read-only: writes to ~ are denied
_UID_BASE = 200_000  # root runs each sandbox as a fresh uid from here (no passwd entry, owns nothing)
_MB = 1024 * 1024


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or util-linux's setpriv/prlimit) is missing or cannot create a sandbox here."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    Args:
        seconds: Wall-clock time; then every process of the sandbox is killed.
        memory_mb: Address space of each process (``RLIMIT_AS``), MiB.
        processes: Processes and threads of the sandbox's uid (``RLIMIT_NPROC``).
        scratch_mb: Size of the writable ``/scratch`` tmpfs and of any one written file, MiB.
    """

    seconds: float = 300.0
    memory_mb: int = 8192
    processes: int = 64
    scratch_mb: int = 256


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run left: exit status (negative: killed by that signal), its two streams (capped),
    whether the wall-clock limit killed it, and its wall time."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def sandbox_argv(
    command: Sequence[str],
    *,
    readonly: dict[str, Path],
    cwd: str,
    env: dict[str, str],
    limits: SandboxLimits,
    uid: int | None = None,
) -> list[str]:
    """The bwrap command line running ``command`` (paths as the sandbox sees them) in the sandbox.

    Args:
        readonly: Sandbox path -> host folder, bound read-only (besides the system and Python).
        cwd: Working folder inside the sandbox.
        env: The whole environment of ``command`` (besides ``HOME``, ``TMPDIR``, ``PATH``).
        uid: The unprivileged uid to drop to when running as root (``None``: not root, a user namespace).
    """
    bwrap = _tool("bwrap")
    args = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if uid is None:
        args += ["--unshare-user", "--disable-userns"]
    args += ["--new-session", "--die-with-parent", "--dev", "/dev", "--proc", "/proc"]
    made: set[str] = {"/"}
    for name in ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/", name)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
        made.add(str(host))
    # An empty /tmp first: a venv or Python that lives under the host's /tmp is bound onto it below.
    args += ["--tmpfs", "/tmp"]
    binds = {str(p): Path(p) for p in _python_folders()}
    binds.update({inside: Path(host) for inside, host in readonly.items()})
    for inside, host in sorted(binds.items()):
        if any(inside == m or inside.startswith(m.rstrip("/") + "/") for m in made if m != "/"):
            continue  # already visible through a bound parent
        args += _parents(inside, made) + ["--ro-bind", str(host), inside]
        made.add(inside)
    args += ["--remount-ro", "/tmp"]
    args += _parents(HOME, made) + ["--perms", "0555", "--dir", HOME]
    args += ["--perms", "1777", "--size", str(limits.scratch_mb * _MB), "--tmpfs", SCRATCH]
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]  # in a user namespace both would be ours to write
    args += ["--chdir", cwd, "--clearenv"]
    base = {"PATH": "/usr/bin:/bin", "HOME": HOME, "TMPDIR": SCRATCH, "LANG": "C.UTF-8"}
    for key, value in {**base, **env}.items():
        args += ["--setenv", key, value]
    args.append("--")
    if uid is not None:
        args += [_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
        args += ["--bounding-set=-all", "--inh-caps=-all", "--"]
    seconds = max(1, int(limits.seconds) + 1)
    args += [
        _tool("prlimit"),
        f"--nproc={limits.processes}",
        f"--as={limits.memory_mb * _MB}",
        f"--cpu={seconds}",
        f"--fsize={limits.scratch_mb * _MB}",
        "--core=0",
        "--",
    ]
    return args + list(command)


def run_sandboxed(
    command: Sequence[str],
    *,
    readonly: dict[str, Path],
    cwd: str,
    env: dict[str, str] | None = None,
    limits: SandboxLimits = SandboxLimits(),
) -> SandboxResult:
    """Run ``command`` in a fresh sandbox (see the module docstring) and wait for it or for the time limit.

    Raises:
        SandboxUnavailable: naming what is missing or what bwrap said, when no sandbox can be made.
    """
    argv = _checked_argv(command, readonly, cwd, env or {}, limits)
    with tempfile.TemporaryDirectory(prefix="rpztune-sandbox-") as tmp:
        # Files, not pipes: what the code prints is capped by RLIMIT_FSIZE, never held in our memory.
        out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
        with out_path.open("wb") as out, err_path.open("wb") as err:
            start = time.monotonic()
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
            timed_out = False
            try:
                returncode = process.wait(timeout=limits.seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                # bwrap is the parent of the sandbox's PID 1 (--die-with-parent): killing it ends them all.
                os.killpg(process.pid, signal.SIGKILL)
                returncode = process.wait()
            seconds = time.monotonic() - start
        return SandboxResult(returncode, _read(out_path), _read(err_path), timed_out, seconds)


def _checked_argv(
    command: Sequence[str], readonly: dict[str, Path], cwd: str, env: dict[str, str], limits: SandboxLimits
) -> list[str]:
    """The bwrap command line for ``command`` (a fresh uid as root), once a sandbox is known to start."""
    uid = _fresh_uid() if os.geteuid() == 0 else None
    argv = sandbox_argv(command, readonly=readonly, cwd=cwd, env=env, limits=limits, uid=uid)
    _preflight(readonly, limits, uid)
    return argv


def _read(path: Path, limit: int = 4 * _MB) -> str:
    with path.open("rb") as file:
        return file.read(limit).decode(errors="replace")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = "bubblewrap" if name == "bwrap" else "util-linux"
        raise SandboxUnavailable(
            f"validate runs the zip's code in a sandbox and needs {name}, which is not installed "
            f"(apt-get install {package}; scripts/ensure-bubblewrap.sh does it)"
        )
    return path


def _python_folders() -> list[str]:
    """The folders this interpreter and its packages live in (the venv and the installation behind it)."""
    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    folders.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    return sorted(f for f in folders if Path(f).is_dir() and f != "/" and not f.startswith("/usr/"))


def _parents(path: str, made: set[str]) -> list[str]:
    """``--dir`` arguments for the missing parents of ``path``, mode 0755 (bwrap's default is 0700)."""
    args = []
    for parent in reversed(Path(path).parents):
        if str(parent) not in made:
            args += ["--perms", "0755", "--dir", str(parent)]
            made.add(str(parent))
    return args


def _fresh_uid() -> int:
    """A uid nobody uses, so that RLIMIT_NPROC counts this sandbox's processes alone."""
    used = {p.pw_uid for p in pwd.getpwall()}
    running = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            running.add(int(status.read_text().split("\nUid:\t")[1].split("\t")[1]))
        except (OSError, IndexError, ValueError):
            continue
    uid = _UID_BASE + os.getpid() % 100_000
    while uid in used or uid in running:
        uid += 1
    return uid


_WORKS: set[tuple] = set()


def _preflight(readonly: dict[str, Path], limits: SandboxLimits, uid: int | None) -> None:
    """Run ``true`` in the same sandbox once per process, so that a sandbox that cannot be made is an error
    naming bwrap's reason, not a failed check of the zip."""
    key = (tuple(sorted(readonly)), uid is None)
    if key in _WORKS:
        return
    argv = sandbox_argv(["true"], readonly=readonly, cwd="/", env={}, limits=limits, uid=uid)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap could not start a sandbox: {exc}") from exc
    if result.returncode != 0:
        said = " | ".join(result.stderr.strip().splitlines()[-2:]) or f"exit code {result.returncode}"
        raise SandboxUnavailable(
            f"bubblewrap cannot create a sandbox here ({said}); validate needs user namespaces or root"
        )
    _WORKS.add(key)


class SandboxProcess:
    """A command running in a sandbox (see :func:`start_sandboxed`): its stdin and stdout are pipes to the
    host, its stderr a file capped by ``RLIMIT_FSIZE``; every process of the sandbox ends with :meth:`close`.

    Everything the sandboxed code writes is untrusted: :meth:`exchange` returns only bytes that follow a
    marker the host chose for that request, and :meth:`cpu_seconds` reads the kernel's accounting of the
    sandbox's processes, never anything they say.
    """

    def __init__(self, argv: list[str], limits: SandboxLimits, tmp: tempfile.TemporaryDirectory) -> None:
        self.limits = limits
        self._tmp = tmp
        self._err_path = Path(tmp.name, "stderr")
        with self._err_path.open("wb") as err:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
        self.started = time.monotonic()
        self.deadline = self.started + limits.seconds
        self.timed_out = False
        self.output_closed = False

    def exchange(self, request: bytes, marker: bytes, size_of: Callable[[bytes], int | None]) -> bytes | None:
        """Send ``request`` on stdin; return the reply that follows ``marker`` on stdout, or ``None`` when the
        process ends, stops reading or answering, or the time limit passes first (then it is killed).

        Args:
            size_of: Given the bytes after the marker so far, how many make the whole reply (``None``: not
                known yet). Bytes before the marker are discarded unread.
        """
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None or self.process.poll() is not None:
            return None
        pending, found, buffer = memoryview(request), False, bytearray()
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.kill(timed_out=True)
                return None
            writers = [stdin] if pending else []
            try:
                readable, writable, _ = select.select([stdout], writers, [], min(left, 1.0))
            except (OSError, ValueError):
                return None
            if writable:
                try:
                    pending = pending[os.write(stdin.fileno(), pending[: 1 << 16]) :]
                except (BrokenPipeError, OSError):
                    self.output_closed = True
                    return None
            if readable:
                chunk = os.read(stdout.fileno(), 1 << 20)
                if not chunk:
                    self.output_closed = True  # it closed its stdout: it is ending
                    return None
                buffer += chunk
                if not found:
                    at = buffer.find(marker)
                    if at < 0:
                        del buffer[: max(0, len(buffer) - len(marker))]  # junk before the marker
                        continue
                    found = True
                    del buffer[: at + len(marker)]
                size = size_of(bytes(buffer[:65536]))
                if size is not None and len(buffer) >= size:
                    return bytes(buffer[:size])
                if size is not None and size > 1 << 31:
                    return None
            elif self.process.poll() is not None and not pending:
                return None

    def running(self) -> bool:
        """Whether the process still runs. After it closed its pipes, waits for its exit up to the time limit:
        the pipe's end can reach the host before the kernel has reaped the sandbox."""
        if self.output_closed and not self.timed_out:
            try:
                self.process.wait(timeout=max(0.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of every process of this sandbox, counting the reaped children of each (the
        kernel's figures from ``/proc/PID/stat``)."""
        children: dict[int, list[int]] = {}
        times: dict[int, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(pid)
            times[pid] = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
        total, todo = 0.0, [self.process.pid]
        while todo:
            pid = todo.pop()
            total += times.get(pid, 0.0)
            todo += children.get(pid, [])
        return total

    def stderr_tail(self, lines: int = 3) -> str:
        return " | ".join(_read(self._err_path).strip().splitlines()[-lines:])

    def kill(self, *, timed_out: bool = False) -> None:
        self.timed_out = self.timed_out or timed_out
        if self.process.poll() is None:
            # bwrap is the parent of the sandbox's PID 1 (--die-with-parent): killing it ends them all.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def close(self, grace: float = 5.0) -> int:
        """Close stdin, give the process ``grace`` seconds to end, then kill the sandbox; its exit status."""
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=max(0.1, min(grace, self.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            self.kill()
        code = self.process.returncode
        return code

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._tmp.cleanup()


def start_sandboxed(
    command: Sequence[str],
    *,
    readonly: dict[str, Path],
    cwd: str,
    env: dict[str, str] | None = None,
    limits: SandboxLimits = SandboxLimits(),
) -> SandboxProcess:
    """Start ``command`` in a fresh sandbox (see the module docstring) with pipes to and from it; use it as a
    context manager, which kills every process of the sandbox on leaving.

    Raises:
        SandboxUnavailable: naming what is missing or what bwrap said, when no sandbox can be made.
    """
    argv = _checked_argv(command, readonly, cwd, env or {}, limits)
    return SandboxProcess(argv, limits, tempfile.TemporaryDirectory(prefix="rpztune-sandbox-"))
