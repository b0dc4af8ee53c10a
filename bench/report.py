"""Benchmark of HTML report generation for synthetic studies of 100 and 1,000 trials in SQLite.

Usage: ``python bench/report.py [--trials 100 1000] [--keep DIR]``

Each study looks like a numpy-mlp study (conditional widths, log-scaled and categorical parameters, 20-epoch
curves, ~70% pruned by an ASHA-like rule, ~2% failed, one running) but is written directly with
``study.add_trials`` (no training), each size in its own fresh SQLite file in a temporary folder (or
``--keep DIR``). Prints, per size, seconds to: create the study; load it (trials and curves frames, fANOVA
importances); build the page (figures, HTML); and the whole ``write_reports`` as ``rpztune report`` runs
it (load, page, index, atomic writes), with the page's size (plotly.js inline: ~4.6 MiB of it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import plotly
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

try:
    import reports
except ModuleNotFoundError:  # run from a checkout without rpztune installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import reports

EPOCHS = 20
RUNGS = (1, 3, 9)
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")


def synthetic_trials(n_trials: int, seed: int = 0) -> list[FrozenTrial]:
    """``n_trials`` finished-looking numpy-mlp trials (the last one RUNNING), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2025, 1, 1, 9, 0, 0)
    trials = []
    for number in range(n_trials):
        depth = int(rng.integers(0, 4))
        params: dict = {"depth": depth}
        dists: dict = {"depth": IntDistribution(0, 3)}
        for i in range(1, depth + 1):
            params[f"width_{i}"] = int(np.exp(rng.uniform(np.log(16), np.log(512))))
            dists[f"width_{i}"] = IntDistribution(16, 512, log=True)
        params["activation"] = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
        dists["activation"] = CategoricalDistribution(ACTIVATIONS)
        params["lr"] = float(np.exp(rng.uniform(np.log(1e-3), 0.0)))
        dists["lr"] = FloatDistribution(1e-3, 1.0, log=True)
        params["momentum"] = float(rng.uniform(0.0, 0.95))
        dists["momentum"] = FloatDistribution(0.0, 0.95)
        params["batch_size"] = int(rng.choice([16, 32, 64, 128]))
        dists["batch_size"] = CategoricalDistribution((16, 32, 64, 128))
        final = 0.02 + 0.1 * abs(math.log10(params["lr"]) + 1.2) + 0.03 * (params["activation"] == "sigmoid")
        final += float(rng.normal(0, 0.01))
        curve = [
            max(0.0, final + 0.4 * math.exp(-e / 2.5) + float(rng.normal(0, 0.005))) for e in range(EPOCHS)
        ]
        stop = EPOCHS
        for rung in RUNGS:
            if rng.random() < 0.2 + min(0.3, final * 1.5):
                stop = rung
                break
        seconds_per_epoch = 0.2 + 0.001 * sum(params.get(f"width_{i}", 0) for i in range(1, 4))
        state = TrialState.PRUNED if stop < EPOCHS else TrialState.COMPLETE
        if rng.random() < 0.02:
            state, stop = TrialState.FAIL, int(rng.integers(1, EPOCHS))
        if number == n_trials - 1:
            state, stop = TrialState.RUNNING, 2
        val_error = curve[:stop]
        attrs: dict = {
            "config": {**params, "epochs": EPOCHS},
            "curves": {
                "train_loss": [v * 0.8 for v in val_error],
                "val_loss": [v * 1.1 for v in val_error],
                "val_error": val_error,
            },
        }
        system: dict = {}
        value = None
        if state == TrialState.COMPLETE:
            best = int(np.argmin(val_error))
            value = val_error[best]
            attrs.update(best_epoch=best + 1, test_error=value + 0.003, n_test=1991)
            attrs["checkpoint"] = f"trial-{number:05d}.npz"
        elif state == TrialState.PRUNED:
            value = val_error[-1]
            attrs.update(pruned_epoch=stop, prune_reason=f"pruned at epoch {stop} with val_error {value:.4f}")
        elif state == TrialState.FAIL:
            system["fail_reason"] = "Traceback (most recent call last):\nFloatingPointError: overflow"
        duration = dt.timedelta(seconds=seconds_per_epoch * stop)
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=value,
                values=None,
                datetime_start=start,
                datetime_complete=None if state == TrialState.RUNNING else start + duration,
                params=params,
                distributions=dists,
                user_attrs=attrs,
                system_attrs=system,
                intermediate_values={e + 1: v for e, v in enumerate(val_error)},
                trial_id=number,
            )
        )
        start += duration
    return trials


def synthetic_study(storage: str, name: str, n_trials: int, seed: int = 0) -> optuna.Study:
    """Create study ``name`` in ``storage`` with ``synthetic_trials(n_trials, seed)`` and rpztune's attrs."""
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    for key, value in {
        "task": "numpy-mlp",
        "metric": "val_error",
        "settings": {"classes": [4, 9], "val_fraction": 0.2},
        "seed": seed,
        "data_source": "synthetic",
        "rpztune_format": 1,
    }.items():
        study.set_user_attr(key, value)
    study.add_trials(synthetic_trials(n_trials, seed))
    return study


def bench(sizes: list[int], folder: Path) -> None:
    print(f"python {platform.python_version()}, optuna {optuna.__version__}, plotly {plotly.__version__}")
    print("trials  states                            create s  load s  page s  report s  page MiB")
    for n in sizes:
        url = f"sqlite:///{folder / f'bench-{n}.db'}"
        t0 = time.perf_counter()
        synthetic_study(url, f"bench-{n}", n)
        created = time.perf_counter() - t0
        storage = optuna.storages.RDBStorage(url)
        t0 = time.perf_counter()
        data = reports.StudyData.load(optuna.load_study(study_name=f"bench-{n}", storage=storage))
        loaded = time.perf_counter() - t0
        t0 = time.perf_counter()
        reports.study_page(data)
        paged = time.perf_counter() - t0
        t0 = time.perf_counter()  # what `rpztune report` does: read, page, index, write
        written = reports.write_reports(storage, folder / f"site-{n}", storage_name=url)
        total = time.perf_counter() - t0
        states = " ".join(f"{k.lower()} {v}" for k, v in data.counts().items() if v)
        size = written[0].stat().st_size / 2**20
        print(f"{n:6d}  {states:32s}  {created:8.2f}  {loaded:6.2f}  {paged:6.2f}  {total:8.2f}  {size:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--keep", type=Path, help="write the storage and pages here instead of a temp folder")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        bench(args.trials, args.keep)
    else:
        with tempfile.TemporaryDirectory() as folder:
            bench(args.trials, Path(folder))


if __name__ == "__main__":
    main()
