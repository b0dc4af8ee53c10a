"""Training augmentation policies for photos, from torchvision transforms v2.

Each policy maps one uint8 ``[3, H, W]`` image to another of the same shape; :func:`augment_batch` draws
per image (v2 transforms draw one set of parameters per call, so a batch call would change every image the
same way). Mixup and CutMix act on whole float batches with their labels.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = ["augment_batch", "make_mix", "make_policy"]


def make_policy(name: str, *, size: int = 96, n: int = 2, magnitude: int = 9) -> v2.Transform | None:
    """The augmentation called ``name`` (``None`` for ``"none"``); ``n``, ``magnitude``: RandAugment's.

    Raises:
        ValueError: for an unknown policy.
    """
    flip = v2.RandomHorizontalFlip()
    policies = {
        "none": None,
        "flip_crop": lambda: v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), flip]),
        "trivial": lambda: v2.Compose([flip, v2.TrivialAugmentWide()]),
        "randaugment": lambda: v2.Compose([flip, v2.RandAugment(num_ops=n, magnitude=magnitude)]),
        "autoaugment": lambda: v2.Compose([flip, v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)]),
        "color_jitter": lambda: v2.Compose([flip, v2.ColorJitter(0.4, 0.4, 0.4, 0.05)]),
        "blur": lambda: v2.Compose([flip, v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.5)]),
        "erasing": lambda: v2.Compose([flip, v2.RandomErasing(p=0.5, scale=(0.02, 0.25), value=0)]),
    }
    if name not in policies:
        raise ValueError(f"unknown augmentation {name!r}; valid policies: {', '.join(policies)}")
    factory = policies[name]
    return None if factory is None else factory()


def augment_batch(x: torch.Tensor, policy: v2.Transform | None) -> torch.Tensor:
    """Apply ``policy`` to every uint8 image of ``x`` ``[B, 3, H, W]`` with its own random draw."""
    if policy is None:
        return x
    return torch.stack([policy(image) for image in x])


def make_mix(name: str, num_classes: int) -> v2.Transform | None:
    """``v2.MixUp`` or ``v2.CutMix`` over float batches and int labels (soft labels out), or ``None``."""
    if name == "none":
        return None
    if name == "mixup":
        return v2.MixUp(num_classes=num_classes, alpha=0.2)
    if name == "cutmix":
        return v2.CutMix(num_classes=num_classes, alpha=1.0)
    raise ValueError(f"unknown mix {name!r}; valid: none, mixup, cutmix")
