"""FinetuneNet: the lab's Dogs-vs-Cats classifier, a timm backbone with a new head, described by a
:class:`FinetuneCfg`.

Input ``[B, 3, 96, 96]`` with pixels in ``[0, 1]`` (the evaluator's ``Resize((96, 96))`` + ``ToTensor()``),
output ``[B, 2]`` logits (train with ``F.cross_entropy``), classes in ``ImageFolder`` order (cat=0, dog=1).
The network resizes its input to ``cfg.resolution`` itself (pretrained nets saw 224 px) and normalises it
with the backbone's ``pretrained_cfg`` mean and std. The backbone comes from ``create_backbone``
(``models/timm_backbone.py``: ``pretrained=False``, so this module never downloads); pretrained weights are
loaded by the caller (see ``models/weights.py``), and an exported ``finetuned.pt`` holds them all.
``FinetuneNet()`` with no argument builds ``FINETUNE_CFG``; an exported ``pytorch_cnn.py`` holds this file
with ``FINETUNE_CFG`` set to the winner, and a plain-torch export swaps the backbone module for
``models/efficientnet_lite.py`` (same keys, same outputs, no timm).

Example:
    >>> model = FinetuneNet(FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=128))
    >>> model(torch.rand(4, 3, 96, 96)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .timm_backbone import BACKBONE_RULE, create_backbone, is_backbone

__all__ = [
    "FINETUNE_CFG",
    "FINETUNE_HEADS",
    "FREEZE_POLICIES",
    "FinetuneCfg",
    "FinetuneNet",
    "set_trainable",
]

# Names unique across models/ (MyNet has its own HEADS): a submission pytorch_cnn.py merges both modules.
FINETUNE_HEADS = ("linear", "mlp")
FREEZE_POLICIES = ("linear", "last_k", "full")
_STAGE_ATTRS = ("blocks", "stages", "layers")


@dataclass(frozen=True)
class FinetuneCfg:
    """The architecture of a :class:`FinetuneNet`.

    Args:
        backbone: A name ``create_backbone`` builds (any timm architecture), e.g.
            ``"tf_efficientnet_lite0"``.
        resolution: Side the 96x96 input is resized to before the backbone (96: no resize).
        head: ``"linear"`` (dropout, linear) or ``"mlp"`` (dropout, linear, ReLU, dropout, linear).
        hidden: Width of the MLP head's hidden layer.
        dropout: Dropout probability before each head layer.
        num_classes: Outputs (2: cat, dog).

    Raises:
        ValueError: naming the field, the value and the rule it breaks.
    """

    backbone: str = "tf_efficientnet_lite0"
    resolution: int = 96
    head: str = "linear"
    hidden: int = 256
    dropout: float = 0.2
    num_classes: int = 2

    def __post_init__(self) -> None:
        problems = {
            "backbone": not is_backbone(self.backbone),
            "resolution": not 32 <= self.resolution <= 512,
            "head": self.head not in FINETUNE_HEADS,
            "hidden": self.hidden < 1,
            "dropout": not 0.0 <= self.dropout < 1.0,
            "num_classes": self.num_classes < 1,
        }
        for name, bad in problems.items():
            if bad:
                rule = _FINETUNE_RULES[name]
                raise ValueError(f"FinetuneCfg.{name}={getattr(self, name)!r} breaks: {rule}")


class FinetuneNet(nn.Module):
    """A pretrained-style backbone (random until weights are loaded) with a new classification head.

    Args:
        cfg: The architecture; ``None`` builds ``FINETUNE_CFG`` (the exported winner in ``pytorch_cnn.py``).
    """

    def __init__(self, cfg: FinetuneCfg | None = None) -> None:
        super().__init__()
        self.cfg = cfg = FINETUNE_CFG if cfg is None else cfg
        self.backbone = create_backbone(cfg.backbone)
        pretrained = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(pretrained["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pretrained["std"]).view(1, 3, 1, 1), persistent=False)
        # the width of timm's pre-logits: MobileNetV3's conv_head makes it 1280 where num_features says 960
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.num_features = int(width)
        if cfg.head == "mlp":
            self.head = nn.Sequential(
                nn.Dropout(cfg.dropout),
                nn.Linear(self.num_features, cfg.hidden),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, cfg.num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(self.num_features, cfg.num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Resize to ``cfg.resolution``, normalise, backbone, global pool: ``[B, num_features]``."""
        if x.shape[-1] != self.cfg.resolution or x.shape[-2] != self.cfg.resolution:
            size = (self.cfg.resolution, self.cfg.resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, num_features]`` -> ``[B, num_classes]`` logits."""
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images in ``[0, 1]`` -> ``[B, num_classes]`` logits."""
        return self.forward_head(self.forward_features(x))

    def train(self, mode: bool = True) -> FinetuneNet:
        """Set the mode; batch norms whose parameters are all frozen stay in eval mode (stats kept)."""
        super().train(mode)
        if mode:
            for module in self.backbone.modules():
                params = list(module.parameters(recurse=False))
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in params
                ):
                    module.eval()
        return self


def set_trainable(model: FinetuneNet, policy: str, k: int = 1) -> list[nn.Parameter]:
    """Freeze ``model``'s backbone by ``policy`` and return the backbone parameters left trainable.

    Args:
        model: The network (its head always stays trainable).
        policy: ``"linear"`` (a linear probe: backbone frozen), ``"last_k"`` (the last ``k`` stages of the
            backbone and everything after them train) or ``"full"`` (everything trains).
        k: Stages trained by ``"last_k"``.

    Raises:
        ValueError: for an unknown policy, or ``k`` outside ``[1, stages]``.
    """
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"unknown freeze policy {policy!r}; valid policies: {', '.join(FREEZE_POLICIES)}")
    backbone = model.backbone
    for p in backbone.parameters():
        p.requires_grad = policy == "full"
    if policy == "last_k":
        stages = _stages(backbone)
        if not 1 <= k <= len(stages):
            raise ValueError(f"freeze_k must lie in [1, {len(stages)}] for {model.cfg.backbone}, got {k}")
        container, after = _stage_container(backbone), False
        for module in backbone.children():
            if module is container:
                for stage in stages[-k:]:
                    stage.requires_grad_(True)
                after = True
            elif after:  # the layers after the stages (e.g. conv_head, its norm) train with them
                module.requires_grad_(True)
    model.train(model.training)
    return [p for p in backbone.parameters() if p.requires_grad]


def _stage_container(backbone: nn.Module) -> nn.Module:
    for attr in _STAGE_ATTRS:
        if isinstance(getattr(backbone, attr, None), nn.Sequential | nn.ModuleList):
            return getattr(backbone, attr)
    raise ValueError(f"{type(backbone).__name__} has no stage list ({', '.join(_STAGE_ATTRS)})")


def _stages(backbone: nn.Module) -> list[nn.Module]:
    return list(_stage_container(backbone).children())


_FINETUNE_RULES = {
    "backbone": BACKBONE_RULE,
    "resolution": "32 <= resolution <= 512",
    "head": f"one of {FINETUNE_HEADS}",
    "hidden": "at least 1",
    "dropout": "0 <= dropout < 1",
    "num_classes": "at least 1",
}


# The architecture ``FinetuneNet()`` builds; an exported pytorch_cnn.py sets it to the tuned winner.
FINETUNE_CFG = FinetuneCfg()
