"""Trials per hour with 1 vs 2 worker processes on numpy-mlp, and the per-trial overhead of the engine.

Both runs do the same work per trial: the architecture and epochs are fixed, TPE searches only the
optimiser's knobs (which do not change the FLOPs), pruning is off. Runs alternate (1, 2, 1, 2, ...) and
the medians are compared. The overhead is everything a trial spends outside ``nn_numpy.train``
(sampler, SQLite writes of params/reports/attrs, checkpoint, objective set-up), as a share of its wall time.

    python bench/parallel.py [--trials 40] [--repeats 2] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna

import objectives.numpy_mlp as numpy_mlp_objective
from search.study import run_study

FIXED = [
    "depth=1",
    "width=128",
    "activation=relu",
    "init=he",
    "loss=bce",
    "batch_size=32",
    "epochs=8",
    "augment_shift=0",
    "dtype=float32",
]


def trials_per_hour(workers: int, threads: int, n_trials: int, data: str, folder: Path) -> float:
    """Run a fresh study of ``n_trials`` over ``workers`` processes; return its trials per hour."""
    storage = f"sqlite:///{folder / f'w{workers}-{time.time_ns()}.db'}"
    summary = run_study(
        "numpy-mlp",
        storage=storage,
        n_trials=n_trials,
        pruner="none",
        seed=0,
        data=data,
        overrides=FIXED,
        workers=workers,
        threads=threads,
        progress=False,
    )
    assert sum(summary.counts.values()) == n_trials, summary.counts
    return n_trials / _trial_span(storage) * 3600


def _trial_span(storage: str) -> float:
    # From the first trial's start to the last trial's end: worker start-up (imports, data) is a one-off.
    trials = optuna.load_study(study_name="numpy-mlp", storage=storage).trials
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return (end - start).total_seconds()


def overhead_share(n_trials: int, data: str, folder: Path) -> tuple[float, float]:
    """Run one in-process worker with ``train`` timed; return (seconds per trial, share outside training)."""
    inner = numpy_mlp_objective.train
    spent = []

    def timed_train(*args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    storage = f"sqlite:///{folder / 'overhead.db'}"
    numpy_mlp_objective.train = timed_train
    try:
        run_study("numpy-mlp", storage=storage, n_trials=n_trials, seed=0, data=data, overrides=FIXED)
    finally:
        numpy_mlp_objective.train = inner
    wall = _trial_span(storage)
    return wall / n_trials, 1 - sum(spent) / wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        setups = {
            "1 worker, 1 thread": (1, 1),
            "1 worker, 2 threads": (1, 2),
            "2 workers, 1 thread each": (2, 1),
        }
        rates: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(args.repeats):
            for name, (workers, threads) in setups.items():
                rates[name].append(trials_per_hour(workers, threads, args.trials, args.data, folder))
                print(f"  {name}: {rates[name][-1]:8.0f} trials/hour", flush=True)
        median = {name: statistics.median(values) for name, values in rates.items()}
        print(f"numpy-mlp, {args.trials} fixed-cost trials per run, median of {args.repeats} runs each:")
        for name, value in median.items():
            print(f"  {name:26s} {value:8.0f} trials/hour")
        base = median["1 worker, 1 thread"]
        print(
            f"  ratio 2 workers / 1 worker (1 thread each): {median['2 workers, 1 thread each'] / base:.2f}x"
        )
        print(f"  ratio 1 worker with 2 threads / 1 thread:   {median['1 worker, 2 threads'] / base:.2f}x")

        per_trial, share = overhead_share(args.trials, args.data, folder)
        print(f"in-process worker, TPE + ASHA on SQLite: {per_trial * 1000:.0f} ms per trial;")
        print(f"  outside nn_numpy.train (sampler, storage, pruner, checkpoint, set-up): {share:.1%}")


if __name__ == "__main__":
    main()
