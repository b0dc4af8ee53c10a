"""FinetuneNet's search space (lab Part 3: fine-tune a pretrained network on Dogs-vs-Cats).

Searched by default: the backbone (of those whose weights resolve: see ``models/weights.py``), the
internal resolution, the head, the freezing policy (linear probe, last-k stages, full fine-tune with a
lower backbone learning rate), the augmentation policy and the AdamW optimiser. Policy-specific keys
(``freeze_k``, ``backbone_lr_scale``, ``randaugment_n``/``randaugment_m``, ``hidden``) are drawn only with
their policy. Options of cached linear probes, off by default (``bench/ceiling.py`` measures them):
``extra_backbones`` (the features of one or two more frozen backbones side by side with the first's, one
``FinetuneNet``) and ``probe_views`` (augmented views of the training photos).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna

from models.finetune import FINETUNE_HEADS, FREEZE_POLICIES, FinetuneCfg

from ._space import Choice, FloatRange, IntRange, Param, Space

__all__ = [
    "AUGMENTS",
    "BACKBONES",
    "BASELINE",
    "MIXES",
    "SPACE",
    "FinetuneTrialConfig",
    "parse_extras",
    "suggest",
]

BACKBONES = (
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "resnet18",
)
AUGMENTS = ("none", "flip_crop", "trivial", "randaugment", "autoaugment", "color_jitter", "blur", "erasing")
MIXES = ("none", "mixup", "cutmix")
# A new study's first trial: a linear probe that scored 0.978 validation where a 16-trial probe search's
# winner scored 2.6 points less (issue 12); seconds once its features are cached.
BASELINE = {
    "backbone": "tf_efficientnet_lite0",
    "resolution": 224,
    "head": "linear",
    "dropout": 0.0,
    "freeze": "linear",
    "augment": "none",
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "label_smoothing": 0.0,
}


def parse_extras(spec: str) -> tuple[tuple[str, int], ...]:
    """``"none"`` or ``"backbone@resolution[+backbone@resolution]"`` -> ``FinetuneCfg.extras``.

    Raises:
        ValueError: saying what is wrong with ``spec``.
    """
    if spec == "none":
        return ()
    extras = []
    for part in spec.split("+"):
        name, at, side = part.strip().partition("@")
        if not at or not side.strip().isdigit():
            raise ValueError(f"{part!r} is not backbone@resolution (e.g. tf_efficientnet_lite2@260)")
        extras.append((name.strip(), int(side)))
    FinetuneCfg(extras=tuple(extras))  # the model's rules: names, resolutions, at most 2
    return tuple(extras)


def _check_extras(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be 'none' or 'backbone@resolution[+backbone@resolution]'"
    try:
        parse_extras(value)
    except ValueError as exc:
        return f"must be 'none' or 'backbone@resolution[+backbone@resolution]' ({exc})"
    return None


def _check_share(value: Any) -> str | None:
    ok = isinstance(value, float | int) and not isinstance(value, bool) and 0.0 < value < 1.0
    return None if ok else "must be a number in (0, 1)"


def _check_path(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and value) else "must be a path (a string)"


def _check_count(value: Any) -> str | None:
    if value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 4
    return None if ok else "must be an integer of at least 4 (leave it unset for all images)"


def _check_int(low: int, high: int) -> Any:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be an integer in [{low}, {high}]"

    return check


def _check_memory(value: Any) -> str | None:
    if value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else "must be a positive integer (MiB)"


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _check_positive_or_none(value: Any) -> str | None:
    if value is None:
        return None
    ok = isinstance(value, float | int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive number"


def _check_factor(value: Any) -> str | None:
    ok = isinstance(value, float | int) and not isinstance(value, bool) and value >= 1
    return None if ok else "must be a number of at least 1"


SPACE = Space(
    "finetune",
    [
        Param(
            "backbone", "choice", Choice(BACKBONES), doc="timm backbone (those without weights are skipped)"
        ),
        Param(
            "resolution",
            "int",
            Choice((96, 128, 160, 224, 260, 288, 320)),
            bounds=(32, 512),
            doc="internal input side",
        ),
        Param(
            "head",
            "choice",
            Choice(FINETUNE_HEADS),
            allowed=FINETUNE_HEADS,
            doc="linear or a one-hidden-layer MLP",
        ),
        Param("hidden", "int", IntRange(64, 512, log=True), bounds=(1, 8192), doc="MLP head width"),
        Param("dropout", "float", FloatRange(0.0, 0.5), bounds=(0.0, 0.9), doc="dropout before head layers"),
        Param("freeze", "choice", Choice(FREEZE_POLICIES), allowed=FREEZE_POLICIES, doc="what trains"),
        Param("freeze_k", "int", IntRange(1, 3), bounds=(1, 8), doc="last_k: backbone stages that train"),
        Param("backbone_lr_scale", "float", FloatRange(0.01, 0.3, log=True), bounds=(1e-4, 1.0), doc="x lr"),
        Param("augment", "choice", Choice(AUGMENTS), allowed=AUGMENTS, doc="training augmentation policy"),
        Param("randaugment_n", "int", IntRange(1, 3), bounds=(1, 6), doc="RandAugment ops per image"),
        Param("randaugment_m", "int", IntRange(5, 15), bounds=(0, 30), doc="RandAugment magnitude"),
        Param("mix", "choice", "none", allowed=MIXES, doc="mixup / cutmix on batches (optional)"),
        Param(
            "extra_backbones",
            "choice",
            "none",
            check=_check_extras,
            doc="probes: more frozen backbones beside the first, e.g. tf_efficientnet_lite2@260",
        ),
        Param("probe_views", "int", 0, bounds=(0, 16), doc="probes: augmented views of each photo (cached)"),
        Param(
            "view_strength",
            "float",
            Choice((0.5, 1.0)),
            bounds=(0.0, 1.0),
            doc="share of a probe's views under an imaging condition (objectives/finetune/views.py)",
        ),
        Param(
            "lr", "float", FloatRange(3e-4, 3e-2, log=True), bounds=(1e-6, 1.0), doc="AdamW peak lr (head)"
        ),
        Param("weight_decay", "float", FloatRange(1e-5, 1e-1, log=True), bounds=(0.0, 1.0), doc="AdamW"),
        Param("batch_size", "int", Choice((32, 64, 128)), bounds=(2, 4096), doc="minibatch size"),
        Param("label_smoothing", "float", FloatRange(0.0, 0.1), bounds=(0.0, 0.5), doc="cross-entropy"),
        Param("epochs", "int", 6, bounds=(1, 1000), doc="training epochs (the pruning budget)"),
        Param("val_fraction", "setting", 0.2, check=_check_share, doc="validation share (the lab's 80/20)"),
        Param("split_seed", "setting", 0, check=_check_int(0, 2**31 - 1), doc="seed of the split"),
        Param("max_images", "setting", None, check=_check_count, doc="seeded subset of the photos"),
        Param("new_data", "setting", None, check=_check_path, doc="a folder of NEW photos (proxy part)"),
        Param("aug_copies", "setting", 2, check=_check_int(1, 16), doc="AUG copies of each val image"),
        Param("weights_dir", "setting", None, check=_check_path, doc="folder of <backbone>.pth weights"),
        Param("download_weights", "setting", False, check=_check_bool, doc="let timm download weights"),
        Param("stages", "setting", True, check=_check_bool, doc="probes first, then fine-tune the leaders"),
        Param("probe_trials", "setting", 24, check=_check_int(1, 10_000), doc="probes before fine-tuning"),
        Param("finetune_top", "setting", 2, check=_check_int(1, 100), doc="probe configs fine-tuned"),
        Param(
            "finetune_share",
            "setting",
            0.6,
            check=_check_share,
            doc="with --timeout: fine-tune once this share of the time is left, even if probes remain",
        ),
        Param(
            "max_memory_mb",
            "setting",
            None,
            check=_check_memory,
            doc="peak-memory cap per trial (default: RAM/4, at most 4096, shared by >2 workers)",
        ),
        Param(
            "max_cpu_x_baseline",
            "setting",
            4.0,
            check=_check_factor,
            doc="CPU limit: x the baseline's CPU ms per 100 images at 1 thread (finetune/cpu_limit.py)",
        ),
        Param(
            "max_cpu_ms",
            "setting",
            None,
            check=_check_positive_or_none,
            doc="CPU limit in ms per 100 images at 1 thread (set: replaces max_cpu_x_baseline)",
        ),
    ],
)


@dataclass(frozen=True)
class FinetuneTrainConfig:
    """How one trial trains: freezing, augmentation, AdamW with a cosine schedule.

    Args:
        freeze: ``"linear"``, ``"last_k"`` or ``"full"``.
        freeze_k: Backbone stages trained by ``"last_k"``.
        backbone_lr_scale: Backbone learning rate as a share of ``lr`` (``last_k``, ``full``).
        augment: One of :data:`AUGMENTS`.
        randaugment_n: RandAugment's number of ops.
        randaugment_m: RandAugment's magnitude.
        mix: ``"none"``, ``"mixup"`` or ``"cutmix"``.
        lr: Peak learning rate of the head.
        weight_decay: AdamW's decoupled weight decay.
        batch_size: Minibatch size.
        label_smoothing: Of the cross-entropy.
        epochs: Epochs the schedule spans.
        probe_views: A cached probe (``uses_cache``) also trains on this many augmented views of each
            training photo (``objectives/finetune/views.py``).
        view_strength: The share of those views under an imaging condition.
    """

    freeze: str = "linear"
    freeze_k: int = 1
    backbone_lr_scale: float = 0.1
    augment: str = "none"
    randaugment_n: int = 2
    randaugment_m: int = 9
    mix: str = "none"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    label_smoothing: float = 0.0
    epochs: int = 6
    probe_views: int = 0
    view_strength: float = 1.0

    @property
    def uses_cache(self) -> bool:
        """A frozen backbone seeing fixed images: its features can come from the feature cache."""
        return self.freeze == "linear" and self.augment == "none" and self.mix == "none"


@dataclass(frozen=True)
class FinetuneTrialConfig:
    """One trial's configuration: the architecture and the training."""

    model: FinetuneCfg
    train: FinetuneTrainConfig

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored as the trial's ``config`` attribute)."""
        return {"model": asdict(self.model), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneTrialConfig:
        """Rebuild a config stored by :meth:`to_dict`."""
        return cls(model=FinetuneCfg(**data["model"]), train=FinetuneTrainConfig(**data["train"]))


def suggest(trial: optuna.Trial, space: Space = SPACE) -> FinetuneTrialConfig:
    """Draw one configuration; head width, freezing depth, backbone lr, RandAugment keys are conditional."""
    head = space.suggest(trial, "head")
    model = FinetuneCfg(
        **space.suggest_all(trial, "backbone", "resolution"),
        head=head,
        hidden=space.suggest(trial, "hidden") if head == "mlp" else FinetuneCfg.hidden,
        dropout=space.suggest(trial, "dropout"),
    )
    freeze = space.suggest(trial, "freeze")
    augment = space.suggest(trial, "augment")
    defaults = FinetuneTrainConfig()
    train = FinetuneTrainConfig(
        freeze=freeze,
        freeze_k=space.suggest(trial, "freeze_k") if freeze == "last_k" else defaults.freeze_k,
        backbone_lr_scale=(
            space.suggest(trial, "backbone_lr_scale") if freeze != "linear" else defaults.backbone_lr_scale
        ),
        augment=augment,
        randaugment_n=space.suggest(trial, "randaugment_n") if augment == "randaugment" else 2,
        randaugment_m=space.suggest(trial, "randaugment_m") if augment == "randaugment" else 9,
        **space.suggest_all(trial, "mix", "lr", "weight_decay", "batch_size", "label_smoothing", "epochs"),
    )
    if train.uses_cache:  # more backbones or augmented views: only for probes on cached features
        extras = parse_extras(space.suggest(trial, "extra_backbones"))
        model = replace(model, extras=extras)
        views = 0 if extras else space.suggest(trial, "probe_views")  # views: of the first backbone only
        strength = space.suggest(trial, "view_strength") if views else defaults.view_strength
        train = replace(train, probe_views=views, view_strength=strength)
    return FinetuneTrialConfig(model=model, train=train)
