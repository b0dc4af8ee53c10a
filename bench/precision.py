"""Benchmark of mynet's training precision: float32 vs bfloat16 autocast, side by side in one run.

Usage: ``python bench/precision.py [--epochs 9] [--seeds 0,1] [--threads 1] [--data PATH]``

For every seed it trains the mynet baseline configuration (``spaces/mynet.py`` ``BASELINE``) on the lab's
9 % split for ``--epochs`` epochs (one-cycle spanning them), once in float32 and once under bfloat16
autocast (``objectives.training.precision.autocast_dtype``), alternating which goes first. It prints per run
the seconds per training epoch, the accuracy on the 10,000 validation images and on t10k (both float32, as the
lab scores an export), then the speed ratio per seed and the accuracy differences. bfloat16 pays only on
CPUs with AMX tiles (the ``auto`` precision uses it only there).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from models import MyNet  # noqa: E402
from objectives.mynet.objective import load_data  # noqa: E402
from objectives.training.allocator import keep_freed_memory  # noqa: E402
from objectives.training.fit import accuracy, fit  # noqa: E402
from spaces.mynet import BASELINE, SPACE, suggest  # noqa: E402


def baseline_config() -> object:
    """The baseline trial's configuration as ``suggest`` builds it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.enqueue_trial(BASELINE)
    return suggest(study.ask(), SPACE)


def run(cfg, data, precision: str, epochs: int, seed: int) -> dict:
    """Train once; seconds per epoch, validation and test accuracy."""
    torch.manual_seed(seed)
    model = MyNet(cfg.model).to(memory_format=torch.channels_last)
    train = replace(cfg.train, epochs=epochs, precision=precision)
    started = time.perf_counter()
    result = fit(
        model,
        train,
        cfg.augment,
        (data.x_train, data.y_train),
        None,
        generator=torch.Generator().manual_seed(seed),
    )
    seconds = time.perf_counter() - started
    val = accuracy(model, data.x_holdout, data.y_holdout)
    return {
        "precision": precision,
        "seed": seed,
        "s_per_epoch": seconds / len(result.history),
        "val": val,
        "test": accuracy(model, data.x_test, data.y_test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    data = load_data(args.data, SPACE.settings())
    cfg = baseline_config()
    print(
        f"mynet baseline, {args.epochs} epochs, {len(data.y_train)} training images, {args.threads} thread(s)"
    )
    rows = []
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            row = run(cfg, data, precision, args.epochs, seed)
            rows.append(row)
            print(
                f"seed {seed} {precision}: {row['s_per_epoch']:6.1f} s/epoch  val {row['val']:.4f}  "
                f"t10k {row['test']:.4f}",
                flush=True,
            )
    by = {(r["seed"], r["precision"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    speed = [by[s, "fp32"]["s_per_epoch"] / by[s, "bf16"]["s_per_epoch"] for s in seeds]
    dval = [by[s, "bf16"]["val"] - by[s, "fp32"]["val"] for s in seeds]
    dtest = [by[s, "bf16"]["test"] - by[s, "fp32"]["test"] for s in seeds]
    print(f"speed-up bf16 vs fp32 per seed: {', '.join(f'{x:.2f}x' for x in speed)}")
    for name, diffs in (("val ", dval), ("t10k", dtest)):
        shown = ", ".join(f"{x:+.4f}" for x in diffs)
        print(f"{name} bf16 - fp32 per seed: {shown} (mean {statistics.mean(diffs):+.4f})")


if __name__ == "__main__":
    main()
