"""The host's half of ``rpztune validate``'s sandboxed checks: ask for raw outputs on inputs the host chose,
then judge them here (see ``validate.py`` and ``sandbox_checks.py`` for the protocol).

Every request carries a fresh random nonce and the host reads only the reply after that nonce's marker, so
nothing the zip's code wrote before it was asked counts. A reply is numbers only: its arrays are checked for
dtype and shape before they are read, and everything else in it (an error text, the audit hook's notes) can
only fail a check, never pass one. CPU times are the kernel's accounting of the sandbox's processes around
each request.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.delivery.sandbox import SCRATCH, SandboxProcess, start_sandboxed

if TYPE_CHECKING:
    from search.delivery.judge_data import JudgingData
    from search.delivery.validate import Check, Limits

__all__ = ["judge_in_sandbox"]

_DTYPES = {"<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1", "<u2", "<u4", "<u8"}
_SANDBOX_CHECK = "sandbox: no network, no writes outside the scratch folder, no processes"
_RANDOM_MYNET = 64  # random tensors mixed into MyNet's labelled images
_RANDOM_FINETUNE = 8


@dataclass
class _Reply:
    error: str | None
    arrays: dict[str, np.ndarray]
    info: dict
    cpu_s: float


@dataclass
class _Session:
    process: SandboxProcess
    limits: Limits
    dead: str | None = None
    attempts: list[str] = field(default_factory=list)
    waiting_for: str = ""

    def ask(self, what: str, op: str, args: dict | None = None, arrays: dict | None = None) -> _Reply | str:
        """The reply to one request, or why there is none (then the session is over)."""
        if self.dead:
            return f"not answered: {self.dead}"
        self.waiting_for = what
        nonce = secrets.token_hex(16)
        arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
        header = {
            "nonce": nonce,
            "op": op,
            "args": args or {},
            "arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()],
        }
        request = json.dumps(header).encode() + b"\n" + b"".join(v.tobytes() for v in arrays.values())
        before = self.process.cpu_seconds()
        raw = self.process.exchange(request, b"\nRPZ-REPLY " + nonce.encode() + b"\n", _reply_size)
        cpu = self.process.cpu_seconds() - before
        if raw is None:
            self.dead = self._how_it_ended(what)
            return f"no answer: {self.dead}"
        try:
            reply = _parse(raw, cpu)
        except (ValueError, TypeError, KeyError) as exc:
            return f"an unreadable answer ({exc})"
        self.attempts += [str(a) for a in reply.info.get("attempts", [])][:100]
        if reply.error is not None:
            reply.error = str(reply.error)[:1500]
        return reply

    def _how_it_ended(self, what: str) -> str:
        process = self.process
        if process.timed_out or process.running():
            process.kill(timed_out=True)
            return f"killed at the time limit of {self.limits.sandbox.seconds:g} s while waiting for {what!r}"
        code = process.process.returncode
        number = -code if code < 0 else code - 128 if code > 128 else 0
        why = {
            signal.SIGXCPU: f"the CPU time limit ({self.limits.sandbox.seconds:g} s)",
            signal.SIGXFSZ: "the file size limit",
            signal.SIGKILL: "SIGKILL (out of memory?)",
        }.get(number)
        if why is None:
            why = signal.Signals(number).name if number in signal.valid_signals() else f"exit code {code}"
        tail = process.stderr_tail()
        ended = f"the sandboxed process ended ({why}) before answering {what!r}"
        return ended + (f": {tail}" if tail else "")


def _reply_size(buffer: bytes) -> int | None:
    end = buffer.find(b"\n")
    if end < 0:
        return None if len(buffer) < 65536 else len(buffer)
    try:
        header = json.loads(buffer[:end])
        total = sum(_nbytes(dtype, shape) for _, dtype, shape in header["arrays"])
    except (ValueError, TypeError, KeyError):
        return end + 1  # unreadable: _parse says so
    return end + 1 + total


def _nbytes(dtype: str, shape: list) -> int:
    if dtype not in _DTYPES or not all(isinstance(n, int) and 0 <= n < 1 << 31 for n in shape):
        raise ValueError(f"array of dtype {dtype!r} shape {shape!r}")
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _parse(raw: bytes, cpu: float) -> _Reply:
    end = raw.index(b"\n")
    header = json.loads(raw[:end])
    if not isinstance(header, dict) or not isinstance(header.get("info", {}), dict):
        raise ValueError("not a reply header")
    arrays, at = {}, end + 1
    for name, dtype, shape in header["arrays"]:
        size = _nbytes(dtype, shape)
        arrays[str(name)] = np.frombuffer(raw[at : at + size], dtype=dtype).reshape(shape)
        at += size
    return _Reply(header.get("error"), arrays, header.get("info", {}), cpu)


def judge_in_sandbox(
    runner: Path, folder: Path, trusted: list[str], limits: Limits, data: JudgingData, seed: int
) -> list[Check]:
    """Start the sandboxed half, ask it everything, judge each answer; one :class:`Check` per question."""
    from search.delivery.validate import Check

    threads = str(limits.threads)
    process = start_sandboxed(
        [sys.executable, "-I", "-B", "/checker/check.py", threads, SCRATCH, ",".join(trusted)],
        readonly={"/submission": folder, "/checker": runner},
        cwd="/submission",
        env={v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        | {"MPLCONFIGDIR": SCRATCH, "XDG_CACHE_HOME": SCRATCH, "TORCH_HOME": f"{SCRATCH}/torch"},
        limits=limits.sandbox,
    )
    rng = np.random.default_rng(seed)
    checks: list[Check] = []
    with process:
        session = _Session(process, limits)
        checks += _imports(session, limits)
        checks += _numpy(session, rng)
        checks += _mynet(session, rng, data, limits)
        checks += _finetune(session, rng, data, limits)
        if not session.dead:
            process.close()  # stdin closed: the checker's loop ends; then every process of it is killed
        timed_out = process.timed_out
    tried = list(dict.fromkeys(session.attempts))
    checks.append(
        Check(
            _SANDBOX_CHECK,
            False if tried else None,
            f"the zip's code tried ({len(tried)}): " + "; ".join(tried[:10])
            if tried
            else "nothing of the kind reported by the process (its own account, not evidence: the kernel "
            "confines it either way)",
        )
    )
    if timed_out:
        checks.append(Check("time limit", False, session.dead or "killed at the time limit"))
    chosen = f"chosen by the host with seed {seed}; the labels stayed in the host"
    checks.append(Check("inputs", None, chosen))
    return checks


def _failed(name: str, reply: _Reply | str, attempts: list[str] | None = None) -> Check:
    from search.delivery.validate import Check

    why = reply if isinstance(reply, str) else str(reply.error)
    if attempts:
        why = f"{'; '.join(dict.fromkeys(attempts))[:1500]}; then: {why}"
    return Check(name, False, why)


def _imports(session: _Session, limits: Limits) -> list[Check]:
    from search.delivery.validate import Check

    names = ("numpy_nn.py imports", "pytorch_cnn.py imports")
    reply = session.ask("the imports of numpy_nn.py and pytorch_cnn.py", "hello")
    if isinstance(reply, str):
        return [_failed(name, reply) for name in names]
    checks = []
    imports = reply.info.get("imports", {})
    for name in names:
        said = imports.get(name.split()[0], {}) if isinstance(imports, dict) else {}
        said = said if isinstance(said, dict) else {}
        attempts = [str(a) for a in said.get("attempts") or []]
        session.attempts += attempts
        error = said.get("error")
        if error and "MemoryError" in str(error):
            error = f"{error} (limit {limits.sandbox.memory_mb} MiB of address space per process)"
        if error or attempts:
            checks.append(_failed(name, str(error or "imported"), attempts))
        else:
            checks.append(Check(name, None, "no error reported; the answers below are what counts"))
    return checks


def _numpy(session: _Session, rng: np.random.Generator) -> list[Check]:
    """The lab's layers on arrays drawn here; the expected values computed here."""
    from search.delivery.validate import Check

    n, fan_in, fan_out = int(rng.integers(2, 6)), int(rng.integers(2, 6)), int(rng.integers(2, 6))
    a = {
        "x": rng.normal(size=(n, fan_in)),
        "W": rng.normal(size=(fan_in, fan_out)),
        "b": rng.normal(size=(1, fan_out)),
        "dout": rng.normal(size=(n, fan_out)),
        "dx": rng.normal(size=(n, fan_in)),
        "x4": rng.normal(size=(2, 3, 4, 5)),
        "y": rng.normal(size=(n * 7,)),
        "g": rng.normal(size=(n * 7,)),
    }
    sig = 1 / (1 + np.exp(-a["x"]))
    expected = {
        "Linear": {
            "linear_forward": a["x"] @ a["W"] + a["b"],
            "linear_backward": a["dout"] @ a["W"].T,
            "linear_dW": a["x"][:, :, None] * a["dout"][:, None, :],
            "linear_db": a["dout"][:, None, :],
        },
        "ReLU": {
            "relu_forward": np.maximum(a["x"], 0),
            "relu_backward": a["dx"] * (a["x"] > 0),
            "relu_forward4": np.maximum(a["x4"], 0),
        },
        "Sigmoid": {"sigmoid_forward": sig, "sigmoid_backward": a["dx"] * sig * (1 - sig)},
        "SE": {"se_forward": (a["y"] - a["g"]) ** 2, "se_backward": 2 * (a["y"] - a["g"])},
    }
    names = {
        "Linear": "numpy_nn.Linear on host-drawn inputs (forward, backward, dL_wrt_W, dL_wrt_b)",
        "ReLU": "numpy_nn.ReLU on host-drawn inputs (forward, backward)",
        "Sigmoid": "numpy_nn.Sigmoid on host-drawn inputs (forward, backward)",
        "SE": "numpy_nn.SE on host-drawn inputs (forward, backward)",
    }
    reply = session.ask("the numpy layers", "numpy", arrays=a)
    if isinstance(reply, str) or reply.error:
        return [_failed(name, reply) for name in names.values()]
    checks = []
    for layer, wanted in expected.items():
        problem = reply.info.get(layer)
        for key, value in wanted.items():
            if problem:
                break
            got = reply.arrays.get(key)
            if got is None:
                problem = f"no {key} returned"
            elif got.shape != value.shape:
                problem = f"{key}: shape {got.shape}, expected {value.shape}"
            elif not np.allclose(got, value, rtol=1e-5, atol=1e-6):
                problem = f"{key}: wrong values (largest error {np.nanmax(np.abs(got - value)):.3g})"
        if layer == "Linear" and not problem:
            keys = reply.info.get("linear_keys")
            if keys != [["W", "b"], ["W", "b"]]:
                problem = f"params()/grads() keys {keys}, not W, b"
        checks.append(Check(names[layer], not problem, str(problem) if problem else "ok"))
    return checks


def _outputs(
    session: _Session, net: str, weights: str, x: np.ndarray, classes: int, log_probs: bool
) -> tuple[Check, Check, _Reply | None]:
    """The net with ``weights`` on ``x``: its outputs (timed), then ``classify``; each judged."""
    from search.delivery.validate import Check

    n = len(x)
    shape = f"[{n}, {classes}] {'log-probabilities' if log_probs else 'outputs'}"
    name = f"{net} with {weights} on {n} host-chosen images: {shape}"
    cname = f"classify({net} with {weights}, {n} images): [{n}] class indices, the argmax of its outputs"
    args = {"net": net, "weights": weights}
    loaded = session.ask(f"{net}() loading {weights}", "load", args)
    if isinstance(loaded, str) or loaded.error:
        return _failed(name, loaded), _failed(cname, "not run: the network did not load"), None
    reply = session.ask(f"{net} with {weights} on {n} images", "forward", args | {"batch": 100}, {"x": x})
    if isinstance(reply, str) or reply.error:
        return _failed(name, reply), _failed(cname, "not run: no outputs"), None
    out = reply.arrays.get("out")
    problem = _judge_outputs(out, n, classes, log_probs)
    check = Check(name, not problem, problem or "ok")
    if problem:
        return check, _failed(cname, "not judged: the outputs are wrong"), None
    answer = session.ask(f"classify({net})", "classify", args, {"x": x})
    if isinstance(answer, str) or answer.error:
        return check, _failed(cname, answer), reply
    predicted = answer.arrays.get("classes")
    cproblem = _judge_classify(predicted, out, classes)
    return check, Check(cname, not cproblem, cproblem or "ok"), reply


def _judge_outputs(out: np.ndarray | None, n: int, classes: int, log_probs: bool) -> str:
    if out is None:
        return "no outputs returned"
    if list(out.shape) != [n, classes]:
        return f"output {list(out.shape)}, expected [{n}, {classes}]"
    if out.dtype.kind != "f" or not np.isfinite(out).all():
        return f"outputs not all finite numbers ({out.dtype})"
    if log_probs:
        sums = np.exp(out.astype(np.float64)).sum(axis=1)
        if not np.allclose(sums, 1, atol=1e-3):
            return f"not log-probabilities: exp(output) rows sum to {sums.min():.4f}..{sums.max():.4f}"
    return ""


def _judge_classify(predicted: np.ndarray | None, out: np.ndarray, classes: int) -> str:
    n = len(out)
    if predicted is None or list(predicted.shape) != [n]:
        return f"classify returned {None if predicted is None else list(predicted.shape)}, not [{n}]"
    if predicted.dtype.kind not in "iu" or not ((predicted >= 0) & (predicted < classes)).all():
        return f"classify returned {predicted.dtype} values outside 0..{classes - 1}"
    chosen = out[np.arange(n), predicted.astype(np.int64)]
    disagree = int((chosen < out.max(axis=1) - 1e-5).sum())  # ties may go either way
    return f"classify disagrees with the argmax of the outputs on {disagree} of {n} images" * bool(disagree)


def _accuracy(
    name: str, reply: _Reply | None, labelled: int, order: np.ndarray, y: np.ndarray, threshold: float
) -> Check:
    from search.delivery.validate import Check

    if reply is None:
        return Check(name, False, "no outputs to judge")
    predicted = reply.arrays["out"].argmax(axis=1)[np.argsort(order)][:labelled]
    accuracy = float((predicted == y).mean())
    ok = accuracy >= threshold
    detail = f"{accuracy:.1%} (at least {threshold:.0%})" + ("" if ok else ": below the threshold")
    return Check(name, ok, detail)


def _timing(name: str, reply: _Reply | None, n: int, limit: float | None) -> Check:
    from search.delivery.validate import Check, _limit, _within

    if reply is None:
        return Check(name, False, "no outputs, no time")
    ms = 1000 * reply.cpu_s * 100 / n
    return Check(
        name,
        _within(ms, limit),
        f"{ms:.1f} ms of CPU per 100 images (measured by the host around {n} images, the kernel's "
        f"accounting of every sandboxed process; 1 thread asked){_limit(limit, 'ms')}",
    )


def _mixed(rng: np.random.Generator, images: np.ndarray, n_random: int) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images and ``n_random`` uniform random ones, shuffled; the permutation used."""
    noise = rng.random((n_random, *images.shape[1:]), dtype=np.float32)
    both = np.concatenate([images.astype(np.float32), noise])
    order = rng.permutation(len(both))
    return both[order], order


def _mynet(session: _Session, rng: np.random.Generator, data: JudgingData, limits: Limits) -> list[Check]:
    from search.delivery.validate import MYNET_MIN_ACCURACY, Check

    name = "MyNet() on torch.rand(64, 1, 28, 28, requires_grad=True): [64, 10] log-probabilities with grad"
    checks = []
    built = session.ask("MyNet()", "load", {"net": "MyNet"})
    if isinstance(built, str) or built.error:
        checks.append(_failed(name, built))
    else:
        x = rng.random((64, 1, 28, 28), dtype=np.float32)
        args = {"net": "MyNet", "grad": True}
        reply = session.ask("MyNet() on 64 random images", "forward", args, {"x": x})
        if isinstance(reply, str) or reply.error:
            checks.append(_failed(name, reply))
        else:
            problem = _judge_outputs(reply.arrays.get("out"), 64, 10, True)
            if not problem and not reply.info.get("requires_grad"):
                problem = "the output does not require grad"
            checks.append(Check(name, not problem, problem or "ok"))
    x, order = _mixed(rng, data.fashion_x, _RANDOM_MYNET)
    outputs, classify, reply = _outputs(session, "MyNet", "model.pt", x, 10, True)
    labelled = len(data.fashion_y)
    accuracy = f"MyNet accuracy on {data.fashion_source}"
    return checks + [
        outputs,
        classify,
        _accuracy(accuracy, reply, labelled, order, data.fashion_y, MYNET_MIN_ACCURACY),
        _timing("time: MyNet on 100 images", reply, len(x), limits.mynet_ms),
    ]


def _finetune(session: _Session, rng: np.random.Generator, data: JudgingData, limits: Limits) -> list[Check]:
    from search.delivery.validate import FINETUNE_MIN_ACCURACY, Check

    name = "FinetuneNet() builds with the network blocked (no download)"
    built = session.ask("FinetuneNet()", "load", {"net": "FinetuneNet"})
    checks = [_failed(name, built) if isinstance(built, str) or built.error else Check(name, True, "ok")]
    photos = data.photos_x if data.photos_x is not None else np.zeros((0, 3, 96, 96), np.float32)
    x, order = _mixed(rng, photos, max(_RANDOM_FINETUNE, 100 - len(photos)))
    outputs, classify, reply = _outputs(session, "FinetuneNet", "finetuned.pt", x, 2, False)
    checks += [outputs, classify]
    accuracy = "FinetuneNet accuracy on photos"
    if data.photos_y is None:
        checks.append(
            Check(accuracy, None, f"unchecked ({data.photos_source}): give --data with dogs_and_cats/", True)
        )
    else:
        labelled = len(data.photos_y)
        checks.append(
            _accuracy(f"{accuracy}: {data.photos_source}", reply, labelled, order, data.photos_y,
                      FINETUNE_MIN_ACCURACY)
        )  # fmt: skip
    checks.append(_timing("time: FinetuneNet on 100 images", reply, len(x), limits.finetune_ms))
    return checks
