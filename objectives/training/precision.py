"""The precision torch trials train in: bfloat16 autocast where the CPU runs it fast, float32 elsewhere.

On a CPU with AMX tiles (Intel Xeon since Sapphire Rapids) oneDNN runs bfloat16 convolutions and matrix
products in hardware: mynet's baseline trains 1.6-1.7x as fast per epoch at the same accuracy
(``bench/precision.py``). A CPU without them would emulate bfloat16 and run slower, so ``auto`` picks it only
there. Autocast casts per operation: weights, gradients and optimiser state stay float32, and so does every
validation and test figure (``objectives/training/fit.py``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "autocast", "autocast_dtype"]

PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training (validation stays float32): ``bf16`` (bfloat16), ``fp32`` (none),
    or ``auto``: bfloat16 on a CPU with AMX tiles (Intel Xeon since Sapphire Rapids: oneDNN runs bfloat16
    convolutions there 1.6x as fast, ``bench/precision.py``), float32 elsewhere (a CPU without them would
    emulate bfloat16 and run slower; CUDA keeps float32 as before).

    The weights, their gradients and the optimiser state stay float32 (autocast casts per operation), so a
    checkpoint is the same float32 state dict either way and scores the same in the lab's float32 evaluator.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cpu" and _cpu_has_amx():
        return torch.bfloat16
    return None


@functools.cache
def _cpu_has_amx() -> bool:
    try:  # torch offers no public probe; Linux lists the CPU's flags
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags and " amx_tile" in flags


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a disabled one for ``None``."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
