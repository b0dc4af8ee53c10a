"""Benchmark of pruning on the real mynet task: the same study with ASHA, median and no pruning, side by side.

Usage: ``python bench/pruning.py --budget-minutes M [--pruners asha,median,none] [--target 0.91] [--rounds R]
[--data PATH] [--seed S] [--threads T] [--set key=value ...]``

Every arm is a mynet study (TPE, same seed, same space and data) given ``M`` minutes. The arms take turns in
``R`` slices of ``M / R`` minutes each, so a change in the machine's load hits all of them alike. Time is each
arm's *compute*: the summed durations of its trials (data loading and slice overhead excluded), counted in
trial order. For each arm it prints trials by state, epochs trained, epochs per trial, the best validation
accuracy and its test accuracy (information only), the compute to the first trial reaching ``--target``
validation accuracy, and the best value within the compute every arm got (the smallest arm total); then the
ratios of each arm to ``none``.

CPU-heavy: the full comparison is ``--budget-minutes 20`` per arm (about 70 minutes for three arms: a slice
lets its last trial finish). The default target, 0.91, lies above what the first trial (the same in every arm,
same seed) reaches on the lab split, so time to target measures the search, not that one trial.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from search import run_study  # noqa: E402


def compute_curve(trials: list[FrozenTrial]) -> list[tuple[float, FrozenTrial]]:
    """(cumulative compute seconds at the trial's end, trial), in trial order; unfinished trials left out."""
    total, curve = 0.0, []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and trial.duration:
            total += trial.duration.total_seconds()
            curve.append((total, trial))
    return curve


def summarize(name: str, study: optuna.Study, target: float, horizon: float) -> dict:
    curve = compute_curve(study.get_trials(deepcopy=False))
    complete = [t for _, t in curve if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    reached = next((s for s, t in curve if t.state == TrialState.COMPLETE and t.value >= target), None)
    within = [t.value for s, t in curve if s <= horizon and t.state == TrialState.COMPLETE]
    epochs = sum(len(t.intermediate_values) for _, t in curve)
    return {
        "arm": name,
        "trials": len(curve),
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for _, t in curve),
        "epochs": epochs,
        "per_trial": epochs / max(1, len(curve)),
        "compute": curve[-1][0] if curve else 0.0,
        "best": None if best is None else best.value,
        "test": None if best is None else best.user_attrs.get("test_accuracy"),
        "to_target": reached,
        "within": max(within, default=None),
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, required=True, help="compute per arm, in minutes")
    parser.add_argument("--pruners", default="asha,median,none", help="comma-separated arms")
    parser.add_argument("--target", type=float, default=0.91, help="validation accuracy to reach")
    parser.add_argument("--rounds", type=int, default=4, help="slices the arms take turns in")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="space override")
    parser.add_argument("--storage", help="storage URL (default: a fresh temporary SQLite file)")
    args = parser.parse_args()
    arms = args.pruners.split(",")
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="rpztune-bench-pruning-"))
    storage = args.storage or f"sqlite:///{folder / 'bench.db'}"
    print(
        f"mynet, TPE seed {args.seed}, arms {arms}, {args.budget_minutes:g} min each in {args.rounds} "
        f"slices, target val_accuracy {args.target}, torch threads {torch.get_num_threads()}, "
        f"overrides {args.set or 'none'}; storage {storage}",
        flush=True,
    )
    started = time.perf_counter()
    slice_s = args.budget_minutes * 60 / args.rounds
    for round_number in range(1, args.rounds + 1):
        for arm in arms:
            run_study(
                "mynet",
                study_name=f"bench-{arm}",
                storage=storage,
                timeout=slice_s,
                pruner=arm,
                seed=args.seed,
                data=args.data,
                overrides=args.set,
                checkpoints=folder / "checkpoints",
                keep_top=1,
                device="cpu",
                threads=args.threads,
                progress=False,
            )
            print(
                f"  round {round_number}/{args.rounds}, {arm}: {time.perf_counter() - started:.0f} s",
                flush=True,
            )

    studies = {arm: optuna.load_study(study_name=f"bench-{arm}", storage=storage) for arm in arms}
    totals = [compute_curve(s.get_trials(deepcopy=False)) for s in studies.values()]
    horizon = min(curve[-1][0] if curve else 0.0 for curve in totals)
    rows = [summarize(arm, study, args.target, horizon) for arm, study in studies.items()]
    at = f"best @ {horizon / 60:.1f} min"
    print(f"\nper arm (compute = summed trial seconds; '{at}' = best within the compute every arm got)")
    print(
        f"{'arm':8} {'trials':>6} {'done':>5} {'pruned':>6} {'epochs':>6} {'ep/trial':>8} "
        f"{'compute min':>11} {'best val':>8} {'its test':>8} {'min to target':>13} {at:>15}"
    )
    for r in rows:
        to_target = None if r["to_target"] is None else r["to_target"] / 60
        print(
            f"{r['arm']:8} {r['trials']:6d} {r['complete']:5d} {r['pruned']:6d} {r['epochs']:6d} "
            f"{r['per_trial']:8.1f} {r['compute'] / 60:11.1f} {fmt(r['best'], '8.4f')} "
            f"{fmt(r['test'], '8.4f')} {fmt(to_target, '13.1f')} {fmt(r['within'], '15.4f')}"
        )
    base = next((r for r in rows if r["arm"] == "none"), None)
    if base is not None:
        print("\nratios to 'none' (trials per compute minute; compute to target: none / arm)")
        for r in rows:
            if r is base:
                continue
            trial_rate = (r["trials"] / max(r["compute"], 1e-9)) / (
                base["trials"] / max(base["compute"], 1e-9)
            )
            speedup = None
            if r["to_target"] and base["to_target"]:
                speedup = base["to_target"] / r["to_target"]
            print(f"{r['arm']:8} trials/min x{trial_rate:.1f}, time to target x{fmt(speedup, '.1f')}")
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s; studies kept in {storage}")


if __name__ == "__main__":
    main()
