"""Benchmark of search + pruning on the real mynet task: TPE with ASHA vs random search without pruning.

Usage: ``python bench/pruning.py [--budget-minutes 8] [--arms tpe:asha,random:none] [--seeds 0,1,2]
[--targets 0.88,0.89,0.895] [--rounds R] [--data PATH] [--threads T] [--set key=value ...] [--baseline]
[--storage URL [--analyze]]``

An arm is a ``sampler:pruner`` pair; for every seed each arm runs a mynet study (same space and data, its
own sampler seed) given ``M`` minutes. The arms take turns in ``R`` slices of ``M / R`` minutes each, so a
change in the machine's load hits all of them alike. Time is each arm's *compute*: the summed durations of
its trials (data loading and slice overhead excluded), counted in trial order. For each arm and seed it
prints trials by state, epochs trained, the best validation accuracy and its test accuracy (information
only), the compute until a completed trial first reaches each target validation accuracy, the best value
within the compute every arm got, and for an unpruned arm how well a trial's value at each ASHA rung
predicts its final value (Spearman; the eventual best trial's rank there); then, per seed and as the median
over seeds, each arm's ratios to the last arm (the baseline): trials per compute minute and compute to each
target (baseline / arm; ">" when only the arm reached it, a lower bound using the baseline's whole compute).
``--analyze`` reports the studies already in ``--storage`` without running anything. The arms compare search
algorithms, so neither starts from the task's known-good baseline trial unless ``--baseline`` says so
(``rpztune run`` does by default).

CPU-heavy: the default (8 minutes, three seeds, two arms) is about 50 minutes of one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from search import run_study  # noqa: E402
from search.algorithms import asha_rungs  # noqa: E402


def compute_curve(trials: list[FrozenTrial]) -> list[tuple[float, FrozenTrial]]:
    """(cumulative compute seconds at the trial's end, trial), in trial order; unfinished trials left out."""
    total, curve = 0.0, []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and trial.duration:
            total += trial.duration.total_seconds()
            curve.append((total, trial))
    return curve


def summarize(name: str, study: optuna.Study, targets: list[float], horizon: float) -> dict:
    curve = compute_curve(study.get_trials(deepcopy=False))
    complete = [t for _, t in curve if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    reached = {
        target: next((s for s, t in curve if t.state == TrialState.COMPLETE and t.value >= target), None)
        for target in targets
    }
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


def rung_fidelity(study: optuna.Study) -> pd.DataFrame:
    """How well a trial's validation accuracy at each ASHA rung predicts its final value, over the study's
    completed trials (meaningful for an unpruned arm): Spearman rank correlation, and the rank at that rung
    of the trial that ended best (1 = ASHA's first choice; ASHA keeps the top third)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return pd.DataFrame()
    epochs = max(len(t.intermediate_values) for t in complete)
    curves = pd.DataFrame([t.intermediate_values for t in complete])
    final = pd.Series([t.value for t in complete])
    winner = int(final.idxmax())
    rows = []
    for rung in asha_rungs(epochs):
        at = curves.get(rung)
        if at is None or at.isna().any():
            continue
        rows.append(
            {
                "epoch": rung,
                "spearman": at.corr(final, method="spearman"),
                "best trial's rank": int(at.rank(ascending=False, method="min")[winner]),
                "trials": len(at),
            }
        )
    return pd.DataFrame(rows)


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec`` (e.g. ``"8.4f"``), or a dash of the same width."""
    return format("-", f">{spec.split('.')[0]}") if value is None else format(value, spec)


def ratios(rows: list[dict], target: float) -> dict[str, tuple[float, float | None, bool]]:
    """Per arm (all but the last, the baseline): trial-rate ratio, time-to-target speed-up, is it a bound."""
    base, found = rows[-1], {}
    for r in rows[:-1]:
        rate = (r["trials"] / max(r["compute"], 1e-9)) / (base["trials"] / max(base["compute"], 1e-9))
        mine, theirs = r["to_target"][target], base["to_target"][target]
        speedup, bound = None, False
        if mine and theirs:
            speedup = theirs / mine
        elif mine:
            speedup, bound = base["compute"] / mine, True
        found[r["arm"]] = (rate, speedup, bound)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="compute per arm, in minutes")
    parser.add_argument("--arms", default="tpe:asha,random:none", help="sampler:pruner pairs, baseline last")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (one study per arm and seed)")
    parser.add_argument("--targets", default="0.88,0.89,0.895", help="validation accuracies to reach")
    parser.add_argument("--rounds", type=int, default=4, help="slices the arms take turns in")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="space override")
    parser.add_argument("--baseline", action="store_true", help="start every arm from the baseline trial")
    parser.add_argument("--storage", help="storage URL (default: a fresh temporary SQLite file)")
    parser.add_argument("--analyze", action="store_true", help="only report the studies already in --storage")
    args = parser.parse_args()
    arms = [tuple(arm.split(":")) for arm in args.arms.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    targets = [float(target) for target in args.targets.split(",")]
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="rpztune-bench-pruning-"))
    storage = args.storage or f"sqlite:///{folder / 'bench.db'}"
    print(
        f"mynet, arms {args.arms}, seeds {seeds}, {args.budget_minutes:g} min each in {args.rounds} slices, "
        f"targets {targets}, torch threads {torch.get_num_threads()}, overrides {args.set or 'none'}, "
        f"baseline trial {'yes' if args.baseline else 'no'}; "
        f"storage {storage}",
        flush=True,
    )
    started = time.perf_counter()
    per_seed: list[dict[float, dict]] = []
    for seed in seeds:
        if not args.analyze:
            run_arms(arms, seed, storage, folder, args)
        studies = {
            f"{sampler}:{pruner}": optuna.load_study(
                study_name=f"bench-{sampler}-{pruner}-s{seed}", storage=storage
            )
            for sampler, pruner in arms
        }
        totals = [compute_curve(s.get_trials(deepcopy=False)) for s in studies.values()]
        horizon = min(curve[-1][0] if curve else 0.0 for curve in totals)
        rows = [summarize(arm, study, targets, horizon) for arm, study in studies.items()]
        per_seed.append({target: ratios(rows, target) for target in targets})
        print_seed(seed, rows, targets, horizon, per_seed[-1])
        for arm, study in studies.items():
            if arm.endswith(":none") and not (fidelity := rung_fidelity(study)).empty:
                print(f"{arm}: does a trial's value at an ASHA rung predict its final value?")
                print(fidelity.to_string(index=False, float_format="%.2f"))

    print(f"\nmedian over {len(seeds)} seeds, each arm vs the baseline {args.arms.split(',')[-1]}")
    for arm in per_seed[0][targets[0]]:
        rates = [found[targets[0]][arm][0] for found in per_seed]
        print(f"{arm}: trials per compute minute x{statistics.median(rates):.1f}")
        for target in targets:
            found = [seed_found[target][arm] for seed_found in per_seed]
            speedups = [speedup for _, speedup, _ in found if speedup is not None]
            bounds = sum(bound for _, _, bound in found)
            median = "-" if not speedups else f"{statistics.median(speedups):.1f}"
            print(
                f"  compute to {target}: x{median} (seeds reaching it: {len(speedups)} of {len(seeds)}, "
                f"{bounds} of them lower bounds)"
            )
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s; studies kept in {storage}")


def run_arms(arms: list[tuple[str, ...]], seed: int, storage: str, folder: Path, args) -> None:
    """One study per arm for ``seed``, in ``args.rounds`` interleaved slices.

    Each arm draws from its own seed (TPE's random start-up trials would otherwise be the random arm's
    first trials, and an easy target would be reached by the same trial in both arms).
    """
    started = time.perf_counter()
    for round_number in range(1, args.rounds + 1):
        for index, (sampler, pruner) in enumerate(arms):
            run_study(
                "mynet",
                study_name=f"bench-{sampler}-{pruner}-s{seed}",
                storage=storage,
                timeout=args.budget_minutes * 60 / args.rounds,
                sampler=sampler,
                pruner=pruner,
                seed=1000 * seed + index,
                data=args.data,
                overrides=args.set,
                baseline=args.baseline,
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


def print_seed(seed: int, rows: list[dict], targets: list[float], horizon: float, found: dict) -> None:
    at = f"best @ {horizon / 60:.1f} min"
    print(f"\nseed {seed} (compute = summed trial seconds; '{at}' = best within every arm's compute)")
    reach = " ".join(f"{f'min to {t}':>12}" for t in targets)
    print(
        f"{'arm':13} {'trials':>6} {'done':>5} {'pruned':>6} {'epochs':>6} {'ep/trial':>8} "
        f"{'compute min':>11} {'best val':>8} {'its test':>8} {reach} {at:>15}"
    )
    for r in rows:
        reached = " ".join(
            f"{fmt(None if r['to_target'][t] is None else r['to_target'][t] / 60, '12.1f')}" for t in targets
        )
        print(
            f"{r['arm']:13} {r['trials']:6d} {r['complete']:5d} {r['pruned']:6d} {r['epochs']:6d} "
            f"{r['per_trial']:8.1f} {r['compute'] / 60:11.1f} {fmt(r['best'], '8.4f')} "
            f"{fmt(r['test'], '8.4f')} {reached} {fmt(r['within'], '15.4f')}"
        )
    for target in targets:
        for arm, (rate, speedup, bound) in found[target].items():
            shown = "-" if speedup is None else f"{'>' if bound else ''}{speedup:.1f}"
            print(f"{arm} vs {rows[-1]['arm']}: trials/min x{rate:.1f}, compute to {target} x{shown}")


if __name__ == "__main__":
    main()
