"""Train a torch classifier epoch by epoch on uint8 image tensors that already sit on the device.

No DataLoader in the hot loop: each step indexes the uint8 tensors with a shuffled batch of indices,
converts to float in ``[0, 1]`` on the device, augments there, and steps. The loss is summed on the device
and read once per epoch, so a CUDA run synchronises once per epoch, not per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nn_numpy import Diverged
from objectives.files import replace_atomically
from objectives.training.augment import augment
from objectives.training.precision import autocast, autocast_dtype
from spaces.mynet import AugmentConfig, TrainConfig

__all__ = [
    "STRONG_VIEW",
    "EpochStats",
    "FitResult",
    "Unlabelled",
    "accuracy",
    "cpu_state",
    "fit",
    "resolve_device",
    "restore_training",
    "save_state",
    "training_state",
]

_EVAL_CHUNK = 1000


@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean training loss, validation loss and accuracy (``None`` without validation data)."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class FitResult:
    """Per-epoch stats; the best epoch (highest val accuracy, then lowest val loss) and its CPU state dict;
    the learning rate of the last step (a schedule spanning the run ends near its floor).

    Without validation data the best epoch is the last one.
    """

    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    last_lr: float | None = None  # the learning rate of the last step this call took (None: none taken)
    stopped_in: int | None = None  # the epoch ``stop`` interrupted (discarded); None: all epochs ran


# The strong view of an unlabelled image: shifts, flips and erasing at the top of the mynet space's ranges
STRONG_VIEW = AugmentConfig(shift=3, flip=True, erase=0.5)


@dataclass(frozen=True)
class Unlabelled:
    """Images without labels for FixMatch-style consistency training: every step also draws a batch of them;
    the model's prediction on an image as it is (no gradient) is its pseudo-label when its probability
    reaches ``threshold``, and the model is trained to give that label to a strongly augmented view of it
    (:data:`STRONG_VIEW`), the loss weighted ``weight``. Only images: no label of them is ever passed.
    With ``teacher`` (distillation) the target of an image is the teacher's class probabilities instead of
    the model's own confident pseudo-label.

    Args:
        images: uint8 ``[M, C, H, W]`` on the data's device.
        weight: The consistency loss's weight beside the labelled loss.
        threshold: The probability a pseudo-label needs (unused with ``teacher``).
        teacher: ``[M, K]`` probabilities a teacher (e.g. a confirmed ensemble) gives each image, or ``None``.
    """

    images: torch.Tensor
    weight: float
    threshold: float
    teacher: torch.Tensor | None = None


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: for ``"cuda"`` without a usable CUDA device, or an unknown name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid devices: auto, cpu, cuda")
    return torch.device(name)


def fit(
    model: nn.Module,
    cfg: TrainConfig,
    augment_cfg: AugmentConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None,
    *,
    generator: torch.Generator,
    epochs: int | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    resume: dict[str, Any] | None = None,
    save_progress: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
    unlabelled: Unlabelled | None = None,
) -> FitResult:
    """Train ``model`` (already on the data's device) for ``epochs`` (default ``cfg.epochs``) epochs.

    Args:
        model: Returns log-probabilities ``[B, K]``.
        cfg: Optimiser, schedule (spanning ``cfg.epochs`` epochs), batch size, label smoothing.
        augment_cfg: The batch augmentation.
        train: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``.
        val: The same for validation, or ``epoch -> (images, labels)`` (a set per epoch), or ``None`` (then
            the last epoch is the result).
        generator: Drives shuffling and augmentation; on the data's device.
        epochs: Stop after this many epochs (a refit stops at the winner's best epoch).
        on_epoch: Called after every epoch (may raise ``optuna.TrialPruned``).
        resume: A state ``save_progress`` was given by an earlier run of the same configuration; training
            continues after its epoch, and ends with the weights an uninterrupted run would have.
        save_progress: Called after every epoch, before ``on_epoch``, with the whole training state.
        stop: Asked before every step (e.g. ``TrialContext.out_of_time``); when it says ``True`` the epoch
            under way is abandoned and the result so far is returned with ``stopped_in`` set (its
            ``best_state`` is empty when no epoch ended).
        unlabelled: Images without labels for consistency training (:class:`Unlabelled`); ``None``: off.

    Raises:
        Diverged: when the epoch's training loss or the validation loss is not finite.
    """
    x_train, y_train = train
    n = len(y_train)
    batch_size = min(cfg.batch_size, n)
    steps = n // batch_size
    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, steps)
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    dtype = autocast_dtype(cfg.precision, x_train.device)
    if x_train.is_cuda:
        torch.backends.cudnn.benchmark = True
    result = FitResult()
    best = (-math.inf, -math.inf)  # (val accuracy, -val loss) of the best epoch
    first = restore_training(resume, model, optimizer, scheduler)
    if resume is not None:
        generator.set_state(resume["generator"])
        result.history = [EpochStats(**stats) for stats in resume["history"]]
        result.best_epoch, result.best_state = resume["best_epoch"], resume["best_state"]
        best = tuple(resume["best_key"])
    last = epochs or cfg.epochs
    for epoch in range(first, last + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(n, generator=generator, device=x_train.device)
        total = torch.zeros((), device=x_train.device)
        for step in range(steps):
            if stop is not None and stop():
                result.stopped_in = epoch
                return result
            index = order[step * batch_size : (step + 1) * batch_size]
            x = augment(x_train[index].float().div_(255), augment_cfg, generator)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(x_train.device, dtype):
                out = model(x).float()
            # cross_entropy of log-probabilities is their NLL (log_softmax is idempotent), plus smoothing
            loss = F.cross_entropy(out, y_train[index], label_smoothing=cfg.label_smoothing)
            if unlabelled is not None:
                loss = loss + _consistency(model, unlabelled, len(index), generator, channels_last, dtype)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.last_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            total += loss.detach()
        train_loss = float(total) / steps
        if not math.isfinite(train_loss):
            raise Diverged(epoch, train_loss)
        val_loss = val_accuracy = None
        if val is not None:
            val_loss, val_accuracy = _evaluate(model, *(val(epoch) if callable(val) else val))
            if not math.isfinite(val_loss):
                raise Diverged(epoch, val_loss, "val loss")
        stats = EpochStats(epoch, train_loss, val_loss, val_accuracy, lr, time.perf_counter() - started)
        result.history.append(stats)
        improved = val_accuracy is not None and (val_accuracy, -val_loss) > best
        if improved or (val is None and epoch == last):
            best = best if val_accuracy is None else (val_accuracy, -val_loss)
            result.best_epoch = epoch
            result.best_state = cpu_state(model)
        if save_progress is not None:
            save_progress(
                {
                    **training_state(epoch, model, optimizer, scheduler),
                    "generator": generator.get_state(),
                    "history": [asdict(s) for s in result.history],
                    "best_epoch": result.best_epoch,
                    "best_state": result.best_state,
                    "best_key": list(best),
                }
            )
        if on_epoch is not None:
            on_epoch(stats)
    return result


def _consistency(
    model: nn.Module,
    unlabelled: Unlabelled,
    size: int,
    generator: torch.Generator,
    channels_last: bool,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """The weighted loss of one batch of unlabelled images: their confident pseudo-labels (the model's
    prediction on the image as it is) or their teacher's probabilities given to their strong views."""
    images = unlabelled.images
    pick = torch.randint(len(images), (size,), generator=generator, device=images.device)
    plain = images[pick].float().div_(255)
    strong = augment(plain.clone(), STRONG_VIEW, generator)
    if channels_last:
        strong = strong.contiguous(memory_format=torch.channels_last)
    if unlabelled.teacher is not None:
        with autocast(images.device, dtype):
            out = model(strong).float()
        return unlabelled.weight * F.cross_entropy(out, unlabelled.teacher[pick])
    if channels_last:
        plain = plain.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(images.device, dtype):
        confidence, pseudo = model(plain).float().exp().max(1)  # the model gives log-probabilities
    keep = (confidence >= unlabelled.threshold).float()
    with autocast(images.device, dtype):
        out = model(strong).float()
    per_image = F.cross_entropy(out, pseudo, reduction="none")
    return unlabelled.weight * (per_image * keep).mean()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of uint8 images ``x`` whose predicted class (eval mode) equals ``y``."""
    return _evaluate(model, x, y)[1]


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict on the CPU, in the standard (contiguous) memory format."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def training_state(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """What resuming after ``epoch`` needs: weights, optimiser and schedule state, torch's global random state
    (dropout and augmentations draw from it). Loadable with ``torch.load(..., weights_only=True)``."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "epoch": epoch,
        "model": cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
    }


def restore_training(
    state: dict[str, Any] | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Load a :func:`training_state` into ``model``, ``optimizer`` and ``scheduler``; the epoch to start at.

    ``None`` leaves everything as it is and returns 1.
    """
    if state is None:
        return 1
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["epoch"]) + 1


def save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    """``torch.save`` a state dict so a reader sees the old file or the whole new one, never a part."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)

    return replace_atomically(path, write)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean NLL and accuracy over uint8 images ``x``, in eval mode, in chunks, in float32 whatever the
    training's precision: a trial's value is what its checkpoint scores in the lab's float32 evaluator."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(y), _EVAL_CHUNK):
            out = model(x[start : start + _EVAL_CHUNK].float().div_(255))
            target = y[start : start + _EVAL_CHUNK]
            loss += F.nll_loss(out, target, reduction="sum")
            correct += (out.argmax(dim=1) == target).sum()
    return float(loss) / len(y), int(correct) / len(y)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov when momentum > 0) or AdamW; no weight decay on biases and norm weights."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid optimizers: sgd, adamw")


def _scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over ``cfg.epochs`` epochs of ``steps`` steps.

    ``onecycle``: linear warm-up from lr/25 over the first quarter, then cosine annealing to lr/25e4 (as
    ``OneCycleLR`` with ``pct_start=0.25``, but defined for any number of steps); ``cosine``: from lr to 0;
    ``step``: lr, then lr/10 from half-way and lr/100 from three quarters (``MultiStepLR``'s classic
    milestones); ``constant``: lr throughout.
    """
    total = max(1, cfg.epochs * steps)
    warm = max(1, round(0.25 * total))
    start, end = 1 / 25, 1 / 25e4

    def one_cycle(step: int) -> float:
        if step < warm:
            return start + (1 - start) * step / warm
        return end + (1 - end) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))
        )

    factors = {
        "onecycle": one_cycle,
        "cosine": lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))),
        "step": lambda step: 0.1 ** ((step >= total // 2) + (step >= 3 * total // 4)),
        "constant": lambda step: 1.0,
    }
    if cfg.schedule not in factors:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid schedules: {', '.join(factors)}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[cfg.schedule])
