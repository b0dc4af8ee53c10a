"""The ``mynet`` task: train one MyNet configuration on the lab's FashionMNIST split.

Canonical order per epoch: train -> validate -> ``trial.report(val_accuracy, epoch)`` -> prune if told;
under the ``rungs`` pruner (the default) once per rung of complete short schedules instead
(:mod:`objectives.mynet.rungs`).
Validation is on a large set from the lab's "additional" images or on the lab's 1 % split (see
:mod:`objectives.mynet.validation`). Before training, a configuration over the study's ``max_params`` or
``max_latency_ms`` cap ends pruned with its reason. The trial's value is its final epoch's validation
accuracy, and the final weights are its checkpoint (a plain state dict, written atomically): the schedules
anneal, so the last epoch is where training ends up, and one reading of it is unbiased, while the best of
30 noisy epochs is the luckiest reading and overrates the trial. Curves and the t10k test accuracy are
stored as trial user attributes (the test split is never used to choose anything). :func:`refit` retrains a
finished trial's configuration on more data.

Training asks :meth:`TrialContext.out_of_time` before every step. A trial the run's deadline stops completes
with its last epoch validated on all the images (its weights are kept for that), else ends
:class:`objectives.DeadlineReached`; by rungs, with its last complete rung.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from optuna.trial import FrozenTrial
from torch import nn

from models import MyNet
from nn_numpy import Diverged
from objectives.mynet.data import FashionSplit, fashion_split, load_fashion, unlabelled_images
from objectives.mynet.distill import distillation_targets
from objectives.mynet.rungs import train_by_rungs
from objectives.mynet.validation import Validation
from objectives.rung_pruner import RungPruner
from objectives.task import DeadlineReached, TrialContext
from objectives.training.augment import augment
from objectives.training.cpu_cost import cpu_ms_per_100
from objectives.training.fit import (
    EpochStats,
    accuracy,
    cpu_state,
    fit,
    resolve_device,
    save_state,
)
from objectives.training.memory import plan_batch
from objectives.training.precision import autocast_dtype
from objectives.training.resume import Resume, resumable
from objectives.training.time_plan import EpochCost, seconds_per_image
from spaces import Space
from spaces.mynet import MyNetTrialConfig, suggest

__all__ = ["evaluate", "load_data", "objective", "refit"]

LATENCY_BATCH = (64, 1, 28, 28)  # what max_latency_ms measures: one forward pass of 64 images


def load_data(data: str | None, settings: dict[str, Any]) -> FashionSplit:
    """Load FashionMNIST from ``data`` and split it (settings ``data_fraction``, ``val_fraction``, and
    ``val_images`` set aside from the additional images when ``val_source`` is ``"additional"``)."""
    additional = settings.get("val_source", "lab") == "additional"
    images = load_fashion(data)
    holdout = int(settings["val_images"]) if additional else 0
    if images.source.startswith("STAND-IN"):  # 5,000 digits: hold out the share val_images is of 60,000
        holdout = holdout * len(images.y_train) // 60_000
    return fashion_split(
        images,
        data_fraction=settings["data_fraction"],
        val_fraction=settings["val_fraction"],
        holdout=holdout,
    )


@resumable
def objective(
    trial: optuna.Trial, data: FashionSplit, space: Space, context: TrialContext, resume: Resume
) -> float:
    """Train the configuration drawn for ``trial``; return the final epoch's validation accuracy (the last
    one on all the validation images when the run's deadline stopped it).

    A retry of a trial whose worker died continues from its predecessor's last saved epoch.
    """
    cfg = suggest(trial, space)
    trial.set_user_attr("config", cfg.to_dict())
    seed = resume.draw_seed(trial)
    torch.manual_seed(seed)
    model = MyNet(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    per_100 = cpu_ms_per_100(model, LATENCY_BATCH[1:], images=LATENCY_BATCH[0])
    latency = per_100 * LATENCY_BATCH[0] / 100
    trial.set_user_attr("n_params", n_params)
    trial.set_user_attr("latency_ms", round(latency, 3))
    trial.set_user_attr("cpu_ms_per_100", round(per_100, 3))
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    cap = _over_cap(n_params, latency, space.settings())
    memory = plan_batch(model, (1, 28, 28), cfg.train.batch_size, space.settings(), accumulate=False)
    trial.set_user_attr("memory", memory.attrs())
    cap = cap or memory.reason
    if cap:
        raise context.pruned(trial, curves, cap)

    device = resolve_device(context.device)
    trial.set_user_attr("device", str(device))
    trial.set_user_attr("precision", "bf16" if autocast_dtype(cfg.train.precision, device) else "fp32")
    data = data.to(device)
    model.to(device, memory_format=torch.channels_last)
    validation = Validation.for_trial(data, space.settings(), cfg.train.epochs, trial.study.pruner)
    trial.set_user_attr("val_source", validation.source)
    trial.set_user_attr("n_val", len(validation.y))
    if isinstance(trial.study.pruner, RungPruner):
        return _train_by_rungs(trial, model, cfg, data, validation, space, context, resume, seed)
    trial.set_user_attr("val_full_epochs", sorted(validation.full_epochs))

    def on_epoch(stats: EpochStats) -> None:
        for key, values in curves.items():
            values.append(float(getattr(stats, key)))
        context.report(trial, stats.val_accuracy, stats.epoch)

    # the last epoch validated on all the images and its weights: what a trial the deadline stops ends with
    full: dict[str, Any] = dict(resume.state.get("full_epoch", {})) if resume.state is not None else {}

    def save(training: dict[str, Any]) -> None:
        if len(validation.at(training["epoch"])[1]) == len(validation.y):
            full.update(epoch=training["epoch"], state=training["model"])
        resume.save({**training, "full_epoch": full})

    started = time.perf_counter()
    try:
        for stats in resume.state["history"] if resume.state is not None else []:
            on_epoch(EpochStats(**stats))  # the pruner sees the epochs the predecessor ran
        result = fit(
            model,
            cfg.train,
            cfg.augment,
            (data.x_train, data.y_train),
            validation.at,
            generator=torch.Generator(device=device).manual_seed(seed),
            on_epoch=on_epoch,
            resume=resume.state,
            save_progress=save,
            stop=context.out_of_time,
            unlabelled=unlabelled_images(cfg.train, data),
        )
    except (Diverged, optuna.TrialPruned) as exc:
        raise context.pruned(trial, curves, str(exc)) from None
    if result.stopped_in is None:
        final = result.history[-1]
    else:
        where = f"in epoch {result.stopped_in} of {cfg.train.epochs}"
        if not full:
            context.stopped_by_deadline(trial, f"{where}: no epoch validated on all the images")
            reason = f"the run's deadline came {where}: no epoch validated on all the images"
            raise context.pruned(trial, curves, reason, error=DeadlineReached)
        final = result.history[full["epoch"] - 1]
        context.stopped_by_deadline(trial, f"{where}; completed with epoch {final.epoch}")
        model.load_state_dict(full["state"])
        curves = {key: values[: final.epoch] for key, values in curves.items()}
    checkpoint = save_state(cpu_state(model), context.checkpoint_dir / f"trial-{trial.number:05d}.pt")
    trial.set_user_attr("curves", curves)
    trial.set_user_attr("best_epoch", final.epoch)  # the epoch of the checkpoint (a refit trains as many)
    trial.set_user_attr("val_loss", final.val_loss)
    trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 3))
    trial.set_user_attr("test_accuracy", accuracy(model, data.x_test, data.y_test))
    trial.set_user_attr("n_test", len(data.y_test))
    trial.set_user_attr("checkpoint", checkpoint.name)
    return float(final.val_accuracy)


def _train_by_rungs(
    trial: optuna.Trial,
    model: MyNet,
    cfg: MyNetTrialConfig,
    data: FashionSplit,
    validation: Validation,
    space: Space,
    context: TrialContext,
    resume: Resume,
    seed: int,
) -> float:
    """Successive halving over complete short schedules (:mod:`objectives.mynet.rungs`); the value is the
    top rung's final epoch on all the validation images (the last complete rung's when the deadline stopped
    the trial: its ``config`` then names that rung's epochs, the schedule its weights and value come from)."""
    plan = trial.study.pruner.plan
    promotion = space.settings().get("promotion", "retrain")  # what studies stored before the setting did
    # a promoted trial's value is the top rung's epochs (re-trained as one schedule, or continued from the
    # rung below: the same accuracy, bench/promotion.py); refit and confirm replicates train them as one
    cfg = replace(cfg, train=replace(cfg.train, epochs=plan.top))
    trial.set_user_attr("config", cfg.to_dict())
    trial.set_user_attr("val_full_epochs", plan.epochs)
    trial.set_user_attr("promotion", promotion)
    device = data.x_train.device

    def build() -> MyNet:
        return MyNet(cfg.model).to(device, memory_format=torch.channels_last)

    result = train_by_rungs(
        trial,
        build,
        cfg,
        (data.x_train, data.y_train),
        validation,
        plan,
        promotion,
        context=context,
        resume=resume,
        seed=seed,
        estimate=_epoch_estimate(model, cfg, data, validation, seed, context),
        unlabelled=unlabelled_images(cfg.train, data),
    )
    top = result.rungs[-1]
    if top["epochs"] != cfg.train.epochs:  # the deadline stopped it: a rung below the top is its value
        cfg = replace(cfg, train=replace(cfg.train, epochs=top["epochs"]))
        trial.set_user_attr("config", cfg.to_dict())
    checkpoint = save_state(cpu_state(result.model), context.checkpoint_dir / f"trial-{trial.number:05d}.pt")
    trial.set_user_attr("rungs", result.rungs)
    trial.set_user_attr("curves", result.curves)
    trial.set_user_attr("epochs_trained", sum(r["trained_epochs"] for r in result.rungs))
    trial.set_user_attr("best_epoch", top["epochs"])  # a refit trains the top rung's epochs as one schedule
    trial.set_user_attr("val_loss", top["val_loss"])
    trial.set_user_attr("train_seconds", round(sum(r["train_seconds"] for r in result.rungs), 3))
    trial.set_user_attr("test_accuracy", accuracy(result.model, data.x_test, data.y_test))
    trial.set_user_attr("n_test", len(data.y_test))
    trial.set_user_attr("checkpoint", checkpoint.name)
    return float(top["val_accuracy"])


def _epoch_estimate(
    model: MyNet,
    cfg: MyNetTrialConfig,
    data: FashionSplit,
    validation: Validation,
    seed: int,
    context: TrialContext,
) -> EpochCost | None:
    """The estimated seconds of a training epoch and of validating an image
    (``objectives.training.time_plan``); ``None`` without ``--timeout``."""
    if context.seconds_left() is None:
        return None
    size = min(cfg.train.batch_size, len(data.y_train))
    generator = torch.Generator(device=data.x_train.device).manual_seed(seed)

    def train_batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = augment(data.x_train[:size].float().div_(255), cfg.augment, generator)
        return x.contiguous(memory_format=torch.channels_last), data.y_train[:size]

    probe = validation.x[:256].float().div_(255).contiguous(memory_format=torch.channels_last)
    per_train, per_eval = seconds_per_image(model, train_batch, probe, F.cross_entropy)
    return EpochCost(per_train * len(data.y_train), per_eval)


def evaluate(
    trial: FrozenTrial, checkpoint: Path, data: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """Score a trial's checkpoint on the t10k test images of ``data``: ``{"test_accuracy", "n"}``."""
    images = load_fashion(data)
    model = load_model(trial, checkpoint)
    return {"test_accuracy": accuracy(model, images.x_test, images.y_test), "n": len(images.y_test)}


def load_model(trial: FrozenTrial, checkpoint: Path) -> MyNet:
    """The trial's MyNet on the CPU with the weights of ``checkpoint`` (its own, or a refit's)."""
    model = MyNet(MyNetTrialConfig.from_dict(trial.user_attrs["config"]).model)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def refit(
    trial: FrozenTrial,
    data: FashionSplit,
    path: Path,
    *,
    data_fraction: float | None = None,
    device: str = "auto",
    seed: int | None = None,
    epochs: int | None = None,
    stop: Callable[[], bool] | None = None,
    teachers: Sequence[nn.Module] = (),
) -> dict[str, Any]:
    """Retrain a completed trial's configuration on its training and validation images.

    The refit runs ``epochs`` epochs (default: the trial's ``best_epoch``) with the learning-rate schedule
    spanning them, so it ends annealed; a study searched at a short budget refits at a longer one (its
    ``refit_epochs`` setting, passed by ``search.selection.refit``). Stopping a schedule part-way leaves a
    high rate: the mynet baseline's weights at epoch 21 of its 30-epoch one-cycle scored 0.899 on t10k, 21
    epochs as their own schedule 0.909. There is no validation left: the result is the last epoch.

    Args:
        trial: A completed mynet trial.
        data: The study's split.
        path: Where the state dict goes (written atomically).
        data_fraction: Training share of the 60,000 images on top of the validation images (default: the
            study's); more comes from the split's "additional" images, and beyond 50,000 from the
            validation holdout (0.99: all 60,000 with the validation images).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: Initialisation, shuffling and augmentation seed (default: the trial's).
        epochs: The refit's epochs (default: the trial's ``best_epoch``).
        stop: Asked before every step (e.g. ``RefitRequest.out_of_time``); ``True`` ends the refit.
        teachers: Networks whose mean probabilities on the additional images the refit does not train on
            with their labels are distilled into it (``objectives/mynet/distill.py``); instead of the
            configuration's own consistency training.

    Returns:
        A JSON-ready record: ``epochs``, ``n_train``, ``data_fraction``, ``seed``, ``device``, ``seconds``,
        ``train_loss`` and ``lr`` (at its start) per epoch, ``test_accuracy`` (information only),
        ``n_test``, ``checkpoint`` (name).

    Raises:
        ValueError: when ``data_fraction`` leaves no room or the trial has no best epoch.
        objectives.DeadlineReached: when ``stop`` said ``True``; nothing is written.
    """
    cfg = MyNetTrialConfig.from_dict(trial.user_attrs["config"])
    epochs = epochs or trial.user_attrs.get("best_epoch")
    if not trial.user_attrs.get("best_epoch"):
        raise ValueError(f"trial {trial.number} has no best_epoch: only completed mynet trials can be refit")
    total = len(data.y_train) + len(data.y_val) + len(data.y_add) + len(data.y_holdout)  # all 60,000
    # the holdout comes last: it validated the search, so only a refit on (almost) everything trains on it
    pool_x = torch.cat([data.x_train, data.x_add, data.x_holdout])
    pool_y = torch.cat([data.y_train, data.y_add, data.y_holdout])
    n_pool = len(data.y_train) if data_fraction is None else round(data_fraction * total)
    if not 1 <= n_pool <= len(pool_y):
        most = len(pool_y) / total
        raise ValueError(
            f"--data-fraction must lie in (0, {most:.4g}] (the validation images come on top), "
            f"got {data_fraction}"
        )
    seed = int(trial.user_attrs.get("seed", trial.number)) if seed is None else seed
    torch_device = resolve_device(device)
    x = torch.cat([pool_x[:n_pool], data.x_val]).to(torch_device)
    y = torch.cat([pool_y[:n_pool], data.y_val]).to(torch_device)
    # unlabelled: the additional images the refit does not train on with their labels (never the holdout)
    spare = data.x_add[max(0, n_pool - len(data.y_train)) :].to(torch_device)
    unlabelled = unlabelled_images(cfg.train, data, spare) if len(spare) else None
    if teachers:
        if not len(spare):
            raise ValueError(
                "--teachers: no additional image is left unlabelled to distil on; lower --data-fraction"
            )
        unlabelled = distillation_targets(teachers, spare)
    torch.manual_seed(seed)
    model = MyNet(cfg.model).to(torch_device, memory_format=torch.channels_last)
    started = time.perf_counter()
    result = fit(
        model,
        replace(cfg.train, epochs=epochs),
        cfg.augment,
        (x, y),
        None,
        generator=torch.Generator(device=torch_device).manual_seed(seed),
        stop=stop,
        unlabelled=unlabelled,
    )
    if result.stopped_in is not None:
        raise DeadlineReached(
            f"the deadline came in epoch {result.stopped_in} of {epochs} of trial {trial.number}'s refit: "
            f"{path.name} not written"
        )
    seconds = time.perf_counter() - started
    save_state(result.best_state, path)
    test = data.to(torch_device)
    return {
        "trial": trial.number,
        "checkpoint": path.name,
        "epochs": epochs,
        "n_train": len(y),
        "data_fraction": n_pool / total,
        "seed": seed,
        "device": str(torch_device),
        "seconds": round(seconds, 3),
        "train_loss": [s.train_loss for s in result.history],
        "lr": [s.lr for s in result.history],
        "test_accuracy": accuracy(model, test.x_test, test.y_test),
        "n_test": len(data.y_test),
    }


def _over_cap(n_params: int, latency_ms: float, settings: dict[str, Any]) -> str | None:
    if settings.get("max_params") is not None and n_params > settings["max_params"]:
        return f"{n_params} parameters exceed max_params={settings['max_params']}"
    if settings.get("max_latency_ms") is not None and latency_ms > settings["max_latency_ms"]:
        cap = settings["max_latency_ms"]
        return f"CPU latency {latency_ms:.1f} ms per 64 images exceeds max_latency_ms={cap}"
    return None
