"""Benchmark of search + pruning on the real mynet task: the default search vs random search without pruning.

Usage: ``python bench/pruning.py [--budget-minutes 8] [--arms default,random:none] [--seeds 0,1,2]
[--targets 0.85,0.86,0.87] [--rounds R] [--data PATH] [--threads T] [--set key=value ...] [--baseline]
[--storage URL [--analyze]]``

An arm is a ``sampler:pruner`` pair, or ``default``: the sampler and pruner ``rpztune run mynet`` uses
(``run_study``'s sampler and the task's ``default_pruner``). For every seed each arm runs a mynet study
(same space and data, its own sampler seed) given ``M`` minutes. A trial that completes trains the space's
full ``epochs`` (printed per arm as "top ep") whatever the arm, so ``random:none`` trains every trial at
the default's top rung. The arms take turns in ``R`` slices of ``M / R`` minutes each, so a change in
the machine's load hits all of them alike. Time is each arm's *compute*: the summed durations of its
trials (data loading and slice overhead excluded), counted in trial order; a trial that re-trains on
promotion counts all its training. For each arm and seed it prints trials by state, epochs trained, the
best validation accuracy and its test accuracy (information only), the compute until a completed trial
first reaches each target validation accuracy, the best value within the compute every arm got, and how
well a trial's value at each rung predicts its final value (Spearman over completed trials; the eventual
best trial's rank there; for an unpruned arm at ASHA's rungs of its prefix); then, per seed, as the
median and the worst over seeds, each arm's ratios to the last arm (the baseline): trials per compute
minute and compute to each target (baseline / arm; ">" when only the arm reached it, a lower bound using
the baseline's whole compute; "<" when only the baseline did, an upper bound using the arm's whole
compute), and the oracle's ratio: what a search would get whose first trial were the cheapest completed
trial any arm of the seed saw reach the target (its own compute, rungs included). No search of this space
can count on more, so a target the baseline reaches early caps every arm's speed-up. When the baseline is
``random:none``, one seed's random search is one draw of a geometric wait (its first trials reach a target
by luck or not), so it also prints random search's *expected* compute to each target: its trials pooled over
the seeds, in 4,000 random orders, and each arm's ratio to that median, with how often a random order got
there sooner; and the ceiling of any search that draws like random search and prunes at the default
pruner's first rung: its compute to a target when the rung never errs (each other draw costs the rung's
share of its trial's compute, the first draw to reach the target its whole), and when the screen is free.
A search that learns where to draw (TPE after its start-up trials) can beat it; one that only prunes cannot.
``--analyze``
reports the studies already in ``--storage`` without running anything. The arms compare search algorithms,
so none starts from the task's known-good baseline trial unless ``--baseline`` says so (``rpztune run``
does by default).

CPU-heavy: the default (8 minutes, three seeds, two arms) is about 50 minutes of compute (one trial at a
time, ``--threads`` torch threads).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from objectives import get_task  # noqa: E402
from search import run_study  # noqa: E402
from search.engine.algorithms import asha_rungs, make_pruner  # noqa: E402

TASK = "mynet"
RANDOM_ORDERS = 4000  # orders of the pooled random trials behind random search's expected compute
ARM_SEED_STRIDE = 100_000  # above any seed * 1000 + trial count: arms never share a sampler seed


def parse_arm(text: str) -> tuple[str, str, str | None]:
    """(label, sampler, pruner) of an arm: ``sampler:pruner``, or ``default`` (``rpztune run``'s sampler and
    the task's default pruner, passed as ``None`` so the study gets exactly what a user gets)."""
    if text == "default":
        return text, inspect.signature(run_study).parameters["sampler"].default, None
    sampler, pruner = text.split(":")
    return text, sampler, pruner


def study_name(label: str, seed: int) -> str:
    return f"bench-{label.replace(':', '-')}-s{seed}"


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
    epochs = sum(trained_epochs(t) for _, t in curve)
    return {
        "arm": name,
        "trials": len(curve),
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for _, t in curve),
        "epochs": epochs,
        "per_trial": epochs / max(1, len(curve)),
        "top": max((t.user_attrs.get("best_epoch", 0) for t in complete), default=0),
        "compute": curve[-1][0] if curve else 0.0,
        "best": None if best is None else best.value,
        "test": None if best is None else best.user_attrs.get("test_accuracy"),
        "to_target": reached,
        "within": max(within, default=None),
    }


def trained_epochs(trial: FrozenTrial) -> int:
    """Epochs a trial trained: all its rungs' under the rungs pruner (``epochs_trained``), else one per
    report."""
    return int(trial.user_attrs.get("epochs_trained", len(trial.intermediate_values)))


def rung_values(trial: FrozenTrial, top: int) -> dict[int, float]:
    """A trial's validation accuracy by rung: each rung's complete short schedule (the rungs pruner's
    ``rungs`` records), else its run's prefix at ASHA's rungs (validated on ``val_subset`` images only,
    unless ASHA prunes the study)."""
    if "rungs" in trial.user_attrs:
        return {r["epochs"]: r["val_accuracy"] for r in trial.user_attrs["rungs"] if "val_accuracy" in r}
    return {epoch: value for epoch, value in trial.intermediate_values.items() if epoch in asha_rungs(top)}


def rung_fidelity(study: optuna.Study) -> pd.DataFrame:
    """How well a trial's validation accuracy at each rung below the top predicts its final value, over the
    study's completed trials (all of them for an unpruned arm, the promoted ones for a pruned arm): Spearman
    rank correlation, and the rank at that rung of the trial that ended best (1 = the pruner's first
    choice; successive halving keeps the top third)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return pd.DataFrame()
    top = max(t.user_attrs.get("best_epoch") or max(t.intermediate_values, default=0) for t in complete)
    curves = pd.DataFrame([rung_values(t, top) for t in complete])
    final = pd.Series([t.value for t in complete])
    winner = int(final.idxmax())
    rows = []
    for rung in sorted(curves.columns):
        at = curves[rung]
        if rung >= top or at.isna().any():
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


def cheapest(studies: list[optuna.Study], target: float) -> float | None:
    """Compute of the cheapest completed trial, over ``studies``, whose value reached ``target``: what a
    search that drew it first would spend (``None`` when no trial reached it)."""
    costs = [
        t.duration.total_seconds()
        for study in studies
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value >= target and t.duration
    ]
    return min(costs, default=None)


def random_orders(
    studies: list[optuna.Study], target: float, orders: int = RANDOM_ORDERS, screen: float = 1.0
) -> tuple[np.ndarray, int, int]:
    """Compute until random search without pruning first reaches ``target``, in ``orders`` random orders of
    the pooled finished trials of ``studies`` (the random arm's, every seed: each is an independent draw from
    the space, so any order of them is a random search that could have run). A trial the bench's stop
    interrupted is left out: counted, it would be a draw that cost compute and could not reach anything. An
    order that never reaches it counts the pool's whole compute (a lower bound). With ``screen`` < 1 each
    draw before the first hit costs only that share of its trial: a search drawing like random search whose
    screen (a rung of that share of the epochs) tells without error which draws reach ``target``, and trains
    only those to the end. Returns the sorted seconds, the pool's trials reaching ``target`` and its size."""
    trials = [
        t
        for study in studies
        for _, t in compute_curve(study.get_trials(deepcopy=False))
        if not str(t.user_attrs.get("fail_reason", "")).startswith("interrupted")
    ]
    cost = np.array([t.duration.total_seconds() for t in trials])
    hit = np.array([t.state == TrialState.COMPLETE and t.value >= target for t in trials])
    rng = np.random.default_rng(0)  # the same orders for every screen
    reach = np.empty(orders)
    for i in range(orders):
        order = rng.permutation(len(trials))
        first = np.flatnonzero(hit[order])
        if not first.size:
            reach[i] = cost.sum() * screen
            continue
        reach[i] = cost[order][: first[0]].sum() * screen + cost[order][first[0]]
    return np.sort(reach), int(hit.sum()), len(trials)


def screen_share(studies: list[optuna.Study], pruner: str) -> float | None:
    """The share of a trial's epochs that ``pruner``'s first rung trains, for the pooled trials' budget
    (``None`` for a pruner without rungs)."""
    trials = [t for study in studies for t in study.get_trials(deepcopy=False)]
    top = max(t.user_attrs["config"]["train"]["epochs"] for t in trials if "config" in t.user_attrs)
    plan = getattr(make_pruner(pruner, top), "plan", None)
    return None if plan is None else plan.epochs[0] / top


def print_random_orders(
    per_seed_rows: list[list[dict]], studies: list[optuna.Study], targets: list[float], pruner: str
) -> None:
    """Each arm's compute to each target against random search's *expected* compute to it (the median over
    random orders of the baseline arm's pooled trials, ``random_orders``) rather than one seed's draw: the
    ratio per seed (``<``: an upper bound, the arm never reached it), its median and worst, and how often a
    random order got there sooner than the arm did. Then the ceiling of any search that draws like random
    search and prunes at ``pruner``'s first rung: a screen there that never errs, and one that is free."""
    share = screen_share(studies, pruner)
    print(
        f"\nrandom search without pruning as an estimate: the {len(studies)} seeds' random trials pooled, "
        f"in {RANDOM_ORDERS:,} random orders (compute to a target: median over the orders, 10-90 % range)"
    )
    for target in targets:
        reach, hits, size = random_orders(studies, target)
        median = float(np.median(reach))
        low, high = np.percentile(reach, [10, 90]) / 60
        print(
            f"  {target}: {hits} of {size} pooled trials reach it; random search's compute to it "
            f"{median / 60:.1f} min ({low:.1f}-{high:.1f})"
        )
        bound = ">" if not hits else ""  # no pooled trial reaches it: random's figure is a lower bound
        for arm in [r["arm"] for r in per_seed_rows[0][:-1]]:
            cells, speedups = [], []  # (speedup, mark) per seed
            for rows in per_seed_rows:
                row = next(r for r in rows if r["arm"] == arm)
                mine = row["to_target"][target]
                if mine is None:  # an upper bound: as if it reached the target with its last trial
                    speedups.append((median / max(row["compute"], 1e-9), "<"))
                    cells.append(f"<x{speedups[-1][0]:.1f} (not in {row['compute'] / 60:.1f} min)")
                    continue
                speedups.append((median / mine, bound))
                sooner = float(np.searchsorted(reach, mine)) / len(reach)
                sooner_text = f"random sooner in {sooner:.0%}"
                cells.append(f"{bound}x{speedups[-1][0]:.1f} ({mine / 60:.1f} min, {sooner_text})")
            each, worst = "; ".join(cells), marked(min(speedups))
            print(f"    {arm}: median {marked_median(speedups)}, worst {worst}; per seed {each}")
        if share is not None and hits:
            ceiling = [float(np.median(random_orders(studies, target, screen=s)[0])) for s in (share, 0.0)]
            print(
                f"    ceiling of a search drawing like random search: a screen at {share:.0%} of the epochs "
                f"that never errs {ceiling[0] / 60:.1f} min (x{median / ceiling[0]:.1f}); "
                f"a free one {ceiling[1] / 60:.1f} min (x{median / ceiling[1]:.1f})"
            )


def marked(value: tuple[float, str]) -> str:
    """A speed-up with its bound mark: ``<x0.7`` (an upper bound), ``>x3.0`` (a lower bound), ``x2.1``."""
    return f"{value[1]}x{value[0]:.1f}"


def marked_median(values: list[tuple[float, str]]) -> str:
    """The median of marked speed-ups; a bound when a middle value is one (an even count averages the two
    middle values, and is a bound when they bound the same way, unknown ``?`` when they bound opposite)."""
    ordered = sorted(values)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    marks = {mark for _, mark in middle} - {""}
    mark = "?" if len(marks) > 1 else marks.pop() if marks else ""
    return marked((statistics.mean(v for v, _ in middle), mark))


def ratios(rows: list[dict], target: float) -> dict[str, tuple[float, float | None, str]]:
    """Per arm (all but the last, the baseline): trial-rate ratio, compute-to-target speed-up (baseline /
    arm; ``None`` when neither reached the target) and its mark: ``""`` exact, ``">"`` a lower bound (only
    the arm reached it: the baseline's whole compute), ``"<"`` an upper bound (only the baseline did)."""
    base, found = rows[-1], {}
    for r in rows[:-1]:
        rate = (r["trials"] / max(r["compute"], 1e-9)) / (base["trials"] / max(base["compute"], 1e-9))
        mine, theirs = r["to_target"][target], base["to_target"][target]
        speedup, mark = None, ""
        if mine and theirs:
            speedup = theirs / mine
        elif mine:
            speedup, mark = base["compute"] / mine, ">"
        elif theirs:
            speedup, mark = theirs / max(r["compute"], 1e-9), "<"
        found[r["arm"]] = (rate, speedup, mark)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="compute per arm, in minutes")
    parser.add_argument(
        "--arms", default="default,random:none", help="sampler:pruner pairs or 'default', baseline last"
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (one study per arm and seed)")
    parser.add_argument("--targets", default="0.85,0.86,0.87", help="validation accuracies to reach")
    parser.add_argument("--rounds", type=int, default=4, help="slices the arms take turns in")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="space override")
    parser.add_argument("--baseline", action="store_true", help="start every arm from the baseline trial")
    parser.add_argument("--storage", help="storage URL (default: a fresh temporary SQLite file)")
    parser.add_argument("--analyze", action="store_true", help="only report the studies already in --storage")
    args = parser.parse_args()
    arms = [parse_arm(arm) for arm in args.arms.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    targets = [float(target) for target in args.targets.split(",")]
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="rpztune-bench-pruning-"))
    storage = args.storage or f"sqlite:///{folder / 'bench.db'}"
    task = get_task(TASK)
    shown = [f"{label} = {sampler}:{pruner or task.default_pruner}" for label, sampler, pruner in arms]
    print(
        f"{TASK}, arms {', '.join(shown)}, seeds {seeds}, "
        f"{args.budget_minutes:g} min each in {args.rounds} slices, "
        f"targets {targets}, torch threads {torch.get_num_threads()}, overrides {args.set or 'none'}, "
        f"baseline trial {'yes' if args.baseline else 'no'}; "
        f"storage {storage}",
        flush=True,
    )
    started = time.perf_counter()
    per_seed: list[dict[float, dict]] = []
    seed_rows: list[list[dict]] = []
    random_arm: list[optuna.Study] = []  # the baseline arm's studies when it is random search, unpruned
    for seed in seeds:
        if not args.analyze:
            run_arms(arms, seed, storage, folder, args)
        studies = {
            label: optuna.load_study(study_name=study_name(label, seed), storage=storage)
            for label, *_ in arms
        }
        totals = [compute_curve(s.get_trials(deepcopy=False)) for s in studies.values()]
        horizon = min(curve[-1][0] if curve else 0.0 for curve in totals)
        rows = [summarize(arm, study, targets, horizon) for arm, study in studies.items()]
        per_seed.append({target: ratios(rows, target) for target in targets})
        seed_rows.append(rows)
        if arms[-1][1:] == ("random", "none"):
            random_arm.append(studies[arms[-1][0]])
        for target in targets:  # the oracle: the speed-up of drawing the cheapest trial that reached it first
            best, theirs = cheapest(list(studies.values()), target), rows[-1]["to_target"][target]
            per_seed[-1][target]["oracle"] = (
                1.0,
                None if best is None else (theirs or rows[-1]["compute"]) / best,
                "" if theirs or best is None else ">",
            )
        print_seed(seed, rows, targets, horizon, per_seed[-1])
        for arm, study in studies.items():
            if not (fidelity := rung_fidelity(study)).empty:
                print(f"{arm}: does a completed trial's value at a rung predict its final value?")
                print(fidelity.to_string(index=False, float_format="%.2f"))

    print(f"\nover {len(seeds)} seeds, each arm vs the baseline {arms[-1][0]} (baseline compute / arm's)")
    for arm in per_seed[0][targets[0]]:
        rates = [found[targets[0]][arm][0] for found in per_seed]
        if arm == "oracle":
            print("oracle (the cheapest trial to reach the target, drawn first): no search can count on more")
        else:
            print(f"{arm}: trials per compute minute x{statistics.median(rates):.1f} (median)")
        for target in targets:
            found = [seed_found[target][arm] for seed_found in per_seed]
            known = [(speedup, mark) for _, speedup, mark in found if speedup is not None]
            each = " ".join("-" if s is None else f"{m}{s:.1f}" for _, s, m in found)
            median = "-" if not known else f"{statistics.median(s for s, _ in known):.1f}"
            worst = "-" if not known else "{1}{0:.1f}".format(*min(known))
            print(
                f"  compute to {target}: median x{median}, worst x{worst}; per seed {each} "
                f"(>: only the arm reached it, <: only the baseline, -: neither)"
            )
    if random_arm and len(arms) > 1:
        print_random_orders(seed_rows, random_arm, targets, task.default_pruner)
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s; studies kept in {storage}")


def run_arms(arms: list[tuple[str, str, str | None]], seed: int, storage: str, folder: Path, args) -> None:
    """One study per arm for ``seed``, in ``args.rounds`` interleaved slices.

    Each arm draws from its own seed (TPE's random start-up trials would otherwise be the random arm's
    first trials, and an easy target would be reached by the same trial in both arms). A worker re-seeds
    every slice with ``seed + its trial count``, so the arms' seeds lie ``ARM_SEED_STRIDE`` apart: one
    apart, an arm one trial ahead drew the other's start-up configurations again.
    """
    started = time.perf_counter()
    for round_number in range(1, args.rounds + 1):
        for index, (label, sampler, pruner) in enumerate(arms):
            run_study(
                TASK,
                study_name=study_name(label, seed),
                storage=storage,
                timeout=args.budget_minutes * 60 / args.rounds,
                sampler=sampler,
                pruner=pruner,
                seed=1000 * seed + ARM_SEED_STRIDE * index,
                data=args.data,
                overrides=args.set,
                baseline=args.baseline,
                checkpoints=folder / "checkpoints",
                keep_top=1,
                device="cpu",
                threads=args.threads,
                progress=False,
                timed_trials=False,  # a slice stops new trials only: the arms run as one untimed study
            )
            print(
                f"  seed {seed} round {round_number}/{args.rounds}, {label}: "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )


def print_seed(seed: int, rows: list[dict], targets: list[float], horizon: float, found: dict) -> None:
    at = f"best @ {horizon / 60:.1f} min"
    print(f"\nseed {seed} (compute = summed trial seconds; '{at}' = best within every arm's compute)")
    reach = " ".join(f"{f'min to {t}':>12}" for t in targets)
    print(
        f"{'arm':13} {'trials':>6} {'done':>5} {'pruned':>6} {'epochs':>6} {'ep/trial':>8} {'top ep':>6} "
        f"{'compute min':>11} {'best val':>8} {'its test':>8} {reach} {at:>15}"
    )
    for r in rows:
        reached = " ".join(
            f"{fmt(None if r['to_target'][t] is None else r['to_target'][t] / 60, '12.1f')}" for t in targets
        )
        print(
            f"{r['arm']:13} {r['trials']:6d} {r['complete']:5d} {r['pruned']:6d} {r['epochs']:6d} "
            f"{r['per_trial']:8.1f} {r['top']:6d} {r['compute'] / 60:11.1f} {fmt(r['best'], '8.4f')} "
            f"{fmt(r['test'], '8.4f')} {reached} {fmt(r['within'], '15.4f')}"
        )
    for target in targets:
        for arm, (rate, speedup, mark) in found[target].items():
            shown = "-" if speedup is None else f"{mark}{speedup:.1f}"
            rated = "" if arm == "oracle" else f"trials/min x{rate:.1f}, "
            print(f"{arm} vs {rows[-1]['arm']}: {rated}compute to {target} x{shown}")


if __name__ == "__main__":
    main()
