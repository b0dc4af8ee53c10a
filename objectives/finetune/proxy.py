"""The leaderboard proxy: ORIG, AUG and NEW accuracies weighted 0.6 / 0.3 / 0.1.

AUG is approximated by the validation images under a fixed, seeded bank of imaging-condition changes
(:func:`condition_bank`: brightness/contrast, blur, noise, JPEG quality, small rotations and crops). NEW needs
photos from elsewhere (``--set new_data=PATH``); without them the weights renormalise to 0.6 / 0.3 (2/3, 1/3)
and :func:`proxy_weights` says so.
"""

from __future__ import annotations

import io
import math

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

__all__ = ["CONDITIONS", "LEADERBOARD_WEIGHTS", "condition_bank", "proxy_score", "proxy_weights"]

LEADERBOARD_WEIGHTS = {"orig": 0.6, "aug": 0.3, "new": 0.1}
CONDITIONS = ("brightness", "contrast", "blur", "noise", "jpeg", "rotate", "crop")


def proxy_weights(has_new: bool) -> tuple[dict[str, float], str]:
    """The weights of the parts, and a one-line note saying how they were chosen."""
    if has_new:
        return dict(LEADERBOARD_WEIGHTS), "0.6 ORIG + 0.3 AUG + 0.1 NEW (the leaderboard's weights)"
    total = LEADERBOARD_WEIGHTS["orig"] + LEADERBOARD_WEIGHTS["aug"]
    weights = {"orig": LEADERBOARD_WEIGHTS["orig"] / total, "aug": LEADERBOARD_WEIGHTS["aug"] / total}
    return weights, "no NEW data (--set new_data=PATH): 0.6 ORIG + 0.3 AUG renormalised to 2/3 ORIG + 1/3 AUG"


def proxy_score(orig: float, aug: float, new: float | None = None) -> float:
    """``0.6 orig + 0.3 aug + 0.1 new``, or ``(0.6 orig + 0.3 aug) / 0.9`` without NEW.

    Raises:
        ValueError: when an accuracy lies outside ``[0, 1]``.
    """
    parts = {"orig": orig, "aug": aug} | ({} if new is None else {"new": new})
    for name, value in parts.items():
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"{name} accuracy must lie in [0, 1], got {value!r}")
    weights, _ = proxy_weights(new is not None)
    return sum(weights[name] * value for name, value in parts.items())


def condition_bank(x: torch.Tensor, *, copies: int = 2, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``copies`` changed versions of every uint8 image of ``x`` ``[N, 3, H, W]``, each under one seeded
    imaging condition with a seeded strength.

    Returns:
        uint8 images ``[copies * N, 3, H, W]`` (copy-major: image ``i``'s copy ``c`` is row ``c * N + i``) and
        each row's condition, e.g. ``"jpeg(q=23)"``.
    """
    generator = torch.Generator().manual_seed(seed)
    out, names = [], []
    for _ in range(copies):
        for image in x:
            kind = CONDITIONS[int(torch.randint(len(CONDITIONS), (1,), generator=generator))]
            u = float(torch.rand((), generator=generator))
            changed, name = _apply(image, kind, u, generator)
            out.append(changed)
            names.append(name)
    return torch.stack(out), names


def _apply(image: torch.Tensor, kind: str, u: float, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """One condition at strength ``u`` in [0, 1) on a uint8 ``[3, H, W]`` image."""
    height, width = image.shape[-2:]
    if kind == "brightness":
        factor = 0.5 + u  # 0.5 (darker) .. 1.5 (brighter)
        return TF.adjust_brightness(image, factor), f"brightness({factor:.2f})"
    if kind == "contrast":
        factor = 0.5 + u
        return TF.adjust_contrast(image, factor), f"contrast({factor:.2f})"
    if kind == "blur":
        sigma = 0.5 + 1.5 * u
        return TF.gaussian_blur(image, [5, 5], [sigma, sigma]), f"blur(sigma={sigma:.2f})"
    if kind == "noise":
        std = 5 + 20 * u  # in 0-255 units
        noisy = image.float() + std * torch.randn(image.shape, generator=generator)
        return noisy.round().clamp(0, 255).to(torch.uint8), f"noise(std={std:.1f})"
    if kind == "jpeg":
        quality = int(10 + 40 * u)
        return _jpeg(image, quality), f"jpeg(q={quality})"
    if kind == "rotate":
        angle = -15 + 30 * u
        return TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR), f"rotate({angle:.1f})"
    scale = 0.75 + 0.2 * u  # keep 75-95 % of each side, then back to H x W
    h, w = round(height * scale), round(width * scale)
    top = int(torch.randint(height - h + 1, (1,), generator=generator))
    left = int(torch.randint(width - w + 1, (1,), generator=generator))
    cropped = TF.resized_crop(image, top, left, h, w, [height, width], antialias=True)
    return cropped, f"crop({scale:.2f})"


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode a uint8 ``[3, H, W]`` image as JPEG at ``quality`` and decode it again (with PIL)."""
    buffer = io.BytesIO()
    TF.to_pil_image(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return TF.pil_to_tensor(decoded.convert("RGB"))
