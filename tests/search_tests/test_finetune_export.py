"""``finetune_source(plain_torch=True)``: a FinetuneNet file needing only torch; ``export(standalone=)``."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from models import FinetuneCfg, FinetuneNet
from models.weights import resolve_weights
from objectives import get_task
from objectives.finetune.export import finetune_source
from search.delivery.export import export
from search.delivery.validate import third_party_imports

CFG = FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=128, head="mlp", hidden=32)
SCRIPT = (
    "sys.modules['timm'] = None  # import timm fails: the file must not need it\n"
    "import torch\n"
    "from pytorch_cnn import FINETUNE_CFG, FinetuneNet, classify\n"
    "model = FinetuneNet()\n"
    "model.load_state_dict(torch.load('finetuned.pt', weights_only=True))\n"
    "model.eval()\n"
    "probe = torch.load('probe.pt', weights_only=True)\n"
    "with torch.no_grad():\n"
    "    features = model.forward_features(probe['x'])\n"
    "    logits = model(probe['x'])\n"
    "print(FINETUNE_CFG.resolution, FINETUNE_CFG.head, type(model.backbone).__name__)\n"
    "print((features - probe['features']).abs().max().item())\n"
    "print((logits - probe['logits']).abs().max().item())\n"
    "print(classify(model, probe['x']).tolist())\n"
)


@pytest.mark.slow
def test_plain_torch_finetune_file_loads_timm_weights_without_timm(tmp_path, run_standalone) -> None:
    source = finetune_source(CFG, plain_torch=True)
    assert "timm" not in third_party_imports(source, set()) and "Needs only torch." in source
    (tmp_path / "pytorch_cnn.py").write_text(source)
    torch.manual_seed(0)
    trained = FinetuneNet(CFG)
    state, _ = resolve_weights(CFG.backbone)
    trained.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    trained.eval()
    torch.save(trained.state_dict(), tmp_path / "finetuned.pt")
    x = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        probe = {"x": x, "features": trained.forward_features(x), "logits": trained(x)}
    torch.save(probe, tmp_path / "probe.pt")
    result = run_standalone(SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr
    described, features, logits, classes = result.stdout.splitlines()
    assert described == "128 mlp EfficientNetLite"
    assert classes == str(probe["logits"].argmax(dim=1).tolist())
    print(f"plain-torch FinetuneNet vs timm: max |diff| features {features}, logits {logits}")
    assert float(features) <= 1e-5 and float(logits) <= 1e-5


CLASSIFY_SCRIPT = (
    "import torch\n"
    "from pytorch_cnn import FinetuneNet, classify\n"
    "model = FinetuneNet()\n"
    "model.load_state_dict(torch.load('finetuned.pt', weights_only=True))\n"
    "model.train()\n"
    "predicted = classify(model, torch.load('x.pt', weights_only=True))\n"
    "print(predicted.dtype, predicted.tolist(), model.training)\n"
)


@pytest.mark.slow
def test_finetune_source_classify_gives_class_indices_in_a_clean_interpreter(tmp_path, run_standalone):
    """The lab's evaluator imports ``classify`` from a single-task finetune ``pytorch_cnn.py`` too."""
    cfg = FinetuneCfg(backbone="tf_efficientnet_lite0", head="linear")
    (tmp_path / "pytorch_cnn.py").write_text(finetune_source(cfg))
    torch.manual_seed(0)
    trained = FinetuneNet(cfg).eval()
    with torch.no_grad():  # a head that separates the classes, so both indices occur
        trained.head[-1].weight.normal_(0, 5.0)
    torch.save(trained.state_dict(), tmp_path / "finetuned.pt")
    x = torch.rand(16, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = trained(x).argmax(dim=1).tolist()
    result = run_standalone(CLASSIFY_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch.int64", *str(expected).split(), "True"]
    assert set(expected) <= {0, 1}


def test_finetune_source_uses_timm_unless_asked_and_refuses_other_backbones_in_plain_torch() -> None:
    assert "timm" in third_party_imports(
        finetune_source(CFG), set()
    ) and "Needs torch and timm." in finetune_source(CFG)
    with pytest.raises(
        ValueError, match=r"'resnet18' has no plain-torch version; supported: tf_efficientnet_lite0, "
    ):
        finetune_source(FinetuneCfg(backbone="resnet18"), plain_torch=True)


@pytest.mark.parametrize(
    ("task", "standalone", "passed", "note"),
    [
        ("finetune", True, True, False),
        ("finetune", False, False, False),
        ("mynet", True, False, True),
        ("numpy-mlp", False, False, False),
    ],
)
def test_export_passes_standalone_to_finetune_and_notes_it_is_ignored_elsewhere(
    task, standalone, passed, note, tmp_path, capsys
) -> None:
    jobs = []
    exporter = dataclasses.replace(get_task(task).exporter, write=lambda job: jobs.append(job) or [])
    winner = SimpleNamespace(
        task=SimpleNamespace(name=task, exporter=exporter),
        study=SimpleNamespace(study_name="s", user_attrs={}),
        trial=SimpleNamespace(number=3),
        checkpoint=tmp_path / "trial-00003.pt",
        data=None,
    )
    export(winner, tmp_path / "out", standalone=standalone)
    # the exporter writes into a staging folder beside --out, moved into place when it succeeds
    assert [job.out.parent == tmp_path and job.out.name.startswith(".out.") for job in jobs] == [True]
    assert [(job.weights, job.standalone) for job in jobs] == [(tmp_path / "trial-00003.pt", passed)]
    assert ("--standalone ignored" in capsys.readouterr().out) == note
