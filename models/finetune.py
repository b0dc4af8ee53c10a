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

With ``cfg.extras`` the network holds two or three frozen backbones, each at its own resolution, and its head
reads their pooled features side by side (a linear probe over several backbones, still one ``FinetuneNet()``).

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
        extras: Further ``(backbone, resolution)`` pairs whose pooled features are concatenated after the
            first backbone's (at most 2; they never train: only the ``"linear"`` freezing policy).

    Raises:
        ValueError: naming the field, the value and the rule it breaks.
    """

    backbone: str = "tf_efficientnet_lite0"
    resolution: int = 96
    head: str = "linear"
    hidden: int = 256
    dropout: float = 0.2
    num_classes: int = 2
    extras: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        try:  # a stored config comes back from JSON as lists
            extras = tuple((str(name), int(side)) for name, side in self.extras)
        except (TypeError, ValueError):
            raise ValueError(
                f"FinetuneCfg.extras={self.extras!r} breaks: {_FINETUNE_RULES['extras']}"
            ) from None
        object.__setattr__(self, "extras", extras)
        problems = {
            "backbone": not is_backbone(self.backbone),
            "resolution": not 32 <= self.resolution <= 512,
            "head": self.head not in FINETUNE_HEADS,
            "hidden": self.hidden < 1,
            "dropout": not 0.0 <= self.dropout < 1.0,
            "num_classes": self.num_classes < 1,
            "extras": len(extras) > 2
            or any(not is_backbone(name) or not 32 <= side <= 512 for name, side in extras),
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
        self.extra_backbones = nn.ModuleList(create_backbone(name) for name, _ in cfg.extras)
        self.resolutions = [cfg.resolution, *(side for _, side in cfg.extras)]
        for i, backbone in enumerate(self.branches()):
            pretrained = backbone.pretrained_cfg
            suffix = f"_{i}" if i else ""  # the first backbone's names predate extras
            mean, std = (torch.tensor(pretrained[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
            self.register_buffer(f"mean{suffix}", mean, persistent=False)
            self.register_buffer(f"std{suffix}", std, persistent=False)
        # the width of timm's pre-logits: MobileNetV3's conv_head makes it 1280 where num_features says 960
        self.num_features = sum(
            int(getattr(b, "head_hidden_size", None) or b.num_features) for b in self.branches()
        )
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

    def branches(self) -> list[nn.Module]:
        """The backbones, the first (``cfg.backbone``) then ``cfg.extras``'."""
        return [self.backbone, *self.extra_backbones]

    def branch_features(self, x: torch.Tensor, i: int = 0) -> torch.Tensor:
        """Backbone ``i``'s features: resize to its resolution, normalise, backbone, global pool."""
        side, backbone = self.resolutions[i], self.branches()[i]
        if x.shape[-1] != side or x.shape[-2] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        suffix = f"_{i}" if i else ""
        x = (x - getattr(self, f"mean{suffix}")) / getattr(self, f"std{suffix}")
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every backbone's pooled features side by side: ``[B, num_features]``."""
        if not self.extra_backbones:
            return self.branch_features(x)
        return torch.cat([self.branch_features(x, i) for i in range(len(self.resolutions))], dim=1)

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
            for module in self.modules():
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
        ValueError: for an unknown policy, ``k`` outside ``[1, stages]``, or a policy other than
            ``"linear"`` for a network with ``extras`` (they stay frozen).
    """
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"unknown freeze policy {policy!r}; valid policies: {', '.join(FREEZE_POLICIES)}")
    if model.cfg.extras and policy != "linear":
        raise ValueError(f"a FinetuneNet with extras trains its head only (freeze 'linear'), not {policy!r}")
    model.extra_backbones.requires_grad_(False)
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
    "extras": "at most 2 (backbone, resolution) pairs, each a backbone name and 32 <= resolution <= 512",
}


# The architecture ``FinetuneNet()`` builds; an exported pytorch_cnn.py sets it to the tuned winner.
FINETUNE_CFG = FinetuneCfg()
