"""Benchmark of the mynet ceiling capabilities: the baseline on 9 % of the labels against consistency
training on the unlabelled "additional" images and against distillation of an ensemble, side by side.

Usage: ``python bench/ceiling_mynet.py [--seeds 0,1] [--epochs 15] [--weight 1.0] [--threshold 0.95]
[--teachers 3] [--threads 1] [--data PATH] [--arms today,unlabelled,distilled]``

The split is the task's default (``objectives/mynet/objective.py`` ``load_data``: the lab's 9 % training
images, 1 % validation, the 10,000-image confirmation holdout set aside from the additional images, which
no arm trains on). Per seed, every arm trains the mynet baseline configuration (``spaces/mynet.py``
``BASELINE``) for ``--epochs`` epochs with that seed, keeps the last epoch (nothing is chosen on t10k), and
is scored on the holdout and on t10k:

- ``today``: labelled images only (what the search's first trial trains);
- ``unlabelled``: plus FixMatch-style consistency on the additional images (``unlabelled_weight``
  ``--weight``, ``pseudo_threshold`` ``--threshold``; ``objectives.training.fit.Unlabelled``);
- ``distilled``: plus distillation on the additional images from an ensemble of ``--teachers`` baseline
  networks (``today`` and ``--teachers - 1`` more seeds; ``objectives/mynet/distill.py``); the ensemble
  itself is shown as ``teachers`` (its CPU cost is theirs summed);
- ``all labels`` (only when named in ``--arms``): every one of the 60,000 training images with its label,
  for ``--all-epochs`` epochs: the ceiling of the lab's 9 % contract (no holdout is left, its figure is
  the training images').

CPU ms per 100 images at 1 thread of each exported network (``objectives/training/cpu_cost.py``). Per arm,
the paired difference to ``today`` over the seeds, mean ± standard error (a default needs > 2 se).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=15, help="the search's schedule (default 15)")
    parser.add_argument("--weight", type=float, default=1.0, help="unlabelled / distillation loss weight")
    parser.add_argument("--threshold", type=float, default=0.95, help="pseudo_threshold (default 0.95)")
    parser.add_argument("--teachers", type=int, default=3, help="networks in the distilled ensemble")
    parser.add_argument("--arms", default="today,unlabelled,distilled", help="and 'all labels'")
    parser.add_argument("--all-epochs", type=int, default=30, help="the all-labels arm's schedule")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default="bench-ceiling-mynet.json")
    args = parser.parse_args()
    import torch

    from bench.precision import baseline_config
    from models import MyNet
    from objectives.mynet.distill import distillation_targets
    from objectives.mynet.objective import load_data
    from objectives.training.allocator import keep_freed_memory
    from objectives.training.cpu_cost import cpu_ms_per_100
    from objectives.training.fit import Unlabelled, fit
    from spaces.mynet import SPACE

    torch.set_num_threads(args.threads)
    keep_freed_memory()
    settings = SPACE.settings()
    data = load_data(args.data, settings)
    base = baseline_config()
    train_cfg = replace(base.train, epochs=args.epochs, precision=settings.get("precision", "auto"))
    arms = args.arms.split(",")
    print(
        f"mynet baseline, {args.epochs} epochs, {len(data.y_train)} labelled, {len(data.y_add)} unlabelled, "
        f"holdout {len(data.y_holdout)}, {args.threads} thread(s)",
        flush=True,
    )

    def train(seed: int, unlabelled: Unlabelled | None = None, every: bool = False) -> Any:
        torch.manual_seed(seed)
        model = MyNet(base.model).to(memory_format=torch.channels_last)
        parts = ("train", "val", "add", "holdout") if every else ("train",)
        x = torch.cat([getattr(data, f"x_{part}") for part in parts])
        y = torch.cat([getattr(data, f"y_{part}") for part in parts])
        fit(
            model,
            replace(train_cfg, epochs=args.all_epochs) if every else train_cfg,
            base.augment,
            (x, y),
            None,
            generator=torch.Generator().manual_seed(seed),
            unlabelled=unlabelled,
        )
        return model.eval()

    def scored(name: str, seed: int, started: float, predict: Any, cpu: float) -> dict[str, Any]:
        with torch.inference_mode():
            row = {
                "holdout": float((predict(data.x_holdout).argmax(1) == data.y_holdout).float().mean()),
                "t10k": float((predict(data.x_test).argmax(1) == data.y_test).float().mean()),
            }
        row.update(seconds=round(time.perf_counter() - started, 1), cpu_ms_per_100=round(cpu, 1))
        print(f"seed {seed} {name:11} holdout {row['holdout']:.4f}  t10k {row['t10k']:.4f}  "
              f"{row['seconds']:7.1f} s  CPU {row['cpu_ms_per_100']:.0f} ms/100", flush=True)  # fmt: skip
        return row

    def probs(models: list[Any]) -> Any:
        return lambda x: sum(m(x.float().div(255)).exp() for m in models) / len(models)

    results = []
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        rows: dict[str, Any] = {}
        started = time.perf_counter()
        today = train(seed)
        cost = cpu_ms_per_100(today, tuple(data.x_train.shape[1:]))
        rows["today"] = scored("today", seed, started, probs([today]), cost)  # the paired reference
        if "unlabelled" in arms:
            started = time.perf_counter()
            pool = Unlabelled(data.x_add, args.weight, args.threshold)
            rows["unlabelled"] = scored("unlabelled", seed, started, probs([train(seed, pool)]), cost)
        if "distilled" in arms:
            started = time.perf_counter()
            teachers = [today] + [train(seed + 1_000 * k) for k in range(1, args.teachers)]
            rows["teachers"] = scored("teachers", seed, started, probs(teachers), cost * len(teachers))
            started = time.perf_counter()
            targets = distillation_targets(teachers, data.x_add, args.weight)
            rows["distilled"] = scored("distilled", seed, started, probs([train(seed, targets)]), cost)
        if "all labels" in arms:
            started = time.perf_counter()
            rows["all labels"] = scored("all labels", seed, started, probs([train(seed, every=True)]), cost)
        results.append({"seed": seed, "arms": rows})
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\npaired difference to today over {len(results)} seeds (mean ± se; a default needs > 2 se):")
    for arm in results[0]["arms"]:
        if arm == "today":
            continue
        parts = []
        for part in ("holdout", "t10k"):
            gains = [r["arms"][arm][part] - r["arms"]["today"][part] for r in results]
            se = statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else math.nan
            parts.append(f"{part} {statistics.mean(gains):+.4f} ± {se:.4f}")
        print(f"  {arm:11} " + "  ".join(parts))


if __name__ == "__main__":
    main()
