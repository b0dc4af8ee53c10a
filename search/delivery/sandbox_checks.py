"""The sandboxed half of ``rpztune validate``: imports the zip's code, then answers the host's requests with
raw outputs (``search/delivery/validate.py`` judges them; nothing this process says is a verdict).

``validate.py`` runs this file with ``python -I CHECKER THREADS SCRATCH MODULES`` in the unpacked folder,
inside the sandbox (``search/delivery/sandbox.py``). It imports the trusted packages the zip needs
(``MODULES``, from the venv, before the zip's folder is on ``sys.path``), installs an audit hook noting every
network use, write outside ``SCRATCH`` and process start (the sandbox blocks them; the notes are the process's
own account, reported but never evidence of anything), imports ``numpy_nn`` and ``pytorch_cnn``, and only
then reads requests on stdin, one at a time, until stdin closes or ``{"op": "exit"}``:

    request:  a JSON line {"nonce": HEX, "op": OP, "args": {...}, "arrays": [[name, dtype, shape], ...]}
              followed by the arrays' raw bytes (C order), in that order;
    reply:    b"\\nRPZ-REPLY " + NONCE + b"\\n", a JSON line {"error": str | null, "info": {...},
              "arrays": [[name, dtype, shape], ...]}, then the arrays' raw bytes.

The host chose the nonce after this process had imported the zip's code, and reads only what follows the
marker it carries; anything written before (by the zip's code or anyone) is discarded unread. Ops:
``hello`` (how the imports went), ``numpy`` (the layers on the host's arrays), ``load`` (build ``MyNet`` or
``FinetuneNet``, load a checkpoint), ``forward`` (the network's outputs), ``classify``. Labels never come
here. It needs only the standard library to start; rpztune's packages are unimportable (the evaluator has
none).
"""

import json
import os
import sys
import traceback

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
SCRATCH = sys.argv[2] if len(sys.argv) > 2 else "/scratch"
_TRUSTED = [m for m in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if m]
_RPZTUNE_PACKAGES = {"search", "spaces", "objectives", "nn_numpy", "models", "reports"}
_REPLIES = os.dup(1)
_REQUESTS = os.dup(0)
os.dup2(2, 1)  # the zip's prints go to stderr
_NULL = os.open(os.devnull, os.O_RDONLY)
os.dup2(_NULL, 0)  # the zip's code reads no requests through sys.stdin
ATTEMPTS: list[str] = []

for _module in _TRUSTED:  # their import-time housekeeping (ctypes' find_library runs ldconfig) is no attempt
    try:
        __import__(_module)
    except Exception:
        pass  # the request that needs it says so

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
    busy = []
    attempts, attempt = ATTEMPTS, _attempt

    def hook(event, args):
        if busy:
            return
        busy.append(1)
        try:
            what = attempt(event, args)
            if what and len(attempts) < 1000:
                attempts.append(what)
        except Exception:
            pass  # noting never breaks the code under test; the sandbox still blocks
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


def _error(exc):
    if isinstance(exc, MemoryError):
        return f"MemoryError: over the sandbox's memory limit {exc}".rstrip()
    tail = traceback.format_exc(limit=-2).strip().splitlines()[-3:-1]
    return f"{type(exc).__name__}: {exc}" + (f" [{' | '.join(s.strip() for s in tail)}]" if tail else "")


IMPORTS = {}
MODULES = {}
for _name in ("numpy_nn", "pytorch_cnn"):
    _before = len(ATTEMPTS)
    try:
        if _name == "pytorch_cnn":
            import torch

            torch.set_num_threads(THREADS)
        MODULES[_name] = __import__(_name)
        IMPORTS[f"{_name}.py"] = {"error": None}
    except (Exception, SystemExit) as _exc:
        IMPORTS[f"{_name}.py"] = {"error": _error(_exc)}
    IMPORTS[f"{_name}.py"]["attempts"] = list(dict.fromkeys(ATTEMPTS[_before:]))[:100]
_REPORTED = len(ATTEMPTS)


def _module(name):
    if name not in MODULES:
        raise RuntimeError(f"{name}.py did not import: {IMPORTS[name + '.py']['error']}")
    return MODULES[name]


def _numpy_op(args, arrays):
    """The lab's layers on the host's arrays: each layer's outputs, or its error."""
    import numpy as np

    nn = _module("numpy_nn")
    out, info = {}, {}

    def run(layer_name, body):
        try:
            body()
        except (Exception, SystemExit) as exc:
            info[layer_name] = _error(exc)

    def linear():
        layer = nn.Linear(*arrays["W"].shape)
        layer.W, layer.b = arrays["W"].copy(), arrays["b"].copy()
        out["linear_forward"] = layer.forward(arrays["x"].copy())
        out["linear_backward"] = layer.backward(arrays["dout"].copy())
        out["linear_dW"], out["linear_db"] = layer.dL_wrt_W, layer.dL_wrt_b
        info["linear_keys"] = [sorted(map(str, layer.params())), sorted(map(str, layer.grads()))]

    def relu():
        layer = nn.ReLU()
        out["relu_forward"] = layer.forward(arrays["x"].copy())
        out["relu_backward"] = layer.backward(arrays["dx"].copy())
        out["relu_forward4"] = nn.ReLU().forward(arrays["x4"].copy())

    def sigmoid():
        layer = nn.Sigmoid()
        out["sigmoid_forward"] = layer.forward(arrays["x"].copy())
        out["sigmoid_backward"] = layer.backward(arrays["dx"].copy())

    def se():
        layer = nn.SE()
        out["se_forward"] = layer.forward(arrays["y"].copy(), arrays["g"].copy())
        out["se_backward"] = layer.backward()

    for layer_name, body in (("Linear", linear), ("ReLU", relu), ("Sigmoid", sigmoid), ("SE", se)):
        run(layer_name, body)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}, info


NETS = {}


def _load_op(args, arrays):
    import torch

    net = args["net"]
    model = getattr(_module("pytorch_cnn"), net)()
    if args.get("weights"):
        model.load_state_dict(torch.load(args["weights"], map_location="cpu", weights_only=True))
        model.eval()
    NETS[net, args.get("weights")] = model
    return {}, {}


def _net(args):
    key = (args["net"], args.get("weights"))
    if key not in NETS:
        raise RuntimeError(f"{args['net']} was not built (its load failed)")
    return NETS[key]


def _forward_op(args, arrays):
    import torch

    model, x = _net(args), torch.from_numpy(arrays["x"])
    if args.get("grad"):
        out = model(x.requires_grad_(True))
        info = {"requires_grad": bool(getattr(out, "requires_grad", False))}
        return {"out": _tensor(out, "the output")}, info
    batch = int(args.get("batch", 100))
    with torch.no_grad():
        outs = [_tensor(model(x[i : i + batch]), "the output") for i in range(0, len(x), batch)]
    import numpy as np

    return {"out": np.concatenate(outs) if outs else np.zeros((0,), np.float32)}, {}


def _classify_op(args, arrays):
    import torch

    classify = _module("pytorch_cnn").classify
    predicted = classify(_net(args), torch.from_numpy(arrays["x"]))
    return {"classes": _tensor(predicted, "classify's result")}, {}


def _tensor(value, what):
    import torch

    if not torch.is_tensor(value):
        raise TypeError(f"{what} is a {type(value).__name__}, not a tensor")
    return value.detach().cpu().numpy()


def _hello_op(args, arrays):
    return {}, {"imports": IMPORTS}


_OPS = {
    "hello": _hello_op,
    "numpy": _numpy_op,
    "load": _load_op,
    "forward": _forward_op,
    "classify": _classify_op,
}


def _read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError("the request ended early")
    return data


def _serve():
    import numpy as np

    global _REPORTED
    requests = open(_REQUESTS, "rb", closefd=False)  # noqa: SIM115
    while True:
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        arrays = {}
        for name, dtype, shape in request.get("arrays", []):
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            arrays[name] = np.frombuffer(_read_exact(requests, size), dtype=dtype).reshape(shape).copy()
        if request["op"] == "exit":
            return
        outputs, info, error = {}, {}, None
        try:
            outputs, info = _OPS[request["op"]](request.get("args", {}), arrays)
        except (Exception, SystemExit) as exc:
            error = _error(exc)
        info["attempts"] = list(dict.fromkeys(ATTEMPTS[_REPORTED:]))[:100]
        _REPORTED = len(ATTEMPTS)
        blobs, described = [], []
        for name, value in outputs.items():
            value = np.ascontiguousarray(value)
            if value.dtype.kind not in "biuf":
                error = error or f"{name} has dtype {value.dtype}, not numbers"
                continue
            described.append([name, value.dtype.str, list(value.shape)])
            blobs.append(value.tobytes())
        header = json.dumps({"error": error, "info": info, "arrays": described}, default=str)
        reply = b"\nRPZ-REPLY " + request["nonce"].encode() + b"\n" + header.encode() + b"\n"
        _write(reply + b"".join(blobs))


def _write(data):
    view = memoryview(data)
    while view:
        view = view[os.write(_REPLIES, view) :]


_serve()
