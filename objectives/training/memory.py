"""The memory cap of torch trials: estimate a configuration's peak memory before it trains, and record the
real peak resident memory (RSS) of every trial.

Estimate (:func:`estimate_train_mb`): the process's resident memory now (data, weights, libraries) + the
activation memory autograd saves per image, *measured* by one forward pass at a small batch (a
``saved_tensors_hooks`` count of the bytes kept for backward) and scaled by the batch + gradients and the
two AdamW moments of the trainable parameters. ``bench/finetune.py`` compares it with the measured peaks.

Peak RSS per trial (:func:`track_peak_rss`): Linux's high-water mark ``VmHWM`` of the worker process,
reset at the trial's start through ``/proc/self/clear_refs`` (so a worker's earlier trials do not count).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

__all__ = [
    "MemoryPlan",
    "default_max_memory_mb",
    "estimate_train_mb",
    "plan_batch",
    "rss_mb",
    "shared_cap",
    "track_peak_rss",
]

_MB = 2**20
_STATUS = Path("/proc/self/status")
# Calibrated on EfficientNet-Lite0/2 at 96-224 px, full and last_k, batch 32-128: the estimate was 0.90-1.03x
# the measured peak (bench/finetune.py prints the ratio); MARGIN covers the under-estimates: the worst one
# measured since, lite2 at 224 px fully fine-tuned in micro-batches of 16, was 0.81x (3035 vs 3745 MiB).
ACTIVATION_FACTOR = 1.0
# A frozen part saves nothing, but its forward pass holds a few layer outputs at a time (and the allocator
# keeps their blocks): calibrated on last_k fine-tuning, where it is most of the activation memory.
TRANSIENT_FACTOR = 3.5
DEFAULT_CAP_MB = 4096
MARGIN = 1.25


def default_max_memory_mb(workers: int = 1) -> int:
    """The default cap of one of ``workers`` processes training on this machine at once: a quarter of its
    RAM, at most 4 GiB, and with more than two workers half the RAM shared among them, so that together
    they never hold more than half of it (``max_memory_mb`` overrides it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _MB
    except (ValueError, OSError):
        total = 4 * DEFAULT_CAP_MB
    return int(min(DEFAULT_CAP_MB, total / (2 * max(2, workers))))


def shared_cap(settings: dict[str, Any], workers: int) -> dict[str, int]:
    """The override that sets an unset ``max_memory_mb`` for one of ``workers`` processes on this machine
    (:func:`default_max_memory_mb`); empty for a task without the setting or a cap the user set."""
    if "max_memory_mb" not in settings or settings["max_memory_mb"] is not None:
        return {}
    return {"max_memory_mb": default_max_memory_mb(workers)}


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its high-water mark (``VmHWM``) in MiB."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{_STATUS} has no {field}")


@contextmanager
def track_peak_rss(trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's peak resident memory as user attr ``peak_rss_mb`` (also when it fails or is
    pruned); ``peak_rss_scope`` says whether it is the trial's own peak or the worker's since it started."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        scope = "trial"
    except OSError:
        scope = "process"
    try:
        yield
    finally:
        trial.set_user_attr("peak_rss_mb", round(rss_mb("VmHWM"), 1))
        trial.set_user_attr("peak_rss_scope", scope)


def activation_bytes_per_image(
    model: nn.Module, image_shape: tuple[int, ...], batch: int = 2
) -> tuple[float, float]:
    """Bytes autograd saves for backward per input image, and the largest output of one module per image
    (what a frozen part holds transiently), measured by a forward pass of a copy of ``model`` in train mode
    (the original's batch-norm statistics stay untouched)."""
    probe = copy.deepcopy(model).train()
    seen: dict[int, int] = {}
    largest = [0]

    def output(_module: nn.Module, _args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    hooks = [m.register_forward_hook(output) for m in probe.modules()]
    x = torch.rand(batch, *image_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = probe(x)
    params = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    for hook in hooks:
        hook.remove()
    del out, probe
    return sum(n for ptr, n in seen.items() if ptr not in params) / batch, largest[0] / batch


def estimate_train_mb(
    model: nn.Module, image_shape: tuple[int, ...], batch: int, *, per_image: tuple[float, float]
) -> float:
    """Estimated peak RSS (MiB) of training ``model`` with AdamW at ``batch`` images of ``image_shape``,
    given the measured ``per_image`` (saved, largest output) bytes of :func:`activation_bytes_per_image`."""
    saved, largest = per_image
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    inputs = batch * 4 * int(torch.tensor(image_shape).prod())
    activations = ACTIVATION_FACTOR * saved + TRANSIENT_FACTOR * largest
    return rss_mb() + (activations * batch + 3 * trainable + inputs) / _MB


@dataclass(frozen=True)
class MemoryPlan:
    """How a trial fits under the cap: ``micro_batch`` images per forward/backward, ``steps`` of gradient
    accumulation per optimiser step (1: none), the estimate in MiB; ``reason`` is set when nothing fits."""

    micro_batch: int
    steps: int
    estimate_mb: float
    cap_mb: int
    reason: str | None = None

    def attrs(self) -> dict[str, Any]:
        """A JSON-ready record (stored as the trial's ``memory`` user attribute)."""
        return {
            "estimate_mb": round(self.estimate_mb, 1),
            "cap_mb": self.cap_mb,
            "micro_batch": self.micro_batch,
            "accumulation_steps": self.steps,
        }


def plan_batch(
    model: nn.Module,
    image_shape: tuple[int, ...],
    batch: int,
    settings: dict[str, Any],
    *,
    accumulate: bool = True,
    smallest: int = 8,
    largest: int | None = None,
) -> MemoryPlan:
    """Fit ``batch`` under the study's ``max_memory_mb`` (default :func:`default_max_memory_mb`): the whole
    batch, or (``accumulate``) the largest halved micro-batch of at least ``smallest`` images whose
    estimate fits, accumulated to the same effective batch; otherwise a plan with the prune reason.
    ``largest`` (with ``accumulate``) caps the micro-batch whatever the estimate: the estimate is a
    measurement at 2 images scaled up, and its error grows with the micro-batch."""
    cap = settings.get("max_memory_mb") or default_max_memory_mb()
    per_image = activation_bytes_per_image(model, image_shape)
    micro = min(batch, largest) if accumulate and largest else batch
    estimate = estimate_train_mb(model, image_shape, micro, per_image=per_image)
    while estimate * MARGIN > cap and accumulate and micro > smallest:
        micro = max(smallest, micro // 2)
        estimate = estimate_train_mb(model, image_shape, micro, per_image=per_image)
    steps = -(-batch // micro)
    if estimate * MARGIN <= cap:
        return MemoryPlan(micro, steps, estimate, cap)
    how = f" even at micro-batch {micro}" if micro < batch else ""
    reason = (
        f"estimated peak memory {estimate:.0f} MiB (+{MARGIN - 1:.0%} margin){how} exceeds "
        f"max_memory_mb={cap} (batch {batch}, {per_image[0] / _MB:.1f} MiB of saved activations per image)"
    )
    return MemoryPlan(micro, steps, estimate, cap, reason)
