"""The lab's checks of an unpacked submission, run as a script in the sandbox
(``search/delivery/sandbox.py``).

``search/delivery/validate.py`` runs this file with ``python -I CHECKER THREADS SCRATCH MODULES`` in the
unpacked folder, inside the sandbox. It first imports the trusted packages the zip needs (``MODULES``, from
the venv, before the zip's folder is on ``sys.path``), then installs an audit hook that reports every network
use, write outside ``SCRATCH`` and process start: the sandbox blocks these, the hook says what was tried.
Records are JSON lines on the original stdout (the zip's own prints go to stderr): ``{"name", "ok",
"detail", ...}`` per check, ``{"start": name}`` before each, ``{"attempt": what}`` per attempt. It needs
only the standard library to start; each check imports what it tests, so a missing package fails that
check alone. rpztune's packages are unimportable (the evaluator has none).
"""

import json
import os
import sys
import time
import traceback

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
SCRATCH = sys.argv[2] if len(sys.argv) > 2 else "/scratch"
_TRUSTED = [m for m in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if m]
_RPZTUNE_PACKAGES = {"search", "spaces", "objectives", "nn_numpy", "models", "reports"}
_RECORDS = os.dup(1)
os.dup2(2, 1)  # the zip's prints go to stderr; records alone on the original stdout
ATTEMPTS: list[str] = []


def _record(line):
    os.write(_RECORDS, (json.dumps(line) + "\n").encode())


for _module in _TRUSTED:  # their import-time housekeeping (ctypes' find_library runs ldconfig) is no attempt
    try:
        __import__(_module)
    except Exception:
        pass  # the check that needs it says so

_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.utime"}
_NETWORK = {
    "socket.connect": "connect to",
    "socket.sendto": "send to",
    "socket.sendmsg": "send to",
    "socket.bind": "bind",
    "socket.getaddrinfo": "look up",
    "socket.gethostbyname": "look up",
    "socket.gethostbyaddr": "look up",
}
_PROCESSES = {
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "pty.spawn",
}
_ON_SOCKET = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.bind"}  # args: (socket, address)


def _outside(path):
    if isinstance(path, int):
        return None  # an open file descriptor
    real = os.path.realpath(os.fsdecode(path))
    return None if real == SCRATCH or real.startswith(SCRATCH + "/") else real


def _attempt(event, args):
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE)
        where = _outside(path) if writes else None
        return where and f"tried to write outside the scratch folder: open({where!r}, {mode or flags!r})"
    if event in _PATH_EVENTS:
        where = _outside(args[0])
        return where and f"tried to write outside the scratch folder: {event}({where!r})"
    if event in ("os.rename", "os.link", "os.symlink"):
        where = _outside(args[1]) or (event == "os.rename" and _outside(args[0]))
        return where and f"tried to write outside the scratch folder: {event}({where!r})"
    if event in _NETWORK:
        target = args[1] if event in _ON_SOCKET else args[:2]
        return f"tried to use the network: {_NETWORK[event]} {target!r}"
    if event in _PROCESSES:
        shown = args[1] if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn") else args
        shown = os.fsdecode(args[0]) if event == "os.system" else shown
        return f"tried to start a process: {event}{'' if not shown else ' ' + repr(shown)[:200]}"
    return None


def _make_hook():
    # State in a closure, not a module global the zip's code could reach through __main__.
    busy = []
    write, record, dumps, attempts, attempt = os.write, _RECORDS, json.dumps, ATTEMPTS, _attempt

    def hook(event, args):
        if busy:
            return
        busy.append(1)
        try:
            what = attempt(event, args)
            if what:
                attempts.append(what)
                if len(attempts) <= 100:
                    write(record, (dumps({"attempt": what}) + "\n").encode())
        except Exception:
            pass  # reporting never breaks the code under test; the sandbox still blocks
        finally:
            busy.clear()

    return hook


class _NoRpztune:
    def find_spec(self, name, *args):
        if name.split(".")[0] in _RPZTUNE_PACKAGES:
            raise ImportError(f"blocked: {name} (the evaluator has no rpztune)")


sys.addaudithook(_make_hook())
sys.meta_path.insert(0, _NoRpztune())
sys.path.insert(0, os.getcwd())


class _Skipped(Exception):
    pass


class _State(dict):
    def __missing__(self, key):
        raise _Skipped(f"not run: the check providing {key} failed")


STATE = _State()


def check(name):
    """Run the decorated function now as the check ``name``; a returned dict adds fields to its line."""

    def run(function):
        _record({"start": name})
        before = len(ATTEMPTS)
        line = {"name": name, "ok": True, "detail": "ok"}
        try:
            extra = function()
            if isinstance(extra, dict):
                line.update(extra)
        except _Skipped as exc:
            line.update(ok=False, detail=str(exc))
        except MemoryError as exc:
            line.update(ok=False, detail=f"MemoryError: over the sandbox's memory limit {exc}".rstrip())
        except (Exception, SystemExit) as exc:
            line.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
            line["traceback"] = traceback.format_exc(limit=-3)
        if len(ATTEMPTS) > before:
            tried = "; ".join(dict.fromkeys(ATTEMPTS[before:]))
            line.update(ok=False, detail=f"{tried[:1500]}; then: {line['detail']}")
        _record(line)
        return function

    return run


def _close(actual, expected, what):
    import numpy as np

    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, expected {expected.shape}")
    np.testing.assert_array_almost_equal(expected, actual, decimal=6, err_msg=f"{what}: wrong values")


@check("numpy_nn.py imports")
def _():
    import numpy_nn

    STATE["numpy_nn"] = numpy_nn


@check("numpy_nn.Linear on the lab's example (forward, backward, dL_wrt_W, dL_wrt_b)")
def _():
    import numpy as np

    layer = STATE["numpy_nn"].Linear(3, 2)
    layer.W = np.array([[1.0, 0.6], [0.2, -0.2], [-0.6, -1.0]])
    layer.b = np.array([[-0.5, 0.5]])
    x = np.array([[-2.0, -1.2, -0.4], [0.4, 1.2, 2.0]])
    _close(layer.forward(x), [[-2.5, -0.06], [-1.06, -1.5]], "forward")
    grad = layer.backward(np.array([[1.0, 1.33333333], [1.66666667, 2.0]]))
    _close(grad, [[1.8, -0.06666667, -1.93333333], [2.86666667, -0.06666667, -3.0]], "backward")
    dw = [
        [[-2.0, -2.66666667], [-1.2, -1.6], [-0.4, -0.53333333]],
        [[0.66666667, 0.8], [2.0, 2.4], [3.33333333, 4.0]],
    ]
    _close(layer.dL_wrt_W, dw, "dL_wrt_W")
    _close(layer.dL_wrt_b, [[[1.0, 1.33333333]], [[1.66666667, 2.0]]], "dL_wrt_b")
    if set(layer.params()) != {"W", "b"} or set(layer.grads()) != {"W", "b"}:
        raise AssertionError(f"params()/grads() keys {set(layer.params())}/{set(layer.grads())}, not W, b")


@check("numpy_nn.ReLU on the lab's example (forward, backward)")
def _():
    import numpy as np

    layer = STATE["numpy_nn"].ReLU()
    x = np.array([[-2.0, -1.2, -0.4], [0.4, 1.2, 2.0]])
    _close(layer.forward(x), [[0, 0, 0], [0.4, 1.2, 2.0]], "forward")
    _close(
        layer.backward(np.array([[-3.0, 1.2, -0.5], [-0.4, 2.2, 3.0]])),
        [[0, 0, 0], [-0.4, 2.2, 3.0]],
        "backward",
    )
    _close(layer.forward(np.ones((2, 3, 4, 5))), np.ones((2, 3, 4, 5)), "forward of a 4-D input")


@check("numpy_nn.Sigmoid on the lab's example (forward, backward)")
def _():
    import numpy as np

    layer = STATE["numpy_nn"].Sigmoid()
    x = np.array([[-2.0, -1.2, -0.4], [0.4, 1.2, 2.0]])
    _close(layer.forward(x), [[0.119203, 0.231475, 0.401312], [0.598688, 0.768525, 0.880797]], "forward")
    grad = layer.backward(np.array([[-3.0, 1.2, -0.5], [-0.4, 2.2, 3.0]]))
    _close(grad, [[-0.314981, 0.213473, -0.12013], [-0.096104, 0.391368, 0.314981]], "backward")


@check("numpy_nn.SE on the lab's example (forward, backward)")
def _():
    import numpy as np

    layer = STATE["numpy_nn"].SE()
    y = np.linspace(-2, 2, 1001)
    _close(layer.forward(y, 0 * y), y**2, "forward")
    y = np.linspace(-5, 5, 9)
    layer.forward(y, 0.5 * y)
    _close(layer.backward(), [-5.0, -3.75, -2.5, -1.25, 0.0, 1.25, 2.5, 3.75, 5.0], "backward")


@check("pytorch_cnn.py imports")
def _():
    import torch

    torch.set_num_threads(THREADS)
    import pytorch_cnn

    STATE["torch"], STATE["pytorch_cnn"] = torch, pytorch_cnn
    missing = [n for n in ("MyNet", "FinetuneNet", "classify") if not hasattr(pytorch_cnn, n)]
    if missing:
        raise AssertionError(f"pytorch_cnn.py defines no {', '.join(missing)}")


@check("MyNet() on torch.rand(64, 1, 28, 28, requires_grad=True): [64, 10] log-probabilities with grad")
def _():
    torch = STATE["torch"]
    model = STATE["pytorch_cnn"].MyNet()
    out = model(torch.rand(64, 1, 28, 28, requires_grad=True))
    if not torch.is_tensor(out) or list(out.shape) != [64, 10]:
        raise AssertionError(f"output {getattr(out, 'shape', type(out).__name__)}, expected [64, 10]")
    if not out.requires_grad:
        raise AssertionError("the output does not require grad")
    sums = out.detach().exp().sum(dim=1)
    if not torch.allclose(sums, torch.ones(64), atol=1e-4):
        raise AssertionError(
            f"not log-probabilities: exp(output) rows sum to {sums.min():.4f}..{sums.max():.4f}"
        )
    STATE["mynet"] = model


@check("model.pt loads into MyNet() (strict, weights_only)")
def _():
    torch = STATE["torch"]
    model = STATE["pytorch_cnn"].MyNet()
    model.load_state_dict(torch.load("model.pt", map_location="cpu", weights_only=True))
    model.eval()
    STATE["mynet_trained"] = model
    return {"params": sum(p.numel() for p in model.parameters())}


@check("classify(MyNet with model.pt, 64 images): [64] class indices in 0..9")
def _():
    torch = STATE["torch"]
    model = STATE["mynet_trained"]
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    predicted = STATE["pytorch_cnn"].classify(model, x)
    if not torch.is_tensor(predicted) or list(predicted.shape) != [64]:
        raise AssertionError(
            f"classify returned {getattr(predicted, 'shape', type(predicted).__name__)}, not [64]"
        )
    if predicted.is_floating_point() or not bool(((predicted >= 0) & (predicted < 10)).all()):
        raise AssertionError(f"classify returned {predicted.dtype} values {predicted.unique().tolist()}")
    with torch.no_grad():
        expected = model(x).argmax(dim=1)
    if not torch.equal(predicted, expected):
        raise AssertionError("classify disagrees with the argmax of MyNet's output")


@check("FinetuneNet() builds with the network blocked (no download)")
def _():
    STATE["finetune"] = STATE["pytorch_cnn"].FinetuneNet()


@check("finetuned.pt loads into FinetuneNet() (strict, weights_only); output [B, 2] on 96x96 images")
def _():
    torch = STATE["torch"]
    model = STATE["finetune"]
    model.load_state_dict(torch.load("finetuned.pt", map_location="cpu", weights_only=True))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(4, 3, 96, 96))
    if list(out.shape) != [4, 2]:
        raise AssertionError(f"output {list(out.shape)} for 4 images, expected [4, 2]")
    STATE["finetune_trained"] = model
    return {"params": sum(p.numel() for p in model.parameters())}


def _time_per_100(model, shape):
    torch = STATE["torch"]
    x = torch.rand(*shape)
    with torch.no_grad():
        model(x)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return {"ms": 1000 * sorted(times)[1], "threads": THREADS}


@check("time: MyNet on 100 images")
def _():
    return _time_per_100(STATE["mynet_trained"], (100, 1, 28, 28))


@check("time: FinetuneNet on 100 images")
def _():
    return _time_per_100(STATE["finetune_trained"], (100, 3, 96, 96))
