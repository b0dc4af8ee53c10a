"""EfficientNet-Lite0/1/2 in plain torch: timm's ``tf_efficientnet_lite{0,1,2}`` (``num_classes=0``), no timm.

The same state-dict keys and shapes as timm's models, so timm weights load strictly, and the same outputs in
eval mode. What makes the ``tf_`` variants differ from a textbook MobileNet-V2 stack:

- TensorFlow "SAME" padding: a strided convolution pads its input so the output side is
  ``ceil(input / stride)``, putting the odd pixel at the bottom and right (:class:`Conv2dSame`);
- batch norm with TensorFlow's ``eps=1e-3`` (momentum stays torch's 0.1, as in timm), ReLU6 activations;
- Lite drops squeeze-and-excitation and keeps the stem (32) and head (1280) widths fixed while the width
  multiplier rounds every stage's channels to a multiple of 8; the depth multiplier (``ceil``) leaves the
  first and last stage at one block.

No stochastic depth or classifier dropout: timm builds these models with ``drop_path_rate=0`` and
``drop_rate=0`` unless asked, and both are no-ops in eval mode anyway.

:func:`create_backbone`, :func:`is_backbone` and ``BACKBONE_RULE`` mirror ``models/timm_backbone.py``: an
exported plain-torch ``pytorch_cnn.py`` holds this file in its place.

Example:
    >>> model = create_backbone("tf_efficientnet_lite0").eval()
    >>> model.forward_head(model.forward_features(torch.rand(2, 3, 96, 96))).shape
    torch.Size([2, 1280])
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BACKBONE_RULE", "LITE_VARIANTS", "EfficientNetLite", "create_backbone", "is_backbone"]

# timm name -> (width multiplier, depth multiplier)
LITE_VARIANTS = {
    "tf_efficientnet_lite0": (1.0, 1.0),
    "tf_efficientnet_lite1": (1.0, 1.1),
    "tf_efficientnet_lite2": (1.1, 1.2),
}
BACKBONE_RULE = f"one of the plain-torch backbones {tuple(LITE_VARIANTS)}"
# Per stage: blocks, kernel, stride of the first block, expansion (1: depthwise-separable), out channels.
_LITE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHS = 32
_HEAD_CHS = 1280
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.5, 0.5, 0.5)


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding, computed from each input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` (the extra pixel at the bottom and right), then convolve without padding."""
        pad_h, pad_w = (
            max((math.ceil(size / s) - 1) * s + k - size, 0)
            for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True)
        )
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


class BatchNormAct(nn.BatchNorm2d):
    """Batch norm with TensorFlow's ``eps=1e-3``, then ReLU6 when ``act`` (timm's ``BatchNormAct2d``)."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels, eps=1e-3)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> normalised (and clipped to ``[0, 6]``) ``[B, C, H, W]``."""
        x = super().forward(x)
        return F.relu6(x) if self.act else x


class _ResidualChain(nn.Sequential):
    """Its layers in order (named like timm's), plus the input when the block keeps the shape."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, **layers: nn.Module) -> None:
        super().__init__(OrderedDict(layers))
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chs, H, W]`` -> ``[B, out_chs, H / stride, W / stride]``."""
        out = super().forward(x)
        return out + x if self.has_skip else out


class DepthwiseSeparable(_ResidualChain):
    """Depthwise conv, BN-ReLU6, pointwise conv, BN; a residual when the shape is kept."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        super().__init__(
            in_chs,
            out_chs,
            stride,
            conv_dw=_conv(in_chs, in_chs, kernel, stride, groups=in_chs),
            bn1=BatchNormAct(in_chs),
            conv_pw=_conv(in_chs, out_chs, 1),
            bn2=BatchNormAct(out_chs, act=False),
        )


class InvertedResidual(_ResidualChain):
    """MobileNet-V2's block: 1x1 expansion, depthwise conv, 1x1 projection; a residual if shape is kept."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, expand: int) -> None:
        mid_chs = in_chs * expand
        super().__init__(
            in_chs,
            out_chs,
            stride,
            conv_pw=_conv(in_chs, mid_chs, 1),
            bn1=BatchNormAct(mid_chs),
            conv_dw=_conv(mid_chs, mid_chs, kernel, stride, groups=mid_chs),
            bn2=BatchNormAct(mid_chs),
            conv_pwl=_conv(mid_chs, out_chs, 1),
            bn3=BatchNormAct(out_chs, act=False),
        )


class EfficientNetLite(nn.Module):
    """The EfficientNet-Lite feature extractor with global average pooling (no classifier).

    Args:
        width: Channel multiplier of the stages (stem and head stay 32 and 1280).
        depth: Block-count multiplier of the middle stages (rounded up).
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0) -> None:
        super().__init__()
        self.conv_stem = _conv(3, _STEM_CHS, 3, 2)
        self.bn1 = BatchNormAct(_STEM_CHS)
        stages, in_chs = [], _STEM_CHS
        for index, (repeats, kernel, stride, expand, out_chs) in enumerate(_LITE_STAGES):
            out_chs = _round_channels(out_chs * width)
            if 0 < index < len(_LITE_STAGES) - 1:
                repeats = math.ceil(repeats * depth)
            blocks: list[nn.Module] = []
            for i in range(repeats):
                block_stride = stride if i == 0 else 1
                if expand == 1:
                    blocks.append(DepthwiseSeparable(in_chs, out_chs, kernel, block_stride))
                else:
                    blocks.append(InvertedResidual(in_chs, out_chs, kernel, block_stride, expand))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(in_chs, _HEAD_CHS, 1)
        self.bn2 = BatchNormAct(_HEAD_CHS)
        self.num_features = _HEAD_CHS
        self.pretrained_cfg = {"mean": _MEAN, "std": _STD}  # the normalisation timm's weights expect

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 1280, H / 32, W / 32]`` feature maps."""
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling: ``[B, 1280, h, w]`` -> ``[B, 1280]`` (there is no classifier, so
        ``pre_logits``, kept for timm's interface, changes nothing)."""
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 1280]`` pooled features."""
        return self.forward_head(self.forward_features(x))


def is_backbone(name: str) -> bool:
    """Whether :func:`create_backbone` builds ``name``."""
    return name in LITE_VARIANTS


def create_backbone(name: str) -> EfficientNetLite:
    """The random backbone ``name`` (a ``tf_efficientnet_lite{0,1,2}``), ready for timm's weights.

    Raises:
        ValueError: for any other name, listing the supported ones.
    """
    if name not in LITE_VARIANTS:
        raise ValueError(f"no plain-torch backbone {name!r}; supported: {', '.join(LITE_VARIANTS)}")
    return EfficientNetLite(*LITE_VARIANTS[name])


def _conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution padded like TensorFlow's "SAME" (static when ``stride`` is 1)."""
    if stride == 1:  # SAME padding of an odd kernel at stride 1 is symmetric: plain zero padding
        return nn.Conv2d(in_chs, out_chs, kernel, padding=kernel // 2, groups=groups, bias=False)
    return Conv2dSame(in_chs, out_chs, kernel, stride, groups=groups, bias=False)


def _round_channels(channels: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` not more than 10% below ``channels`` (timm's ``make_divisible``)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded
