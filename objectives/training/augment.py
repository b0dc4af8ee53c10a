"""Batch augmentation on image tensors, on whatever device they are (no DataLoader, no PIL).

Every function takes float images ``[B, C, H, W]`` with black (0) background and a ``torch.Generator`` on
the images' device, and returns new images of the same shape; each image gets its own random draw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spaces.mynet import AugmentConfig

__all__ = ["augment", "random_erase", "random_flip", "random_shift"]

_ERASE_AREA = (0.02, 0.25)  # share of the image an erased rectangle covers (torchvision: 0.02-0.33)
_ERASE_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Apply the shift, flip and erasing of ``cfg`` (each skipped when off)."""
    if cfg.shift:
        x = random_shift(x, cfg.shift, generator)
    if cfg.flip:
        x = random_flip(x, generator)
    if cfg.erase:
        x = random_erase(x, cfg.erase, generator)
    return x


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` px in x and y: zero padding, then a random crop."""
    batch, chans, height, width = x.shape
    padded = F.pad(x, (max_shift,) * 4).flatten(2)  # [B, C, (H + 2s) * (W + 2s)]
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(height, device=x.device)
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)
    index = rows[:, :, None] * (width + 2 * max_shift) + cols[:, None, :]  # [B, H, W] into the padded image
    index = index.view(batch, 1, height * width).expand(batch, chans, height * width)
    return padded.gather(2, index).view(batch, chans, height, width)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5."""
    flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, black out a random rectangle (2-25 % of the area, aspect 0.3-3.3)."""
    batch, _, height, width = x.shape
    device = x.device
    draws = torch.rand(5, batch, generator=generator, device=device)
    area = height * width * (_ERASE_AREA[0] + draws[0] * (_ERASE_AREA[1] - _ERASE_AREA[0]))
    ratio = torch.exp(_ERASE_LOG_RATIO[0] + draws[1] * (_ERASE_LOG_RATIO[1] - _ERASE_LOG_RATIO[0]))
    h = (area * ratio).sqrt().round().clamp(1, height)
    w = (area / ratio).sqrt().round().clamp(1, width)
    top = (draws[2] * (height - h + 1)).floor()
    left = (draws[3] * (width - w + 1)).floor()
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + w)[:, None, None])
    )
    erase = inside & (draws[4] < p)[:, None, None]
    return x.masked_fill(erase[:, None], 0.0)
