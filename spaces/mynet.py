"""MyNet's search space (lab Part 2: a CNN on FashionMNIST), and one trial's configuration.

The architecture is searched compactly (stages, first-stage channels, a growth factor) and spelled out
in a :class:`models.MyNetCfg`; optimiser-specific ranges have their own keys (``sgd_lr``, ``adamw_lr``, ...)
and are drawn only with their optimiser. ``stages = 0`` (set it, it is not searched by default) makes a
fully-connected network on the pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna

from models.mynet import ACTIVATIONS, DOWNSAMPLES, HEADS, NORMS, MyNetCfg

from ._space import Choice, FloatRange, IntRange, Param, Space

__all__ = ["BASELINE", "SCHEDULES", "SPACE", "AugmentConfig", "MyNetTrialConfig", "TrainConfig", "suggest"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
VAL_SOURCES = ("additional", "lab")
PRECISIONS = ("auto", "fp32", "bf16")  # objectives/training/precision.py autocast_dtype
PROMOTIONS = ("retrain", "continue")  # how the rungs pruner promotes (objectives/rung_pruner.py)


def _check_share(low: float, high: float) -> Any:
    def check(value: Any) -> str | None:
        ok = isinstance(value, float | int) and not isinstance(value, bool) and low < value <= high
        return None if ok else f"must be a number in ({low}, {high}]"

    return check


def _check_positive(value: Any) -> str | None:
    if value is None:  # no cap (the default; a stored space round-trips it)
        return None
    ok = isinstance(value, float | int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive number (leave it unset for no cap)"


def _check_val_source(value: Any) -> str | None:
    return None if value in VAL_SOURCES else f"must be one of {', '.join(VAL_SOURCES)}"


def _check_precision(value: Any) -> str | None:
    return None if value in PRECISIONS else f"must be one of {', '.join(PRECISIONS)}"


def _check_promotion(value: Any) -> str | None:
    return None if value in PROMOTIONS else f"must be one of {', '.join(PROMOTIONS)}"


def _check_count(low: int, high: int) -> Any:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be an integer in [{low}, {high}]"

    return check


SPACE = Space(
    "mynet",
    [
        Param("stages", "int", IntRange(1, 4), bounds=(0, 4), doc="conv stages (0: an MLP on the pixels)"),
        Param("channels", "int", IntRange(8, 32, log=True), bounds=(1, 1024), doc="first stage's channels"),
        Param("growth", "float", 2.0, bounds=(1.0, 4.0), doc="channel factor from a stage to the next"),
        Param("convs_per_stage", "int", IntRange(1, 2), bounds=(1, 4), doc="convolutions per stage"),
        Param("kernel_size", "choice", Choice((3, 5)), allowed=(1, 3, 5, 7), doc="conv kernel size"),
        Param("downsample", "choice", "max", allowed=DOWNSAMPLES, doc="max/avg pooling or strided conv"),
        Param("norm", "choice", "batch", allowed=NORMS, doc="batch norm after each conv, or none"),
        Param("activation", "choice", "relu", allowed=tuple(ACTIVATIONS), doc="non-linearity"),
        Param("head", "choice", Choice(HEADS), allowed=HEADS, doc="flatten or global-average-pool"),
        Param("fc_layers", "int", IntRange(0, 1), bounds=(0, 4), doc="hidden fully-connected layers"),
        Param("fc_width", "int", IntRange(64, 512, log=True), bounds=(1, 8192), doc="their width"),
        Param("dropout", "float", FloatRange(0.0, 0.5), bounds=(0.0, 0.9), doc="dropout before each FC"),
        Param("optimizer", "choice", Choice(OPTIMIZERS), allowed=OPTIMIZERS, doc="sgd (Nesterov) or adamw"),
        Param("sgd_lr", "float", FloatRange(0.01, 0.5, log=True), bounds=(1e-6, 10.0), doc="SGD peak lr"),
        Param("sgd_momentum", "float", 0.9, bounds=(0.0, 0.999), doc="SGD momentum"),
        Param("sgd_weight_decay", "float", FloatRange(1e-5, 1e-3, log=True), bounds=(0.0, 0.1), doc="SGD L2"),
        Param("adamw_lr", "float", FloatRange(3e-4, 1e-2, log=True), bounds=(1e-6, 1.0), doc="AdamW peak lr"),
        Param("adamw_weight_decay", "float", FloatRange(1e-3, 0.1, log=True), bounds=(0.0, 1.0), doc="AdamW"),
        Param(
            "schedule", "choice", Choice(("onecycle", "cosine", "step")), allowed=SCHEDULES, doc="lr schedule"
        ),
        Param("batch_size", "int", Choice((32, 64, 128, 256)), bounds=(2, 65536), doc="minibatch size"),
        Param("label_smoothing", "float", FloatRange(0.0, 0.2), bounds=(0.0, 0.5), doc="of the NLL loss"),
        Param("epochs", "int", 15, bounds=(1, 10000), doc="training epochs (the search's budget)"),
        Param(
            "unlabelled_weight",
            "float",
            0.0,
            bounds=(0.0, 10.0),
            doc="consistency loss on the unlabelled additional images (0: off)",
        ),
        Param("pseudo_threshold", "float", 0.95, bounds=(0.5, 1.0), doc="confidence a pseudo-label needs"),
        Param("augment_shift", "int", IntRange(0, 3), bounds=(0, 8), doc="random shift (pad + crop), px"),
        Param("augment_flip", "choice", Choice((False, True)), allowed=(False, True), doc="horizontal flip"),
        Param("augment_erase", "float", FloatRange(0.0, 0.5), bounds=(0.0, 1.0), doc="random-erasing prob."),
        Param("data_fraction", "setting", 0.09, check=_check_share(0.0, 0.99), doc="training share"),
        Param("val_fraction", "setting", 0.01, check=_check_share(0.0, 0.5), doc="lab validation share"),
        Param(
            "val_source",
            "setting",
            "additional",
            check=_check_val_source,
            doc="validate on val_images of the lab's additional images, or on the lab's split ('lab')",
        ),
        Param("val_images", "setting", 10000, check=_check_count(100, 50000), doc="validation images"),
        Param(
            "val_subset",
            "setting",
            2000,
            check=_check_count(0, 50000),
            doc="of them validated between ASHA's rungs (0: all, every epoch)",
        ),
        Param(
            "promotion",
            "setting",
            "continue",  # bench/promotion.py: the same accuracy as re-training for 0.84x the compute
            check=_check_promotion,
            doc="rungs pruner: a promoted trial continues from its weights, or re-trains at the next rung",
        ),
        Param(
            "precision",
            "setting",
            "auto",
            check=_check_precision,
            doc="autocast of training: bf16 on CPUs with AMX (auto), fp32 or bf16",
        ),
        Param(
            "refit_epochs",
            "setting",
            30,
            check=lambda value: None if value is None else _check_count(1, 10_000)(value),
            doc="epochs of a refit's schedule (at least the trial's; unset: the trial's)",
        ),
        Param("max_params", "setting", None, check=_check_positive, doc="cap on parameters (prunes)"),
        Param("max_latency_ms", "setting", None, check=_check_positive, doc="cap on CPU ms per 64 images"),
        Param("max_memory_mb", "setting", None, check=_check_positive, doc="peak MiB (default RAM/4)"),
    ],
)

# The default search trains rungs of complete 3- and 15-epoch schedules (objectives/rung_pruner.py); what the
# baseline below and the default study score is in docs/measurements.md ("mynet: the baseline as complete
# schedules", "mynet: 30-minute study, timed rung by rung").
# A new study's first trial (see Task.baseline): a small VGG (32-64-128, two 3x3 convs per stage, global
# average pool) with Nesterov SGD, one-cycle and every augmentation. Trained alone for 30 epochs on the lab's
# split (seed 0, 5.5 CPU-min) its last epoch scored 0.912 on the t10k test half.
BASELINE: dict[str, Any] = {
    "stages": 3,
    "channels": 32,
    "convs_per_stage": 2,
    "kernel_size": 3,
    "head": "avg",
    "fc_layers": 0,
    "dropout": 0.2,
    "optimizer": "sgd",
    "sgd_lr": 0.1,
    "sgd_weight_decay": 5e-4,
    "schedule": "onecycle",
    "batch_size": 64,
    "label_smoothing": 0.1,
    "augment_shift": 2,
    "augment_flip": True,
    "augment_erase": 0.25,
}


@dataclass(frozen=True)
class TrainConfig:
    """How one trial trains: optimiser, schedule, batches, loss.

    Args:
        optimizer: ``"sgd"`` (Nesterov momentum) or ``"adamw"``.
        lr: Peak learning rate.
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay.
        schedule: ``"onecycle"`` (warm-up then cosine annealing), ``"cosine"``, ``"step"`` or ``"constant"``.
        batch_size: Minibatch size (the last incomplete batch of an epoch is dropped).
        epochs: Epochs the schedule spans.
        label_smoothing: Label smoothing of the NLL loss.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``: the autocast of training
            (``objectives.training.precision.autocast_dtype``; the weights and validation stay float32).
        unlabelled_weight: Weight of the consistency loss on the split's unlabelled "additional" images
            (FixMatch-style, ``objectives.training.fit.Unlabelled``); 0: labelled images only.
        pseudo_threshold: Confidence a pseudo-label needs to count.
    """

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    batch_size: int
    epochs: int
    label_smoothing: float = 0.0
    precision: str = "fp32"  # what trials stored before the setting existed trained in
    unlabelled_weight: float = 0.0
    pseudo_threshold: float = 0.95


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation on tensors: shift by up to ``shift`` px, flip with p=0.5, erase with p=``erase``."""

    shift: int = 0
    flip: bool = False
    erase: float = 0.0


@dataclass(frozen=True)
class MyNetTrialConfig:
    """One trial's configuration: the architecture, the training and the augmentation."""

    model: MyNetCfg
    train: TrainConfig
    augment: AugmentConfig

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored as the trial's ``config`` attribute)."""
        model = {
            **asdict(self.model),
            "channels": list(self.model.channels),
            "hidden": list(self.model.hidden),
        }
        return {"model": model, "train": asdict(self.train), "augment": asdict(self.augment)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MyNetTrialConfig:
        """Rebuild a config stored by :meth:`to_dict`."""
        model = data["model"]
        return cls(
            model=MyNetCfg(
                **{**model, "channels": tuple(model["channels"]), "hidden": tuple(model["hidden"])}
            ),
            train=TrainConfig(**data["train"]),
            augment=AugmentConfig(**data["augment"]),
        )


def suggest(trial: optuna.Trial, space: Space = SPACE) -> MyNetTrialConfig:
    """Draw one configuration; stage, hidden-layer and optimiser parameters are conditional."""
    stages = space.suggest(trial, "stages")
    conv: dict[str, Any] = {"channels": ()}
    if stages:
        first = space.suggest(trial, "channels")
        growth = space.suggest(trial, "growth") if stages > 1 else 1.0
        conv = {
            "channels": tuple(max(1, round(first * growth**i)) for i in range(stages)),
            "convs_per_stage": space.suggest(trial, "convs_per_stage"),
            "kernel_size": space.suggest(trial, "kernel_size"),
            "head": space.suggest(trial, "head"),
            "downsample": space.suggest(trial, "downsample"),
            "norm": space.suggest(trial, "norm"),
        }
    fc_layers = space.suggest(trial, "fc_layers")
    fc_width = space.suggest(trial, "fc_width") if fc_layers else 0
    model = MyNetCfg(
        **conv,
        activation=space.suggest(trial, "activation"),
        hidden=(fc_width,) * fc_layers,
        dropout=space.suggest(trial, "dropout"),
    )
    optimizer = space.suggest(trial, "optimizer")
    train = TrainConfig(
        optimizer=optimizer,
        lr=space.suggest(trial, f"{optimizer}_lr"),
        momentum=space.suggest(trial, "sgd_momentum") if optimizer == "sgd" else 0.0,
        weight_decay=space.suggest(trial, f"{optimizer}_weight_decay"),
        **space.suggest_all(trial, "schedule", "batch_size", "epochs", "label_smoothing"),
        precision=space.settings().get("precision", "fp32"),
    )
    unlabelled = space.suggest(trial, "unlabelled_weight")
    if unlabelled:
        threshold = space.suggest(trial, "pseudo_threshold")
        train = replace(train, unlabelled_weight=unlabelled, pseudo_threshold=threshold)
    augment = AugmentConfig(
        shift=space.suggest(trial, "augment_shift"),
        flip=space.suggest(trial, "augment_flip"),
        erase=space.suggest(trial, "augment_erase"),
    )
    return MyNetTrialConfig(model=model, train=train, augment=augment)
