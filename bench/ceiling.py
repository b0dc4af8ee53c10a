"""Benchmark of the finetune ceiling capabilities: today's best probe against each new capability, side by
side, on photos no choice was made on.

Usage: ``python bench/ceiling.py [--seeds 0,1,2] [--views 2,4] [--strength 1.0] [--probes SPEC,...]
[--test 500] [--data PATH] [--workdir bench-ceiling] [--threads 2] [--max-train N]``

Per seed, ``--test`` photos of ``dogs_and_cats`` (half per class; ``bench/fidelity.py``'s ``split_photos``,
the seed choosing them) are held out; the rest train. Every arm is a linear probe of the task's baseline
configuration (``spaces.finetune.BASELINE``: lite0 at 224 px, linear head, AdamW lr 3e-3, wd 1e-4, batch 64,
6 epochs, the last epoch's head kept: nothing is chosen on the held-out photos) trained with head seed =
the seed, on every training photo:

- ``today``: the baseline probe on the plain photos' features (what the default search starts from);
- ``views V``: the same probe also trained on V augmented views of each photo (``probe_views``,
  ``objectives/finetune/views.py``, strength ``--strength``);
- ``--probes`` arms: the same probe on the features of other backbones and resolutions, alone or side by
  side (``lite2@260``, ``lite0@224+lite2@260``: the ``extra_backbones`` option, ``models/finetune.py``);
- ``+ flip``: an arm's head averaged over each held-out photo and its mirror (``export --tta flip``).

Held-out figures: ORIG (the plain photos), AUG (two condition-bank copies of each, seed 0, as the proxy and
``bench/budget.py``), the proxy without NEW (2/3 ORIG + 1/3 AUG); the CPU ms per 100 images at 1 thread of
the exported network (flip: twice the network; side by side: every backbone's). Features are cached under
``WORKDIR/cache`` (the task's feature cache: a rerun trains heads only). Per arm, the paired difference to
``today`` over the seeds, mean ± standard error: a capability is worth a default only above twice its
standard error (the ceiling issue's rule). About 2 minutes a seed on 2 cores with an empty cache, for the
views arms; each other backbone adds its extraction (lite2 at 320 px: about 6 minutes a seed at 1 thread).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout


def probabilities(head: Any, features: Any) -> Any:
    import torch

    with torch.inference_mode():
        return torch.softmax(head(features), dim=1)


def accuracy(probs: Any, y: Any) -> float:
    return float((probs.argmax(1) == y).float().mean())


def seed_figures(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Every arm's held-out figures for one seed."""
    import torch
    from torch import nn

    from bench.fidelity import split_photos
    from models.finetune import FinetuneCfg
    from objectives.finetune.cpu_limit import cpu_cost
    from objectives.finetune.feature_cache import FeatureCache
    from objectives.finetune.objective import backbone_features, build_model, fit_head
    from objectives.finetune.photos import load_photos
    from objectives.finetune.proxy import condition_bank, proxy_score
    from objectives.finetune.views import view_features
    from spaces.finetune import BASELINE, FinetuneTrainConfig, FinetuneTrialConfig

    train_dir, test_dir = split_photos(
        args.data / "dogs_and_cats", args.workdir / f"photos-{args.test}-seed{seed}", args.test, seed
    )
    train, test = load_photos(train_dir, max_images=args.max_train, seed=seed), load_photos(test_dir)
    x_aug, _ = condition_bank(test.x, copies=2, seed=0)
    y_aug = test.y.repeat(2)
    keys = ("lr", "weight_decay", "batch_size", "label_smoothing", "freeze", "augment")
    base_train = FinetuneTrainConfig(**{k: BASELINE[k] for k in keys})

    def named(x: torch.Tensor) -> str:
        return hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]

    def member(backbone: str, resolution: int) -> SimpleNamespace:
        """One backbone at one resolution: its features of the bench's photos (cached) and CPU cost."""
        cfg = FinetuneCfg(backbone=backbone, resolution=resolution, head=BASELINE["head"])
        model, _, tags = build_model(FinetuneTrialConfig(cfg, base_train), {})
        tag = tags[0]

        def features_of(x: torch.Tensor) -> torch.Tensor:
            feats, _ = FeatureCache().get_or_compute(
                backbone,
                resolution,
                f"ceiling-{named(x)}",
                tag,
                lambda: {"train": backbone_features(model, {"train": x})["train"]},
            )
            return feats["train"]

        plain = {"train": features_of(train.x), "val": features_of(test.x), "aug": features_of(x_aug)}
        mirrored = {"val": features_of(test.x.flip(-1)), "aug": features_of(x_aug.flip(-1))}
        return SimpleNamespace(
            cfg=cfg, model=model, tag=tag, plain=plain, mirrored=mirrored, cost=cpu_cost(cfg, model)
        )

    started = time.perf_counter()
    data = SimpleNamespace(y_train=train.y, y_val=test.y, y_aug=y_aug, y_new=None)
    members: dict[tuple[str, int], SimpleNamespace] = {}

    def joined(spec: str) -> SimpleNamespace:
        """A probe arm's members' features side by side (``lite0@224+lite2@260``)."""
        parts = []
        for name in spec.split("+"):
            backbone, resolution = name.split("@")
            key = (backbone if "_" in backbone else f"tf_efficientnet_{backbone}", int(resolution))
            if key not in members:
                members[key] = member(*key)
            parts.append(members[key])
        return SimpleNamespace(
            plain={k: torch.cat([m.plain[k] for m in parts], 1) for k in parts[0].plain},
            mirrored={k: torch.cat([m.mirrored[k] for m in parts], 1) for k in parts[0].mirrored},
            cost=sum(m.cost for m in parts),
        )

    base = joined(f"{BASELINE['backbone']}@{BASELINE['resolution']}")
    baseline = members[(BASELINE["backbone"], BASELINE["resolution"])]
    candidates = [("today", base, 0)] + [(f"views {v}", base, v) for v in args.views]
    candidates += [(spec, joined(spec), 0) for spec in args.probes]
    arms: dict[str, Any] = {}
    for name, probe, views in candidates:
        features = dict(probe.plain)
        if views:
            features["views"], _ = view_features(
                baseline.cfg,
                train.x,
                views,
                args.strength,
                fingerprint=f"ceiling-{named(train.x)}",
                weights=baseline.tag,
                extract=lambda photos: backbone_features(baseline.model, {"train": photos})["train"],
            )
        torch.manual_seed(seed)
        head = nn.Sequential(nn.Dropout(BASELINE["dropout"]), nn.Linear(features["train"].shape[1], 2))
        fit_head(head, features, data, base_train, lambda *_: None)
        head.eval()
        for flip in (False, True):
            orig_p, aug_p = probabilities(head, probe.plain["val"]), probabilities(head, probe.plain["aug"])
            if flip:
                orig_p = (orig_p + probabilities(head, probe.mirrored["val"])) / 2
                aug_p = (aug_p + probabilities(head, probe.mirrored["aug"])) / 2
            orig, aug = accuracy(orig_p, test.y), accuracy(aug_p, y_aug)
            arms[name + (" + flip" if flip else "")] = {
                "orig": orig,
                "aug": aug,
                "proxy": proxy_score(orig, aug),
                "cpu_ms_per_100": probe.cost * (2 if flip else 1),
            }
    return {
        "seed": seed,
        "n_train": len(train.y),
        "n_test": len(test.y),
        "seconds": round(time.perf_counter() - started, 1),
        "arms": arms,
    }


def paired(results: list[dict[str, Any]], arm: str, part: str) -> tuple[float, float]:
    gains = [r["arms"][arm][part] - r["arms"]["today"][part] for r in results]
    se = statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else math.nan
    return statistics.mean(gains), se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--views", default="2,4", help="probe_views of the views arms (default 2,4)")
    parser.add_argument("--strength", type=float, default=1.0, help="view_strength (default 1.0)")
    parser.add_argument(
        "--probes",
        default="",
        help="probe arms of other backbones, resolutions and concatenations, e.g. "
        "lite2@260,lite0@224+lite2@260 (default none)",
    )
    parser.add_argument("--test", type=int, default=500, help="photos held out per seed (default 500)")
    parser.add_argument("--max-train", type=int, help="a seeded subset of the training photos (smoke runs)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--workdir", default="bench-ceiling")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    args.data, args.workdir = Path(args.data).resolve(), Path(args.workdir).resolve()
    args.views = [int(v) for v in args.views.split(",") if v.strip()]
    args.probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    os.environ.setdefault("RPZTUNE_CACHE", str(args.workdir / "cache"))
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        result = seed_figures(args, seed)
        results.append(result)
        print(f"seed {seed}: {result['n_train']} training photos, {result['n_test']} held out, "
              f"{result['seconds']} s")  # fmt: skip
        for arm, figures in result["arms"].items():
            print(
                f"  {arm:34} ORIG {figures['orig']:.4f}  AUG {figures['aug']:.4f}  "
                f"proxy {figures['proxy']:.4f}  CPU {figures['cpu_ms_per_100']:.0f} ms/100"
            )
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\npaired difference to today over {len(results)} seeds (mean ± se; a default needs > 2 se):")
    for arm in results[0]["arms"]:
        if arm == "today":
            continue
        parts = []
        for part in ("orig", "aug", "proxy"):
            mean, se = paired(results, arm, part)
            parts.append(f"{part.upper() if part != 'proxy' else 'proxy'} {mean:+.4f} ± {se:.4f}")
        print(f"  {arm:34} " + "  ".join(parts))


if __name__ == "__main__":
    main()
