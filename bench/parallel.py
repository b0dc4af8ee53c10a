"""Trials per hour with 1 vs 2 worker processes on numpy-mlp, and the per-trial overhead of the engine.

Both runs do the same work per trial: the architecture and epochs are fixed, TPE searches only the
optimiser's knobs (which do not change the FLOPs), pruning is off. Runs alternate (1, 2, 1, 2, ...) and
the medians are compared.

The overhead is a trial's wall time (inside ``study.optimize``) minus its training and evaluation (each
fold's epochs of training + validation, ``nn_numpy.Trainer.step``, and the test figure), as a share of its
wall time, split by part: storage (SQLite reads and writes of params, reports, attributes, state), sampler,
pruner, checkpoint (writing it, keep-top clean-up), set-up (the objective's own code: folds, data, models)
and other (Optuna's loop and callbacks). Each part counts its own time: a storage call made by the sampler
counts as storage. It is measured in one in-process worker with numpy-mlp's default sampler and pruner.

    python bench/parallel.py [--trials 40] [--repeats 2] [--data ../shared/data]
    python bench/parallel.py --overhead-only --compare-with ../main [--repeats 3] [--space default]

``--compare-with TREE`` runs the overhead part in fresh processes alternately on this checkout's code and
on TREE's (``PYTHONPATH``), with this script's instrumentation, and prints the parts side by side.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

import nn_numpy
import objectives
import objectives.numpy_mlp.objective as numpy_mlp_objective
import search.engine.checkpoints
from objectives.optuna_internals import CachedStorage  # noqa: E402
from search.engine.study import run_study

PARTS = ("training", "storage", "sampler", "pruner", "checkpoint", "set-up", "other")

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
    """Each part's own time on the main thread within the root calls (the trials): a timed call inside
    another part's call is taken out of the outer part's time (a storage read made by the sampler counts
    as storage, not sampler); calls outside a root call (creating the study) are not counted."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._stack: list[list[Any]] = []
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, part: str, *, root: bool = False) -> None:
        """Time calls of ``owner.name`` (a class's method or a module's function) as ``part``."""
        inner = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if not inspect.isfunction(inner):
            return  # no such function in this code tree (or a static method): nothing to time there
        self._undo.append(lambda: setattr(owner, name, inner))
        setattr(owner, name, self._timed(inner, part, root))

    def wrap_task_objective(self, task: Any, part: str) -> None:
        """Time ``task.objective`` (a frozen dataclass field) as ``part``."""
        inner = task.objective
        self._undo.append(lambda: object.__setattr__(task, "objective", inner))
        object.__setattr__(task, "objective", self._timed(inner, part, False))

    def _timed(self, inner: Callable[..., Any], part: str, root: bool) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread() or not (root or self._stack):
                return inner(*args, **kwargs)  # the heartbeat thread runs beside the trial
            self._push(part)
            try:
                return inner(*args, **kwargs)
            finally:
                self._pop()

        return timed

    def restore(self) -> None:
        """Undo every wrap."""
        for undo in reversed(self._undo):
            undo()
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
    timer.wrap(
        optuna.Study, "optimize", "other", root=True
    )  # the root: Optuna's loop, callbacks, what no part claims
    task = objectives.get_task("numpy-mlp")
    timer.wrap_task_objective(task, "set-up")  # the objective's own code: drawing folds, copying data, ...
    # training and evaluation: an epoch of training + validation, the test figure (and older trees' train())
    timer.wrap(nn_numpy.Trainer, "step", "training")
    timer.wrap(numpy_mlp_objective, "train", "training")
    timer.wrap(numpy_mlp_objective, "_error", "training")
    timer.wrap(numpy_mlp_objective, "save_model", "checkpoint")
    timer.wrap(search.checkpoints.KeepTopCheckpoints, "__call__", "checkpoint")
    for cls in (optuna.samplers.TPESampler, optuna.samplers.RandomSampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
            timer.wrap(cls, name, "sampler")
        for name in ("before_trial", "after_trial"):
            timer.wrap(cls, name, "sampler")
    for cls in (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.NopPruner):
        timer.wrap(cls, "prune", "pruner")
    storages = [optuna.storages.RDBStorage, CachedStorage]
    # rpztune's own storage layer (absent from old trees)
    write_behind = _try_import("search.engine.write_behind")
    if write_behind is not None:
        storages += [
            c for c in vars(write_behind).values() if isinstance(c, type) and issubclass(c, CachedStorage)
        ]
    for cls in dict.fromkeys(storages):
        for name, member in list(vars(cls).items()):
            if callable(member) and not name.startswith("__"):
                timer.wrap(cls, name, "storage")
    timer.wrap(optuna.storages, "fail_stale_trials", "storage")


def _try_import(name: str) -> Any:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def overhead_parts(n_trials: int, data: str, folder: Path, space: str = "fixed") -> dict[str, float]:
    """Run one in-process worker (the task's default sampler and pruner on SQLite) with its parts timed;
    return seconds per trial of each part and of the whole (``"trial"``), and the epochs trained per trial.

    Args:
        space: ``"fixed"``: the architecture and epochs of :data:`FIXED`; ``"default"``: the task's space.
    """
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
        overrides = FIXED if space == "fixed" else []
        run_study("numpy-mlp", storage=storage, n_trials=n_trials, seed=0, data=data, overrides=overrides)
    finally:
        numpy_mlp_objective.TrialContext.report = inner_epoch
        timer.restore()
    per_trial = {part: seconds / n_trials for part, seconds in timer.totals.items()}
    per_trial["trial"] = sum(timer.totals.values()) / n_trials
    per_trial["epochs"] = len(epochs) / n_trials
    return per_trial


def outside_share(parts: dict[str, float]) -> float:
    """The share of a trial's wall time spent outside training and evaluation."""
    return 1 - parts["training"] / parts["trial"]


def print_parts(label: str, parts: dict[str, float]) -> None:
    """One line: ms per trial, the share outside training, and each part's ms per trial."""
    split = " | ".join(f"{part} {parts[part] * 1000:.1f}" for part in PARTS)
    print(
        f"  {label}: {parts['trial'] * 1000:.1f} ms per trial ({parts['epochs']:.2f} epochs), "
        f"{outside_share(parts):.1%} outside training; ms per trial: {split}",
        flush=True,
    )


def print_table(columns: dict[str, dict[str, float]]) -> None:
    """The parts side by side: ms per trial in each column, the first column's ratio to the second."""
    names = list(columns)
    width = max(14, *(len(name) for name in names))
    print(f"  {'ms per trial':16s}" + "".join(f"{name:>{width + 2}s}" for name in names) + "     ratio")
    mine, base = columns[names[0]], columns[names[-1]]
    for part in (*PARTS, "trial"):
        ratio = f"{mine[part] / base[part]:9.2f}x" if base[part] > 0 else " " * 10
        cells = "".join(f"{columns[name][part] * 1000:{width + 2}.1f}" for name in names)
        print(f"  {part:16s}{cells}{ratio}")
    outside = [columns[name]["trial"] - columns[name]["training"] for name in names]
    cells = "".join(f"{value * 1000:{width + 2}.1f}" for value in outside)
    print(f"  {'outside training':16s}{cells}{outside[0] / outside[-1]:9.2f}x")
    cells = "".join(f"{columns[name]['share']:{width + 2}.1%}" for name in names)
    print(f"  {'share outside':16s}{cells}", flush=True)


def compare_overhead(other: str, n_trials: int, repeats: int, data: str, space: str) -> None:
    """The overhead split of this checkout vs ``other`` (a code tree), alternately in fresh processes."""
    trees = {"this checkout": str(Path(__file__).resolve().parents[1]), other: str(Path(other).resolve())}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    command = [sys.executable, __file__, "--overhead-json", "--trials", str(n_trials), "--data", data]
    for _ in range(repeats):
        for name, tree in trees.items():
            result = subprocess.run(
                [*command, "--space", space],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": tree},
            )
            if result.returncode != 0:
                raise SystemExit(f"the overhead run on {tree} failed:\n{result.stderr}")
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print_parts(name, runs[name][-1])
    median = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        | {"share": statistics.median(outside_share(r) for r in rs)}
        for name, rs in runs.items()
    }
    print(f"numpy-mlp ({space} space) overhead, {n_trials} trials per run, median of {repeats} runs each:")
    print_table(median)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--overhead-only", action="store_true", help="skip the trials-per-hour runs")
    parser.add_argument(
        "--space",
        choices=("fixed", "default"),
        default="fixed",
        help="overhead trials of one fixed cost, or of the task's own space (40 epochs, any size)",
    )
    parser.add_argument("--compare-with", metavar="TREE", help="another checkout to measure the overhead of")
    parser.add_argument("--overhead-json", action="store_true", help=argparse.SUPPRESS)  # one child run
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.overhead_json:
            print(json.dumps(overhead_parts(args.trials, args.data, folder, args.space)))
            return
        if args.compare_with:
            compare_overhead(args.compare_with, args.trials, args.repeats, args.data, args.space)
        else:
            parts = overhead_parts(args.trials, args.data, folder, args.space)
            print_parts(
                f"in-process worker, numpy-mlp's default TPE and pruner on SQLite, {args.space} space", parts
            )
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
