"""Training precision: bfloat16 autocast where it pays, float32 weights and validation whatever it is."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models import MyNet, MyNetCfg
from objectives.training.fit import accuracy, fit
from objectives.training.precision import autocast_dtype
from spaces.mynet import AugmentConfig, TrainConfig

CFG = TrainConfig("sgd", 0.05, 0.9, 0.0, "onecycle", 32, epochs=2)


def test_precision_names_resolve_and_a_wrong_one_is_refused() -> None:
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda")) is None, "CUDA keeps float32 unless asked"
    with pytest.raises(ValueError, match="valid precisions: auto, fp32, bf16"):
        autocast_dtype("fp16", torch.device("cpu"))


@pytest.mark.slow
def test_bf16_training_keeps_float32_weights_and_validates_in_float32() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = (x.float().mean(dim=(1, 2, 3)) > 127.5).long()  # a learnable rule
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = MyNet(MyNetCfg(channels=(8,), dropout=0.0)).to(memory_format=torch.channels_last)
        result = fit(
            model, replace(CFG, precision=precision), AugmentConfig(), (x, y), (x, y),
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert all(v.dtype in (torch.float32, torch.int64) for v in model.state_dict().values())
        # the epoch's figure is what the float32 weights score in float32 (the lab's evaluator)
        assert result.history[-1].val_accuracy == accuracy(model, x, y)
        runs[precision] = model.state_dict()
    differ = any(not torch.equal(runs["fp32"][k], runs["bf16"][k]) for k in runs["fp32"])
    assert differ, "bf16 autocast changed nothing: it did not run"
