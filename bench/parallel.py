"""Trials per hour with 1 vs 2 worker processes on numpy-mlp, and the per-trial overhead of the engine.

Both runs do the same work per trial: the architecture and epochs are fixed, TPE searches only the
optimiser's knobs (which do not change the FLOPs), pruning is off. Runs alternate (1, 2, 1, 2, ...) and
the medians are compared. The overhead is everything a trial spends outside ``nn_numpy.train``
(sampler, SQLite writes of params/reports/attrs, checkpoint, objective set-up), as a share of its wall time,
split by part: each part's own time (a storage call made by the sampler counts as storage), measured inside
``study.optimize`` of one in-process worker (TPE + ASHA on SQLite).

    python bench/parallel.py [--trials 40] [--repeats 2] [--data ../shared/data]
    python bench/parallel.py --overhead-only --compare-with ../main [--repeats 3]

``--compare-with TREE`` runs the overhead part in fresh processes alternately on this checkout's code and
on TREE's (``PYTHONPATH``), with this script's instrumentation, and prints both splits and their ratio.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import optuna

import objectives.numpy_mlp as numpy_mlp_objective
import search.checkpoints
from search.study import run_study

PARTS = ("training", "storage", "sampler", "pruner", "checkpoint", "set-up/other")

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


class PartTimer:
    """Each part's own time on the main thread: a timed call inside another part's call is taken out of
    the outer part's time (a storage read made by the sampler counts as storage, not sampler)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._stack: list[list[Any]] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Time calls of ``owner.name`` (a class's method or a module's function) as ``part``."""
        inner = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if not inspect.isfunction(inner):
            return  # no such function in this code tree (or a static method): nothing to time there

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return inner(*args, **kwargs)  # the heartbeat thread runs beside the trial
            self._push(part)
            try:
                return inner(*args, **kwargs)
            finally:
                self._pop()

        self._undo.append((owner, name, inner))
        setattr(owner, name, timed)

    def restore(self) -> None:
        """Undo every wrap."""
        for owner, name, inner in reversed(self._undo):
            setattr(owner, name, inner)
        self._undo.clear()

    def _push(self, part: str) -> None:
        now = time.perf_counter()
        if self._stack:
            self.totals[self._stack[-1][0]] += now - self._stack[-1][1]
        self._stack.append([part, now])

    def _pop(self) -> None:
        now = time.perf_counter()
        part, started = self._stack.pop()
        self.totals[part] += now - started
        if self._stack:
            self._stack[-1][1] = now


def _instrument(timer: PartTimer) -> None:
    timer.wrap(optuna.Study, "optimize", "set-up/other")  # the root: what no other part claims
    timer.wrap(numpy_mlp_objective, "train", "training")
    timer.wrap(numpy_mlp_objective, "save_model", "checkpoint")
    timer.wrap(search.checkpoints.KeepTopCheckpoints, "__call__", "checkpoint")
    for cls in (optuna.samplers.TPESampler, optuna.samplers.RandomSampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
            timer.wrap(cls, name, "sampler")
        for name in ("before_trial", "after_trial"):
            timer.wrap(cls, name, "sampler")
    for cls in (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.NopPruner):
        timer.wrap(cls, "prune", "pruner")
    for name, member in list(vars(optuna.storages.RDBStorage).items()):
        if callable(member) and not name.startswith("__"):
            timer.wrap(optuna.storages.RDBStorage, name, "storage")
    timer.wrap(optuna.storages, "fail_stale_trials", "storage")
    # rpztune's own batched writes (absent from older code trees: then nothing is wrapped)
    write_behind = _try_import("search.write_behind")
    if write_behind is not None:
        timer.wrap(write_behind.WriteBehindStorage, "_flush", "storage")


def _try_import(name: str) -> Any:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def overhead_parts(n_trials: int, data: str, folder: Path) -> dict[str, float]:
    """Run one in-process worker (TPE + ASHA on SQLite) with its parts timed; return seconds per trial of
    each part and of the whole (``"trial"``), and the number of epochs trained per trial."""
    epochs = []
    inner_epoch = numpy_mlp_objective.TrialContext.report

    def counting_report(self: Any, trial: Any, value: float, epoch: int) -> None:
        epochs.append(epoch)
        return inner_epoch(self, trial, value, epoch)

    storage = f"sqlite:///{folder / f'overhead-{time.time_ns()}.db'}"
    timer = PartTimer()
    _instrument(timer)
    numpy_mlp_objective.TrialContext.report = counting_report
    try:
        run_study("numpy-mlp", storage=storage, n_trials=n_trials, seed=0, data=data, overrides=FIXED)
    finally:
        numpy_mlp_objective.TrialContext.report = inner_epoch
        timer.restore()
    per_trial = {part: seconds / n_trials for part, seconds in timer.totals.items()}
    per_trial["trial"] = sum(timer.totals.values()) / n_trials
    per_trial["epochs"] = len(epochs) / n_trials
    return per_trial


def print_parts(label: str, parts: dict[str, float]) -> None:
    """One line: ms per trial, the share outside training, and each part's ms per trial."""
    share = 1 - parts["training"] / parts["trial"]
    split = " | ".join(f"{part} {parts[part] * 1000:.1f}" for part in PARTS)
    print(
        f"  {label}: {parts['trial'] * 1000:.1f} ms per trial ({parts['epochs']:.2f} epochs), "
        f"{share:.1%} outside training; ms per trial: {split}",
        flush=True,
    )


def compare_overhead(other: str, n_trials: int, repeats: int, data: str) -> None:
    """The overhead split of this checkout vs ``other`` (a code tree), alternately in fresh processes."""
    trees = {"this checkout": str(Path(__file__).resolve().parents[1]), other: str(Path(other).resolve())}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(repeats):
        for name, tree in trees.items():
            result = subprocess.run(
                [sys.executable, __file__, "--overhead-json", "--trials", str(n_trials), "--data", data],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": tree},
            )
            if result.returncode != 0:
                raise SystemExit(f"the overhead run on {tree} failed:\n{result.stderr}")
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print_parts(name, runs[name][-1])
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(f"numpy-mlp overhead, {n_trials} trials per run, median of {repeats} runs each:")
    for name, parts in median.items():
        print_parts(name, parts)
    mine, base = median.values()
    outside = [p["trial"] - p["training"] for p in (mine, base)]
    print(
        f"  ratio this checkout / {other}: time per trial {mine['trial'] / base['trial']:.2f}x, "
        f"time outside training per trial {outside[0] / outside[1]:.2f}x"
    )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--overhead-only", action="store_true", help="skip the trials-per-hour runs")
    parser.add_argument("--compare-with", metavar="TREE", help="another checkout to measure the overhead of")
    parser.add_argument("--overhead-json", action="store_true", help=argparse.SUPPRESS)  # one child run
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.overhead_json:
            print(json.dumps(overhead_parts(args.trials, args.data, folder)))
            return
        if args.compare_with:
            compare_overhead(args.compare_with, args.trials, args.repeats, args.data)
        else:
            parts = overhead_parts(args.trials, args.data, folder)
            print_parts("in-process worker, TPE + ASHA on SQLite", parts)
        if args.overhead_only:
            return
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



if __name__ == "__main__":
    main()
