"""The ``finetune`` task: fine-tune a pretrained timm backbone on a Dogs-vs-Cats photo folder.

Per worker, once: the photos are decoded and resized to 96x96 (as the evaluator feeds them), split 80/20
with a seed like the lab, and the validation images are copied under the seeded imaging-condition bank (the
AUG part); NEW photos come from ``--set new_data=PATH``. Per trial: the backbone is drawn from those whose
weights resolve (the study's ``backbones`` attribute says which were skipped and why), frozen by its policy,
and trained; after every epoch the leaderboard proxy (``objectives/finetune/proxy.py``) of the validation
split is reported for pruning, and its parts are stored (``orig_acc``, ``aug_acc``, ``new_acc``). A linear
probe without augmentation trains its head on cached backbone features
(``objectives/finetune/feature_cache.py``).

The run's deadline is checked before every training step, evaluation chunk and feature-extraction chunk,
whatever the time plan estimated: a trial it reaches completes with its best epoch so far, or, before any
epoch ended, is pruned with :class:`~objectives.task.DeadlineReached` (features are cached only whole).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from optuna.trial import FrozenTrial
from torch import nn

from models.finetune import FinetuneCfg, FinetuneNet, set_trainable
from models.weights import WeightsError, backbone_catalogue, resolve_weights
from objectives.finetune.augment import augment_batch, make_mix, make_policy
from objectives.finetune.cpu_limit import over_cpu_limit
from objectives.finetune.feature_cache import FeatureCache, weights_tag
from objectives.finetune.photos import Photos, load_photos, seeded_split
from objectives.finetune.proxy import condition_bank, proxy_score, proxy_weights
from objectives.finetune.stages import PROBE, Stage, assign_stage, load_probe_head, save_probe_head
from objectives.finetune.views import view_features
from objectives.sources import DataError
from objectives.task import DeadlineReached, TrialContext
from objectives.training.fit import cpu_state, restore_training, save_state, training_state
from objectives.training.memory import plan_batch
from objectives.training.resume import Resume, resumable
from objectives.training.time_plan import plan_epochs, seconds_per_image
from spaces import Choice, Space
from spaces.finetune import FinetuneTrainConfig, FinetuneTrialConfig, parse_extras, suggest

__all__ = [
    "NET_CHUNK",
    "FinetuneData",
    "backbone_features",
    "branch_keys",
    "build_model",
    "cached_features",
    "evaluate",
    "fit_head",
    "fit_model",
    "load_data",
    "load_model",
    "objective",
    "probe_view_features",
    "split_features",
    "to_float",
]

# Images per forward pass when evaluating or computing features: lite1 at 224 px held 3.3 GB evaluating 128
# at a time, 1.5 GB at 32, no slower (bench/allocator.py's workload)
NET_CHUNK = 32
_NO_DATA = (
    "the finetune task needs photos: --data FOLDER (an ImageFolder root with cat/ and dog/, a folder "
    "holding dogs_and_cats/, or the lab's dogs_and_cats.zip)"
)


@dataclass
class FinetuneData:
    """One worker's photos: the seeded split, the AUG copies of the validation images, optional NEW photos."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_aug: torch.Tensor
    y_aug: torch.Tensor
    aug_conditions: list[str]
    x_new: torch.Tensor | None
    y_new: torch.Tensor | None
    classes: list[str]
    skipped: list[tuple[str, str]]
    source: str
    fingerprint: str


def load_data(data: str | None, settings: dict[str, Any]) -> FinetuneData:
    """Decode the photos of ``data`` once and split them (settings ``val_fraction``, ``split_seed``,
    ``max_images``, ``aug_copies``, ``new_data``).

    Raises:
        DataError: without ``data``, when it holds no photos, or when NEW photos have other classes.
    """
    if data is None:
        raise DataError(_NO_DATA)
    photos = load_photos(data, max_images=settings.get("max_images"), seed=settings.get("split_seed", 0))
    train, val = seeded_split(len(photos.y), settings.get("val_fraction", 0.2), settings.get("split_seed", 0))
    copies = settings.get("aug_copies", 2)
    x_aug, conditions = condition_bank(photos.x[val], copies=copies, seed=settings.get("split_seed", 0))
    new: Photos | None = None
    if settings.get("new_data"):
        new = load_photos(settings["new_data"])
        if new.classes != photos.classes:
            raise DataError(f"new_data has classes {new.classes}, but --data has {photos.classes}")
    key = [photos.fingerprint, new and new.fingerprint, len(train), settings.get("split_seed", 0), copies]
    return FinetuneData(
        x_train=photos.x[train],
        y_train=photos.y[train],
        x_val=photos.x[val],
        y_val=photos.y[val],
        x_aug=x_aug,
        y_aug=photos.y[val].repeat(copies),
        aug_conditions=conditions,
        x_new=None if new is None else new.x,
        y_new=None if new is None else new.y,
        classes=photos.classes,
        skipped=photos.skipped + ([] if new is None else new.skipped),
        source=photos.source + ("" if new is None else f" + NEW {new.source}"),
        fingerprint=hashlib.sha256(repr(key).encode()).hexdigest()[:16],
    )


@resumable
def objective(
    trial: optuna.Trial, data: FinetuneData, space: Space, context: TrialContext, resume: Resume
) -> float:
    """Train the configuration drawn for ``trial``; return the best epoch's leaderboard proxy.

    A retry of a trial whose worker died continues from its predecessor's last saved epoch.
    """
    settings = space.settings()
    space = _offered(trial, space, settings)
    stage = assign_stage(
        trial, space, list(space["backbone"].choices), context.seconds_left(), context.timeout
    )
    cfg = suggest(trial, stage.space)
    if stage.name == "single":  # an unstaged study: a cached probe is still a probe (never pruned)
        stage = Stage(PROBE if cfg.train.uses_cache else "finetune", stage.space)
        trial.set_user_attr("stage", stage.name)
    trial.set_user_attr("config", cfg.to_dict())
    seed = resume.draw_seed(trial)
    weights, note = proxy_weights(data.x_new is not None)
    trial.set_user_attr("proxy_weights", weights)
    trial.set_user_attr("proxy_note", note)
    trial.set_user_attr("skipped_files", len(data.skipped))
    if data.skipped:
        trial.set_user_attr("skipped_examples", [f"{f}: {r}" for f, r in data.skipped[:5]])
    torch.manual_seed(seed)
    model, source, tags = build_model(cfg, settings)
    trial.set_user_attr("weights_source", source)
    trial.set_user_attr("n_params", sum(p.numel() for p in model.parameters()))
    curves: dict[str, list[float]] = {"train_loss": [], "orig_acc": [], "aug_acc": [], "proxy": []}
    if data.x_new is not None:
        curves["new_acc"] = []
    cpu_ms, cpu_max, too_slow = over_cpu_limit(cfg.model, model, settings)
    trial.set_user_attr("cpu_ms_per_100", round(cpu_ms, 1))
    trial.set_user_attr("cpu_limit_ms", round(cpu_max, 1))
    if too_slow:
        raise context.pruned(trial, curves, too_slow)
    load_probe_head(trial, stage, model.head, context.checkpoint_dir)
    micro_batch = None
    if not cfg.train.uses_cache:
        batch = min(cfg.train.batch_size, len(data.y_train))
        # at most NET_CHUNK images per forward/backward: per-image time barely changes, its memory does
        plan = plan_batch(model, tuple(data.x_train.shape[1:]), batch, settings, largest=NET_CHUNK)
        trial.set_user_attr("memory", plan.attrs())
        if plan.reason:
            raise context.pruned(trial, curves, plan.reason)
        micro_batch = plan.micro_batch
        cfg, late = _fit_time(trial, cfg, model, data, micro_batch, context, resume)
        if late:
            raise context.pruned(trial, curves, late)
    best: dict[str, Any] = {"proxy": -math.inf}
    if resume.state is not None:
        curves, best = resume.state["curves"], resume.state["best"]

    def on_epoch(
        epoch: int, train_loss: float, parts: dict[str, float], head_state: Callable[[], dict]
    ) -> None:
        if not math.isfinite(train_loss):
            raise optuna.TrialPruned(f"training loss is not finite at epoch {epoch}: {train_loss}")
        score = proxy_score(parts["orig"], parts["aug"], parts.get("new"))
        curves["train_loss"].append(train_loss)
        curves["proxy"].append(score)
        for name, value in parts.items():
            curves[f"{name}_acc"].append(value)
        if score > best["proxy"]:
            best.update(proxy=score, epoch=epoch, parts=dict(parts), state=head_state())
        stage.report(context, trial, score, epoch)

    def save_progress(training: dict[str, Any]) -> None:
        resume.save({**training, "curves": curves, "best": best, "epochs": cfg.train.epochs})

    loop = {"resume": resume.state, "save_progress": save_progress, "stop": context.out_of_time}
    torch.manual_seed(seed)  # the first load of a backbone's weights in a process draws random numbers
    started = time.perf_counter()
    try:
        for epoch, value in enumerate(curves["proxy"], start=1):
            stage.report(context, trial, value, epoch)  # the pruner sees the epochs the predecessor ran
        if cfg.train.uses_cache:
            prepared = time.perf_counter()
            features, hit = split_features(model, data, tags, stop=context.out_of_time)
            trial.set_user_attr("feature_cache", "hit" if hit else "miss")
            if cfg.train.probe_views:
                features["views"], hits = probe_view_features(
                    model, data.x_train, cfg, data.fingerprint, tags[0], context.out_of_time
                )
                trial.set_user_attr("view_cache", f"{hits} of {cfg.train.probe_views} views hit")
            # what the features cost, which replicates pay once (the pipeline's confirmation plan)
            views = f"+{cfg.train.probe_views}views" if cfg.train.probe_views else ""
            nets = "+".join(f"{name}@{side}" for name, side in branch_keys(cfg.model))
            trial.set_user_attr("prep_key", nets + views)
            trial.set_user_attr("prep_seconds", round(time.perf_counter() - prepared, 3))
            stopped_in = fit_head(model.head, features, data, cfg.train, on_epoch, **loop)
        else:
            trial.set_user_attr("feature_cache", "unused")
            stopped_in = fit_model(model, data, cfg.train, on_epoch, micro_batch=micro_batch, **loop)
        where = None if stopped_in is None else f"in epoch {stopped_in} of {cfg.train.epochs}"
    except DeadlineReached as exc:  # while extracting features
        where = str(exc)
    except optuna.TrialPruned as exc:
        raise context.pruned(trial, curves, str(exc)) from None
    if where is not None:
        if "state" not in best:  # no epoch ended (a retry's predecessor's count): nothing valid to keep
            context.stopped_by_deadline(trial, where)
            reason = f"the run's deadline came {where}, before any epoch ended"
            raise context.pruned(trial, curves, reason, error=DeadlineReached)
        context.stopped_by_deadline(trial, f"{where}; completed with epoch {best['epoch']}")
    best_state = best["state"]
    if cfg.train.uses_cache:
        model.head.load_state_dict(best_state)
        best_state = cpu_state(model)
        if stage.name == PROBE:
            save_probe_head(trial, model.head, context.checkpoint_dir)
    checkpoint = save_state(best_state, context.checkpoint_dir / f"trial-{trial.number:05d}.pt")
    trial.set_user_attr("curves", curves)
    trial.set_user_attr("best_epoch", best["epoch"])
    trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 3))
    for name, value in best["parts"].items():
        trial.set_user_attr(f"{name}_acc", value)
    trial.set_user_attr("n_val", len(data.y_val))
    trial.set_user_attr("n_aug", len(data.y_aug))
    trial.set_user_attr("n_new", 0 if data.y_new is None else len(data.y_new))
    trial.set_user_attr("checkpoint", checkpoint.name)
    return float(best["proxy"])


def _fit_time(
    trial: optuna.Trial,
    cfg: FinetuneTrialConfig,
    model: FinetuneNet,
    data: FinetuneData,
    micro_batch: int,
    context: TrialContext,
    resume: Resume,
) -> tuple[FinetuneTrialConfig, str | None]:
    """``cfg`` with its epochs sized to the run's time left (``objectives/training/time_plan.py``; unchanged
    without ``--timeout``; a retry keeps its predecessor's plan), and why not even one epoch fits (or
    ``None``)."""
    seconds_left = context.seconds_left()
    if resume.state is not None and "epochs" in resume.state:
        epochs = int(resume.state["epochs"])
    elif seconds_left is None:
        return cfg, None
    else:
        policy = make_policy(cfg.train.augment, n=cfg.train.randaugment_n, magnitude=cfg.train.randaugment_m)
        size = min(micro_batch, len(data.y_train), NET_CHUNK)  # per-image time barely changes; memory does

        def train_batch() -> tuple[torch.Tensor, torch.Tensor]:
            return to_float(augment_batch(data.x_train[:size], policy)), data.y_train[:size]

        per_train, per_eval = seconds_per_image(
            model, train_batch, to_float(data.x_val[:NET_CHUNK]), F.cross_entropy
        )
        n_eval = len(data.y_val) + len(data.y_aug) + (0 if data.y_new is None else len(data.y_new))
        plan = plan_epochs(per_train * len(data.y_train) + per_eval * n_eval, seconds_left, cfg.train.epochs)
        trial.set_user_attr("time_plan", plan.attrs())
        if plan.reason:
            return cfg, plan.reason
        epochs = plan.epochs
    if epochs != cfg.train.epochs:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
        trial.set_user_attr("config", cfg.to_dict())
    return cfg, None


def build_model(cfg: FinetuneTrialConfig, settings: dict[str, Any]) -> tuple[FinetuneNet, str, list[str]]:
    """The trial's FinetuneNet with its backbones' pretrained weights, frozen by its policy.

    Returns:
        The model (in train mode), the weights' source (sources, with extras) and the weights tag of each
        backbone (:func:`~objectives.finetune.feature_cache.weights_tag`: the feature cache's keys).

    Raises:
        WeightsError: when no source has a backbone's weights or they do not fit it.
    """
    model = FinetuneNet(cfg.model)
    sources, tags = [], []
    for (name, _), backbone in zip(branch_keys(cfg.model), model.branches(), strict=True):
        state, source = _weights(name, settings.get("weights_dir"), settings.get("download_weights"))
        backbone_keys = set(backbone.state_dict())
        missing = backbone_keys - set(state)
        if missing:
            raise WeightsError(f"weights from {source} lack {len(missing)} keys, e.g. {sorted(missing)[:3]}")
        backbone.load_state_dict({k: v for k, v in state.items() if k in backbone_keys})
        sources.append(source)
        tags.append(weights_tag(source, state))
    set_trainable(model, cfg.train.freeze, cfg.train.freeze_k)
    return model.train(), " + ".join(dict.fromkeys(sources)), tags


def branch_keys(cfg: FinetuneCfg) -> list[tuple[str, int]]:
    """The ``(backbone, resolution)`` of each of ``cfg``'s backbones, in feature order."""
    return [(cfg.backbone, cfg.resolution), *cfg.extras]


def evaluate(
    trial: FrozenTrial, checkpoint: Path, data: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """Score a trial's checkpoint on every photo of ``data`` and on their condition-bank copies:
    ``{"orig_acc", "aug_acc", "n"}`` (use a folder the study did not train on)."""
    if data is None:
        raise DataError(_NO_DATA)
    photos = load_photos(data)
    model = load_model(trial, checkpoint)
    x_aug, _ = condition_bank(
        photos.x, copies=settings.get("aug_copies", 2), seed=settings.get("split_seed", 0)
    )
    y_aug = photos.y.repeat(settings.get("aug_copies", 2))
    return {
        "orig_acc": _accuracy(_logits(model, photos.x), photos.y),
        "aug_acc": _accuracy(_logits(model, x_aug), y_aug),
        "n": len(photos.y),
    }


def load_model(trial: FrozenTrial, checkpoint: Path) -> FinetuneNet:
    """The trial's FinetuneNet on the CPU with the weights of ``checkpoint`` (no pretrained source needed)."""
    model = FinetuneNet(FinetuneTrialConfig.from_dict(trial.user_attrs["config"]).model)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def _offered(trial: optuna.Trial, space: Space, settings: dict[str, Any]) -> Space:
    """``space`` with its backbone choices cut to those whose weights resolve; records the skipped ones."""
    spec = space["backbone"]
    names = tuple(spec.choices) if isinstance(spec, Choice) else (spec,)
    available, skipped = _catalogue(
        names, settings.get("weights_dir"), bool(settings.get("download_weights"))
    )
    trial.set_user_attr("backbones_skipped", skipped)
    if "backbones" not in trial.study.user_attrs:
        trial.study.set_user_attr("backbones", {"offered": available, "skipped": skipped})
    if not available:
        raise WeightsError("no backbone of the space has weights: " + "; ".join(skipped.values()))
    overrides: dict[str, Any] = {"backbone": available}
    extras = space["extra_backbones"]
    specs = list(extras.choices) if isinstance(extras, Choice) else [extras]
    if len(specs) > 1:  # a searched choice: only combinations whose backbones all have weights
        names = tuple(sorted({name for spec in specs for name, _ in parse_extras(spec)}))
        have = set(_catalogue(names, settings.get("weights_dir"), bool(settings.get("download_weights")))[0])
        kept = [spec for spec in specs if all(name in have for name, _ in parse_extras(spec))]
        overrides["extra_backbones"] = kept or ["none"]
    return space.with_overrides(overrides, origin="the backbone catalogue")


@functools.lru_cache(maxsize=8)
def _catalogue(names: tuple[str, ...], weights_dir: str | None, download: bool) -> tuple[list[str], dict]:
    return backbone_catalogue(names, weights_dir=weights_dir, download=download)


@functools.lru_cache(maxsize=4)
def _weights(
    name: str, weights_dir: str | None, download: bool | None
) -> tuple[dict[str, torch.Tensor], str]:
    return resolve_weights(name, weights_dir=weights_dir, download=bool(download))


def backbone_features(
    model: FinetuneNet,
    parts: dict[str, torch.Tensor],
    *,
    stop: Callable[[], bool] | None = None,
    branch: int | None = None,
) -> dict[str, torch.Tensor]:
    """The frozen backbones' pooled features of each part's uint8 photos, ``NET_CHUNK`` photos at a time
    (``branch``: backbone ``branch``'s alone).

    Raises:
        DeadlineReached: when ``stop`` (asked before every chunk) says ``True``; its message says where
            (``"while extracting ... features (train photos: 32 of 80 done)"``).
    """
    model.eval()
    backbone, side = branch_keys(model.cfg)[branch or 0]
    forward = model.forward_features if branch is None else functools.partial(model.branch_features, i=branch)
    features: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name, x in parts.items():
            chunks = []
            for i in range(0, len(x), NET_CHUNK):
                if stop is not None and stop():
                    raise DeadlineReached(
                        f"while extracting {backbone} features at {side} px "
                        f"({name} photos: {i} of {len(x)} done)"
                    )
                chunks.append(forward(to_float(x[i : i + NET_CHUNK])))
            features[name] = torch.cat(chunks)
    return features


def cached_features(
    model: FinetuneNet,
    tags: list[str],
    fingerprint: str,
    parts: Callable[[], dict[str, torch.Tensor]],
    *,
    stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """The frozen backbones' features of the photos ``parts()`` names (``fingerprint``), each backbone's from
    the feature cache (computed and cached on a miss), side by side; and whether all were hits. ``tags``:
    :func:`build_model`'s."""
    cache, each, hits = FeatureCache(), [], True
    for i, ((backbone, side), tag) in enumerate(zip(branch_keys(model.cfg), tags, strict=True)):
        features, hit = cache.get_or_compute(
            backbone,
            side,
            fingerprint,
            tag,
            lambda i=i: backbone_features(model, parts(), stop=stop, branch=i),
        )
        each.append(features)
        hits = hits and hit
    if len(each) == 1:
        return each[0], hits
    return {name: torch.cat([f[name] for f in each], dim=1) for name in each[0]}, hits


def split_features(
    model: FinetuneNet,
    data: FinetuneData,
    tags: list[str],
    *,
    stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """The frozen backbones' features of the study's split (``train``, ``val``, ``aug``, ``new``) from the
    feature cache, computed and cached on a miss; and whether it was a hit."""

    def parts() -> dict[str, torch.Tensor]:
        named = {"train": data.x_train, "val": data.x_val, "aug": data.x_aug}
        return named | ({} if data.x_new is None else {"new": data.x_new})

    return cached_features(model, tags, data.fingerprint, parts, stop=stop)


def probe_view_features(
    model: FinetuneNet,
    x: torch.Tensor,
    cfg: FinetuneTrialConfig,
    fingerprint: str,
    weights: str,
    stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, int]:
    """The cached features of ``cfg``'s augmented views of the photos ``x`` (``objectives/finetune/views.py``)
    and how many views were cache hits."""
    return view_features(
        cfg.model,
        x,
        cfg.train.probe_views,
        cfg.train.view_strength,
        fingerprint=fingerprint,
        weights=weights,
        extract=lambda photos: backbone_features(model, {"train": photos}, stop=stop)["train"],
    )


def fit_head(
    head: nn.Module,
    features: dict[str, torch.Tensor],
    data: FinetuneData,
    cfg: FinetuneTrainConfig,
    on_epoch: Callable[..., None],
    *,
    resume: dict[str, Any] | None = None,
    save_progress: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int | None:
    """Train the head alone on cached features (a linear probe; ``features["views"]``, when there: the
    features of augmented views of the training photos, view-major, train too); report after every epoch,
    then save the progress (``resume`` continues from a saved one).

    Returns:
        The epoch abandoned when ``stop`` (asked before every step) said ``True``, else ``None``; the
        epochs before it were reported, the head's weights are then part-way through it.
    """
    x, y = features["train"], data.y_train
    if "views" in features:
        x, y = torch.cat([x, features["views"]]), y.repeat(1 + len(features["views"]) // len(y))
    optimizer, scheduler, steps = _optim([{"params": head.parameters(), "lr": cfg.lr}], cfg, len(y))
    batch = min(cfg.batch_size, len(y))
    for epoch in range(restore_training(resume, head, optimizer, scheduler), cfg.epochs + 1):
        head.train()
        order, total = torch.randperm(len(y)), 0.0
        for step in range(steps):
            if stop is not None and stop():
                return epoch
            index = order[step * batch : (step + 1) * batch]
            loss = F.cross_entropy(head(x[index]), y[index], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        head.eval()
        with torch.inference_mode():
            parts = {
                "orig": _accuracy(head(features["val"]), data.y_val),
                "aug": _accuracy(head(features["aug"]), data.y_aug),
            }
            if "new" in features:
                parts["new"] = _accuracy(head(features["new"]), data.y_new)
        on_epoch(epoch, total / steps, parts, lambda: cpu_state(head))
        if save_progress is not None:
            save_progress(training_state(epoch, head, optimizer, scheduler))
    return None


def fit_model(
    model: FinetuneNet,
    data: FinetuneData,
    cfg: FinetuneTrainConfig,
    on_epoch: Callable[..., None],
    *,
    resume: dict[str, Any] | None = None,
    save_progress: Callable[[dict[str, Any]], None] | None = None,
    micro_batch: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> int | None:
    """Train the trainable part of ``model`` on augmented images; report after every epoch, then save the
    progress (``resume`` continues from a saved one). With ``micro_batch`` below the batch, each step
    accumulates the gradients of micro-batches (the memory cap: ``objectives/training/memory.py``).

    Returns:
        The epoch abandoned when ``stop`` (asked before every micro-batch and evaluation chunk) said
        ``True``, else ``None``; the epochs before it were reported, the weights are then part-way through it.
    """
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale})
    n = len(data.y_train)
    optimizer, scheduler, steps = _optim(groups, cfg, n)
    batch = min(cfg.batch_size, n)
    policy = make_policy(cfg.augment, n=cfg.randaugment_n, magnitude=cfg.randaugment_m)
    mix = make_mix(cfg.mix, len(data.classes))
    for epoch in range(restore_training(resume, model, optimizer, scheduler), cfg.epochs + 1):
        model.train()
        order, total = torch.randperm(n), 0.0
        try:
            for step in range(steps):
                index = order[step * batch : (step + 1) * batch]
                optimizer.zero_grad(set_to_none=True)
                for part in index.split(micro_batch or batch):
                    _check(stop)
                    x, y = to_float(augment_batch(data.x_train[part], policy)), data.y_train[part]
                    if mix is not None:
                        x, y = mix(x, y)
                    loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing) * (
                        len(part) / len(index)
                    )
                    loss.backward()
                    total += float(loss.detach())
                optimizer.step()
                scheduler.step()
            parts = {
                "orig": _accuracy(_logits(model, data.x_val, stop), data.y_val),
                "aug": _accuracy(_logits(model, data.x_aug, stop), data.y_aug),
            }
            if data.x_new is not None:
                parts["new"] = _accuracy(_logits(model, data.x_new, stop), data.y_new)
        except _Stopped:
            return epoch
        on_epoch(epoch, total / steps, parts, lambda: cpu_state(model))
        if save_progress is not None:
            save_progress(training_state(epoch, model, optimizer, scheduler))
    return None


def _optim(
    groups: list[dict[str, Any]], cfg: FinetuneTrainConfig, n: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, int]:
    """AdamW over ``groups`` (no decay on 1-d parameters) with a per-step warm-up + cosine schedule."""
    split = []
    for group in groups:
        params = list(group["params"])
        split.append(
            {"params": [p for p in params if p.ndim > 1], "lr": group["lr"], "weight_decay": cfg.weight_decay}
        )
        split.append({"params": [p for p in params if p.ndim <= 1], "lr": group["lr"], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW([g for g in split if g["params"]])
    steps = max(1, n // min(cfg.batch_size, n))
    total = max(1, cfg.epochs * steps)
    warm = max(1, round(0.1 * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), steps


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255)


class _Stopped(Exception):
    """A loop's ``stop`` said ``True`` (caught by the trainer that asked it)."""


def _check(stop: Callable[[], bool] | None) -> None:
    if stop is not None and stop():
        raise _Stopped


def _logits(model: nn.Module, x: torch.Tensor, stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Eval-mode logits of uint8 images ``x``, in chunks (the model's mode is restored); ``stop`` is asked
    before every chunk (raises :class:`_Stopped`)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            chunks = []
            for i in range(0, len(x), NET_CHUNK):
                _check(stop)
                chunks.append(model(to_float(x[i : i + NET_CHUNK])))
            return torch.cat(chunks)
    finally:
        model.train(was_training)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).float().mean())
