"""Benchmark of search + pruning on the real mynet task: TPE with ASHA vs random search without pruning.

Usage: ``python bench/pruning.py --budget-minutes M [--arms tpe:asha,random:none] [--seeds 0,1,2]
[--target 0.88] [--rounds R] [--data PATH] [--threads T] [--set key=value ...]``

An arm is a ``sampler:pruner`` pair; for every seed each arm runs a mynet study (same space and data) given
``M`` minutes. The arms take turns in ``R`` slices of ``M / R`` minutes each, so a change in the machine's
load hits all of them alike. Time is each arm's *compute*: the summed durations of its trials (data loading
and slice overhead excluded), counted in trial order. For each arm and seed it prints trials by state,
epochs trained, the best validation accuracy and its test accuracy (information only), the compute until a
completed trial first reaches ``--target`` validation accuracy, and the best value within the compute every
arm got; then, per seed and as the median over seeds, each arm's ratios to the last arm (the baseline):
trials per compute minute and compute to target (baseline / arm; ">" when only the arm reached it, as a
lower bound using the baseline's whole compute).

CPU-heavy: ``--budget-minutes 10`` with three seeds and two arms is an hour of one core.
"""

from __future__ import annotations

import argparse
import statistics
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


def ratios(rows: list[dict]) -> dict[str, tuple[float, float | None, bool]]:
    """Per arm (all but the last, the baseline): trial-rate ratio, time-to-target speed-up, is it a bound."""
    base, found = rows[-1], {}
    for r in rows[:-1]:
        rate = (r["trials"] / max(r["compute"], 1e-9)) / (base["trials"] / max(base["compute"], 1e-9))
        speedup, bound = None, False
        if r["to_target"] and base["to_target"]:
            speedup = base["to_target"] / r["to_target"]
        elif r["to_target"]:
            speedup, bound = base["compute"] / r["to_target"], True
        found[r["arm"]] = (rate, speedup, bound)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, required=True, help="compute per arm, in minutes")
    parser.add_argument("--arms", default="tpe:asha,random:none", help="sampler:pruner pairs, baseline last")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (one study per arm and seed)")
    parser.add_argument("--target", type=float, default=0.88, help="validation accuracy to reach")
    parser.add_argument("--rounds", type=int, default=4, help="slices the arms take turns in")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="space override")
    parser.add_argument("--storage", help="storage URL (default: a fresh temporary SQLite file)")
    args = parser.parse_args()
    arms = [tuple(arm.split(":")) for arm in args.arms.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="rpztune-bench-pruning-"))
    storage = args.storage or f"sqlite:///{folder / 'bench.db'}"
    print(
        f"mynet, arms {args.arms}, seeds {seeds}, {args.budget_minutes:g} min each in {args.rounds} slices, "
        f"target val_accuracy {args.target}, torch threads {torch.get_num_threads()}, overrides "
        f"{args.set or 'none'}; storage {storage}",
        flush=True,
    )
    started = time.perf_counter()
    slice_s = args.budget_minutes * 60 / args.rounds
    per_seed = []
    for seed in seeds:
        for round_number in range(1, args.rounds + 1):
            for sampler, pruner in arms:
                run_study(
                    "mynet",
                    study_name=f"bench-{sampler}-{pruner}-s{seed}",
                    storage=storage,
                    timeout=slice_s,
                    sampler=sampler,
                    pruner=pruner,
                    seed=seed,
                    data=args.data,
                    overrides=args.set,
                    checkpoints=folder / "checkpoints",
                    keep_top=1,
                    device="cpu",
                    threads=args.threads,
                    progress=False,
                )
                print(
                    f"  seed {seed} round {round_number}/{args.rounds}, {sampler}:{pruner}: "
                    f"{time.perf_counter() - started:.0f} s",
                    flush=True,
                )
        studies = {
            f"{sampler}:{pruner}": optuna.load_study(
                study_name=f"bench-{sampler}-{pruner}-s{seed}", storage=storage
            )
            for sampler, pruner in arms
        }
        totals = [compute_curve(s.get_trials(deepcopy=False)) for s in studies.values()]
        horizon = min(curve[-1][0] if curve else 0.0 for curve in totals)
        rows = [summarize(arm, study, args.target, horizon) for arm, study in studies.items()]
        per_seed.append(ratios(rows))
        at = f"best @ {horizon / 60:.1f} min"
        print(f"\nseed {seed} (compute = summed trial seconds; '{at}' = best within every arm's compute)")
        print(
            f"{'arm':13} {'trials':>6} {'done':>5} {'pruned':>6} {'epochs':>6} {'ep/trial':>8} "
            f"{'compute min':>11} {'best val':>8} {'its test':>8} {'min to target':>13} {at:>15}"
        )
        for r in rows:
            to_target = None if r["to_target"] is None else r["to_target"] / 60
            print(
                f"{r['arm']:13} {r['trials']:6d} {r['complete']:5d} {r['pruned']:6d} {r['epochs']:6d} "
                f"{r['per_trial']:8.1f} {r['compute'] / 60:11.1f} {fmt(r['best'], '8.4f')} "
                f"{fmt(r['test'], '8.4f')} {fmt(to_target, '13.1f')} {fmt(r['within'], '15.4f')}"
            )
        for arm, (rate, speedup, bound) in per_seed[-1].items():
            shown = "-" if speedup is None else f"{'>' if bound else ''}{speedup:.1f}"
            print(f"{arm} vs {rows[-1]['arm']}: trials/min x{rate:.1f}, compute to target x{shown}")

    print(f"\nmedian over {len(seeds)} seeds, each arm vs the baseline {args.arms.split(',')[-1]}")
    for arm in per_seed[0]:
        rates = [found[arm][0] for found in per_seed]
        speedups = [found[arm][1] for found in per_seed if found[arm][1] is not None]
        bounds = sum(found[arm][2] for found in per_seed)
        median = "-" if not speedups else f"{statistics.median(speedups):.1f}"
        print(
            f"{arm}: trials/min x{statistics.median(rates):.1f}; compute to target x{median} "
            f"(seeds reaching it: {len(speedups)} of {len(seeds)}, {bounds} of them lower bounds)"
        )
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s; studies kept in {storage}")


if __name__ == "__main__":
    main()
