"""MyNet: the lab's FashionMNIST classifier, a small VGG-style CNN described by a :class:`MyNetCfg`.

Input ``[B, 1, 28, 28]`` with pixels in ``[0, 1]`` (``transforms.ToTensor()``; the network normalises
them itself), output ``[B, 10]`` log-probabilities (train with ``F.nll_loss``). ``MyNet()`` with no
argument builds ``MYNET_CFG``; an exported ``pytorch_cnn.py`` holds this file with ``MYNET_CFG`` set to the
winning architecture, so the lab's ``MyNet()`` + ``load_state_dict(torch.load("model.pt"))`` work.

Layout: ``len(channels)`` conv stages (zero stages: a fully-connected network on the pixels), each
``convs_per_stage`` x [conv, batch norm, activation] and then a 2x downsampling; a head that flattens (or
global-average-pools) the last feature map, ``hidden`` fully-connected layers with dropout, the classifier
and ``log_softmax``.

Example:
    >>> cfg = MyNetCfg(channels=(32, 64), hidden=(128,))
    >>> model = MyNet(cfg)
    >>> model(torch.rand(8, 1, 28, 28)).shape
    torch.Size([8, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .prediction import classify

__all__ = ["MYNET_CFG", "MyNet", "MyNetCfg", "classify"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
DOWNSAMPLES = ("max", "avg", "stride")
HEADS = ("flatten", "avg")
NORMS = ("batch", "none")


@dataclass(frozen=True)
class MyNetCfg:
    """The architecture of a :class:`MyNet`.

    Args:
        channels: Output channels of each conv stage; ``()`` makes a fully-connected network.
        convs_per_stage: Convolutions per stage (the first one changes the channel count).
        kernel_size: Odd square kernel size; padding keeps the resolution.
        downsample: How a stage halves the resolution: ``"max"`` or ``"avg"`` pooling, or ``"stride"`` (the
            stage's last convolution has stride 2).
        norm: ``"batch"`` (BatchNorm after every convolution) or ``"none"``.
        activation: One of ``relu``, ``gelu``, ``silu``, ``leaky_relu``, ``tanh``, ``sigmoid``.
        head: ``"flatten"`` the last feature map, or ``"avg"`` (global average pooling; needs a conv stage).
        hidden: Widths of the fully-connected hidden layers before the classifier.
        dropout: Dropout probability before every fully-connected layer.
        num_classes: Outputs.
        in_chans: Input channels.
        input_size: Input height and width.
        mean: Pixel mean subtracted inside the network (FashionMNIST's).
        std: Pixel standard deviation divided out inside the network.

    Raises:
        ValueError: naming the field, the value and the rule it breaks.
    """

    channels: tuple[int, ...] = (32, 64)
    convs_per_stage: int = 1
    kernel_size: int = 3
    downsample: str = "max"
    norm: str = "batch"
    activation: str = "relu"
    head: str = "flatten"
    hidden: tuple[int, ...] = ()
    dropout: float = 0.25
    num_classes: int = 10
    in_chans: int = 1
    input_size: int = 28
    mean: float = 0.2860
    std: float = 0.3530

    def __post_init__(self) -> None:
        problems = {
            "channels": not all(isinstance(c, int) and c >= 1 for c in self.channels),
            "convs_per_stage": self.convs_per_stage < 1,
            "kernel_size": self.kernel_size < 1 or self.kernel_size % 2 == 0,
            "downsample": self.downsample not in DOWNSAMPLES,
            "norm": self.norm not in NORMS,
            "activation": self.activation not in ACTIVATIONS,
            "head": self.head not in HEADS or (self.head == "avg" and not self.channels),
            "hidden": not all(isinstance(h, int) and h >= 1 for h in self.hidden),
            "dropout": not 0.0 <= self.dropout < 1.0,
            "num_classes": self.num_classes < 1,
            "input_size": _feature_size(self) < 1,
            "std": self.std <= 0,
        }
        for name, bad in problems.items():
            if bad:
                raise ValueError(f"MyNetCfg.{name}={getattr(self, name)!r} breaks: {_RULES[name]}")


class ConvStage(nn.Sequential):
    """``convs`` x [conv, norm, activation], then a 2x downsampling (pooling or a strided last conv)."""

    def __init__(self, in_chans: int, out_chans: int, cfg: MyNetCfg) -> None:
        layers: list[nn.Module] = []
        for i in range(cfg.convs_per_stage):
            stride = 2 if cfg.downsample == "stride" and i == cfg.convs_per_stage - 1 else 1
            use_norm = cfg.norm == "batch"
            layers.append(
                nn.Conv2d(
                    in_chans if i == 0 else out_chans,
                    out_chans,
                    cfg.kernel_size,
                    stride=stride,
                    padding=cfg.kernel_size // 2,
                    bias=not use_norm,
                )
            )
            layers.append(nn.BatchNorm2d(out_chans) if use_norm else nn.Identity())
            layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.downsample == "max":
            layers.append(nn.MaxPool2d(2))
        elif cfg.downsample == "avg":
            layers.append(nn.AvgPool2d(2))
        super().__init__(*layers)


class MyNet(nn.Module):
    """A CNN (or, with no conv stage, an MLP) for 28x28 grey images, returning log-probabilities.

    Args:
        cfg: The architecture; ``None`` builds ``MYNET_CFG`` (the exported winner in ``pytorch_cnn.py``).
    """

    def __init__(self, cfg: MyNetCfg | None = None) -> None:
        super().__init__()
        self.cfg = cfg = MYNET_CFG if cfg is None else cfg
        widths = (cfg.in_chans, *cfg.channels)
        self.stages = nn.Sequential(
            *(ConvStage(widths[i], widths[i + 1], cfg) for i in range(len(cfg.channels)))
        )
        side = _feature_size(cfg)
        features = widths[-1] if cfg.head == "avg" else widths[-1] * side * side
        hidden: list[nn.Module] = []
        for width in cfg.hidden:
            hidden += [nn.Dropout(cfg.dropout), nn.Linear(features, width), ACTIVATIONS[cfg.activation]()]
            features = width
        self.hidden = nn.Sequential(*hidden)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(features, cfg.num_classes)
        self.num_features = features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels through the conv stages: ``[B, C, H, W]`` feature maps."""
        return self.stages((x - self.cfg.mean) / self.cfg.std)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool or flatten, hidden layers, classifier: ``[B, num_classes]`` log-probabilities.

        With ``pre_logits`` it returns the ``[B, num_features]`` input of the classifier instead.
        """
        x = x.mean(dim=(2, 3)) if self.cfg.head == "avg" else x.flatten(1)
        x = self.head_drop(self.hidden(x))
        return x if pre_logits else F.log_softmax(self.classifier(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 28, 28]`` images in ``[0, 1]`` -> ``[B, 10]`` log-probabilities."""
        return self.forward_head(self.forward_features(x))


_RULES = {
    "channels": "positive integers, one per conv stage (may be empty)",
    "convs_per_stage": "at least 1",
    "kernel_size": "an odd positive integer",
    "downsample": f"one of {DOWNSAMPLES}",
    "norm": f"one of {NORMS}",
    "activation": f"one of {tuple(ACTIVATIONS)}",
    "head": f"one of {HEADS}; 'avg' needs at least one conv stage",
    "hidden": "positive integers",
    "dropout": "0 <= dropout < 1",
    "num_classes": "at least 1",
    "input_size": "large enough to survive every stage's 2x downsampling",
    "std": "positive",
}


def _feature_size(cfg: MyNetCfg) -> int:
    """Height (= width) of the last feature map."""
    side = cfg.input_size
    for _ in cfg.channels:
        if cfg.downsample == "stride":
            side = (side + 2 * (cfg.kernel_size // 2) - cfg.kernel_size) // 2 + 1
        else:
            side //= 2
    return side


# The architecture ``MyNet()`` builds; an exported pytorch_cnn.py sets it to the tuned winner.
MYNET_CFG = MyNetCfg()
