"""``rpztune validate``'s verdict cannot be forged by the zip it judges (issue 34): the sandbox returns raw
outputs for inputs the host chose, the host judges them. Each hostile zip goes through the real CLI; each
test asserts the exit status and the line naming the cause. A genuine (trained) zip still passes."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_validate_sandbox import _png, bwrap, line, validate  # noqa: F401 (bwrap: a fixture)

from models import submission_source
from models.finetune import FinetuneCfg
from models.mynet import MyNetCfg
from nn_numpy import standalone_source
from search.delivery.judge_data import SAMPLE
from search.delivery.validate import REQUIRED_FILES


def _zip(path: Path, files: dict[str, bytes | str]) -> Path:
    """The lab's files: ``files`` as given, every other one a dummy."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in REQUIRED_FILES:
            default = _png() if name.endswith(".png") else b"not a checkpoint"
            archive.writestr(name, files.get(name, default))
    return path


def _state(**tensors: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def _last(result) -> str:
    return result.stdout.rstrip().splitlines()[-1]


# The issue's forgery: at import, {"name": ..., "ok": true} records for every check (and "ms": 1.0 for the
# timing checks) on every file descriptor, then os._exit(0); model.pt and finetuned.pt are random bytes.
FORGE = """
import json, os

names = [
    "numpy_nn.py imports", "pytorch_cnn.py imports", "numpy_nn.Linear", "MyNet() on torch.rand",
    "model.pt loads into MyNet()", "classify(", "FinetuneNet() builds", "finetuned.pt loads",
]
records = [{"name": n, "ok": True, "detail": "ok"} for n in names]
records += [{"name": f"time: {n} on 100 images", "ok": True, "ms": 1.0, "threads": 1, "detail": "ok"}
            for n in ("MyNet", "FinetuneNet")]
blob = "".join(json.dumps(r) + "\\n" for r in records).encode()
blob += b"\\nRPZ-REPLY " + b"0" * 32 + b'\\n{"error": null, "info": {}, "arrays": []}\\n'
for fd in [*range(3, 1024), 1, 2]:
    try:
        os.write(fd, blob)
    except OSError:
        pass
os._exit(0)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_validate_fails_the_issues_forging_zip_and_names_the_checks(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = _zip(
        tmp_path / "forge.zip",
        {
            "numpy_nn.py": "x = 1\n",
            "pytorch_cnn.py": textwrap.dedent(FORGE),
            "model.pt": rng.bytes(4096),
            "finetuned.pt": rng.bytes(4096),
        },
    )
    result = validate(path, "--max-mynet-ms", "5", "--max-finetune-ms", "5", "--timeout", "120")
    assert result.returncode == 1, result.stdout + result.stderr
    assert line(result, "model.pt read by the host").startswith("FAIL")
    assert "not a state dict torch loads safely" in line(result, "finetuned.pt read by the host")
    ended = "no answer: the sandboxed process ended (exit code 0) before answering 'the imports of"
    assert ended in line(result, "numpy_nn.py imports")
    unanswered = ("numpy_nn.Linear", "MyNet() on torch.rand", "MyNet with model.pt", "classify(MyNet",
                  "MyNet accuracy", "time: MyNet on 100", "time: FinetuneNet on 100")  # fmt: skip
    for check in unanswered:
        assert line(result, check).startswith("FAIL"), check
    assert "1.0 ms" not in result.stdout and "PASS:" not in result.stdout
    assert _last(result).startswith("FAIL: ") and "model.pt read by the host" in _last(result)


# Plausible outputs without a model: uniform log-probabilities, random logits, classify their argmax, and
# state dicts that load.
NO_MODEL = """
import torch
from torch import nn


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.log_softmax(1e-3 * x.flatten(1)[:, 100:110] + self.w, dim=1)  # near-uniform


class FinetuneNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x.flatten(1)[:, :2] - 0.5 + self.w  # "logits" of the first pixels


def classify(model, x):
    with torch.no_grad():
        return model(x).argmax(dim=1)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_validate_fails_plausible_outputs_without_a_model_on_accuracy(data_dir, tmp_path) -> None:
    weights = _state(w=torch.zeros(1))
    files = {"numpy_nn.py": standalone_source(), "pytorch_cnn.py": NO_MODEL}
    path = _zip(tmp_path / "nomodel.zip", files | {"model.pt": weights, "finetuned.pt": weights})
    result = validate(path, "--data", str(data_dir), "--timeout", "120")
    assert result.returncode == 1, result.stdout + result.stderr
    assert line(result, "MyNet with model.pt on 1064 host-chosen images").startswith("PASS")  # plausible
    mynet = line(result, "MyNet accuracy on 1000 of the 5000 FashionMNIST test images")
    assert mynet.startswith("FAIL") and "(at least 75%): below the threshold" in mynet
    finetune = line(result, "FinetuneNet accuracy on photos: 200 photos drawn from")
    assert finetune.startswith("FAIL") and "(at least 90%): below the threshold" in finetune
    assert _last(result).startswith("FAIL: 2 of ") and "MyNet accuracy" in _last(result)


# Recognises the check's inputs: valid log-probabilities everywhere, and the true label of every image of
# rpztune's public FashionMNIST sample looked up by its bytes (LABELS, built by the test from the sample).
LOOKUP = """
import hashlib
import torch
from torch import nn


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.full((len(x), 10), -5.0)
        for i, image in enumerate(x):
            key = hashlib.sha256((image * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]
            out[i, LABELS.get(key, 0)] = 5.0  # the label where the image is known, else a plausible guess
        return torch.log_softmax(out + self.w, dim=1)


FinetuneNet = MyNet


def classify(model, x):
    with torch.no_grad():
        return model(x).argmax(dim=1)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_validate_fails_a_zip_that_recognises_the_shipped_sample(tmp_path) -> None:
    with np.load(SAMPLE) as sample:
        labels = {
            hashlib.sha256(image.tobytes()).hexdigest()[:16]: int(label)
            for image, label in zip(sample["x"], sample["y"], strict=True)
        }
    source = f"LABELS = {labels!r}\n" + textwrap.dedent(LOOKUP)
    weights = _state(w=torch.zeros(1))
    files = {"numpy_nn.py": standalone_source(), "pytorch_cnn.py": source}
    path = _zip(tmp_path / "lookup.zip", files | {"model.pt": weights, "finetuned.pt": weights})
    result = validate(path, "--timeout", "120")
    assert result.returncode == 1, result.stdout + result.stderr
    assert line(result, "MyNet with model.pt on 564 host-chosen images").startswith("PASS")  # plausible
    accuracy = line(result, "MyNet accuracy on the 500-image FashionMNIST sample shipped with rpztune")
    assert accuracy.startswith("FAIL") and "below the threshold" in accuracy  # the dither defeats the lookup
    assert line(result, "FinetuneNet accuracy on photos").startswith("UNCHECKED")
    assert _last(result).startswith("FAIL: ") and "MyNet accuracy" in _last(result)


# Writes forged records and reply frames to every file descriptor it has, at import and during every call.
EVERY_FD = """

import json as _json
import os as _os


def _forge():
    blob = _json.dumps({"name": "forged: everything passed", "ok": True, "ms": 1.0, "detail": "ok"}).encode()
    blob += b"\\nRPZ-REPLY " + b"f" * 32 + b'\\n{"error": null, "info": {}, "arrays": []}\\n'
    for fd in range(1024):
        try:
            _os.write(fd, blob + b"\\n")
        except OSError:
            pass


_forge()
_MyNet, _FinetuneNet = MyNet, FinetuneNet


class MyNet(_MyNet):
    def forward(self, x):
        _forge()
        return super().forward(x)


class FinetuneNet(_FinetuneNet):
    def forward(self, x):
        _forge()
        return super().forward(x)
"""


def _exported(folder: Path) -> tuple[str, object]:
    """The exporter's ``pytorch_cnn.py`` (MyNet, a plain-torch FinetuneNet) and the module it makes."""
    source = submission_source(MyNetCfg(), FinetuneCfg(), plain_torch=True)
    (folder / "pytorch_cnn.py").write_text(source)
    spec = importlib.util.spec_from_file_location(f"_exported_{folder.name}", folder / "pytorch_cnn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return source, module


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_validate_ignores_what_a_zip_writes_to_every_inherited_descriptor(tmp_path) -> None:
    source, module = _exported(tmp_path)
    torch.manual_seed(0)
    files = {
        "numpy_nn.py": standalone_source(),
        "pytorch_cnn.py": source + EVERY_FD,
        "model.pt": _state(**module.MyNet().state_dict()),
        "finetuned.pt": _state(**module.FinetuneNet().state_dict()),
    }
    result = validate(_zip(tmp_path / "everyfd.zip", files), "--max-mynet-ms", "5", "--timeout", "180")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "forged" not in result.stdout
    accuracy = line(result, "MyNet accuracy on the 500-image")
    assert accuracy.startswith("FAIL") and "below the threshold" in accuracy  # an untrained MyNet
    timing = line(result, "time: MyNet on 100 images")
    assert "ms of CPU per 100 images (measured by the host" in timing and "(limit 5 ms)" in timing
    assert line(result, "classify(MyNet with model.pt").startswith("PASS")
    assert _last(result).startswith("FAIL: ")


@pytest.fixture(scope="module")
def genuine(data_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A zip of the exporter's files with a MyNet trained one epoch on 20,000 FashionMNIST images and a
    FinetuneNet (ImageNet backbone) whose head is fitted on 60 cat and 60 dog photos; a data folder holding
    FashionMNIST and those photos (validate judges the head on them: this tests validate, not the model)."""
    from torchvision.datasets import FashionMNIST

    from models.weights import resolve_weights
    from objectives.finetune.photos import load_photos

    folder = tmp_path_factory.mktemp("genuine")
    source, module = _exported(folder)
    torch.manual_seed(0)
    train = FashionMNIST(data_dir, train=True, download=False)
    x, y = train.data[:20000].unsqueeze(1).float() / 255, train.targets[:20000]
    mynet = module.MyNet()
    optimiser = torch.optim.Adam(mynet.parameters(), lr=2e-3)
    for i in range(0, len(x), 100):
        optimiser.zero_grad()
        torch.nn.functional.nll_loss(mynet(x[i : i + 100]), y[i : i + 100]).backward()
        optimiser.step()
    data = folder / "data"
    (data / "FashionMNIST").mkdir(parents=True)
    (data / "FashionMNIST" / "raw").symlink_to(data_dir / "FashionMNIST" / "raw")
    for name in ("cat", "dog"):
        (data / "dogs_and_cats" / name).mkdir(parents=True)
        for photo in sorted((data_dir / "dogs_and_cats" / name).iterdir())[:60]:
            (data / "dogs_and_cats" / name / photo.name).symlink_to(photo)
    photos = load_photos(data / "dogs_and_cats")
    finetune = module.FinetuneNet().eval()
    pretrained, _ = resolve_weights("tf_efficientnet_lite0")  # ImageNet's, from the installed package
    assert finetune.backbone.load_state_dict(pretrained, strict=False).missing_keys == []
    with torch.no_grad():
        features = finetune.forward_features(photos.x.float() / 255)
    optimiser = torch.optim.Adam(finetune.head.parameters(), lr=1e-2)
    for _ in range(200):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(finetune.forward_head(features), photos.y).backward()
        optimiser.step()
    files = {
        "numpy_nn.py": standalone_source(),
        "pytorch_cnn.py": source,
        "model.pt": _state(**mynet.state_dict()),
        "finetuned.pt": _state(**finetune.state_dict()),
    }
    return _zip(folder / "genuine.zip", files), data


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_validate_passes_a_genuine_zip_judged_on_data(genuine) -> None:
    path, data = genuine
    result = validate(path, "--data", str(data), "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    assert line(result, "MyNet accuracy on 1000 of the 5000 FashionMNIST test images").startswith("PASS")
    assert line(result, "FinetuneNet accuracy on photos: 120 photos drawn from").startswith("PASS")
    for check in ("numpy_nn.SE", "MyNet() on torch.rand", "classify(FinetuneNet", "time: FinetuneNet"):
        assert line(result, check).startswith("PASS"), check
    assert _last(result).startswith("PASS: ")


@pytest.mark.slow
@pytest.mark.usefixtures("bwrap")
def test_validate_without_data_leaves_finetune_accuracy_unchecked_which_is_no_pass(genuine) -> None:
    path, _ = genuine
    result = validate(path, "--timeout", "240")
    assert result.returncode == 3, result.stdout + result.stderr
    assert line(result, "MyNet accuracy on the 500-image FashionMNIST sample").startswith("PASS")
    assert "UNCHECKED  FinetuneNet accuracy on photos: unchecked (no --data)" in result.stdout
    assert _last(result).startswith("INCOMPLETE (not a pass): ")
    assert "1 unchecked: FinetuneNet accuracy on photos" in _last(result)


def test_a_process_that_closes_its_output_then_ends_is_said_to_have_ended_not_timed_out(tmp_path) -> None:
    """The end of its output reaches the host before the kernel has reaped it (in a sandbox a brief window
    that a busy machine widens; here a second wide, so it is always hit): the judge waits for the exit
    instead of calling it a time-out."""
    import tempfile

    from search.delivery.judge import _Session
    from search.delivery.sandbox import SandboxLimits, SandboxProcess
    from search.delivery.validate import Limits

    code = "import os, time; os.close(1); time.sleep(1.5); os._exit(3)"
    limits = Limits(sandbox=SandboxLimits(60))
    argv = [sys.executable, "-I", "-c", code]
    with SandboxProcess(argv, limits.sandbox, tempfile.TemporaryDirectory()) as process:
        answer = _Session(process, limits).ask("the imports", "hello")
    assert answer == "no answer: the sandboxed process ended (exit code 3) before answering 'the imports'"
