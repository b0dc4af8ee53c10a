"""Benchmark of promotion under mynet's rungs pruner: re-train at the top rung, or continue from its weights.

Usage: ``python bench/promotion.py [--storage URL --study S] [--configs 8] [--data PATH] [--workers 2]``

The same configurations are promoted both ways, paired: each trains the first rung (3 epochs, a complete
schedule) and then the top rung (15 epochs) either from a fresh initialisation (``retrain``) or from the
rung's weights under a fresh schedule of the 12 remaining epochs (``continue``, the default), with the same
seed. The configurations are the ``--configs`` cheapest completed trials of a stored mynet study (the ones
its pruner promoted), or, without ``--storage``, the space's baseline and seeded random draws. Both modes of
one configuration run at once in ``--workers`` processes (one torch thread each), so a change in the
machine's load hits them alike. It prints per configuration the top rung's validation accuracy and the
compute (training seconds of both rungs) of each mode, then the mean difference in accuracy, the Spearman
correlation of the two modes' values, whether they pick the same best configuration, and the ratio of their
compute.

CPU-heavy: 8 configurations are about 30-60 compute-minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from objectives import TrialContext  # noqa: E402
from objectives.mynet.objective import load_data, objective  # noqa: E402
from objectives.rung_pruner import RungPruner  # noqa: E402
from search.engine.algorithms import make_pruner  # noqa: E402
from spaces.mynet import BASELINE, SPACE, suggest  # noqa: E402

MODES = ("retrain", "continue")
PLAN = make_pruner("rungs", 15).plan  # the default search's rungs: 3 and 15 epochs


class PromoteAll(RungPruner):
    """The rungs pruner that records every rung and promotes every trial (both modes reach the top)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        super().prune(study, trial)
        return False


def stored_configs(storage: str, study_name: str, count: int) -> list[dict[str, Any]]:
    """Parameters of the ``count`` cheapest completed trials of a stored mynet study."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [t.params for t in sorted(done, key=lambda t: t.duration.total_seconds())[:count]]


def drawn_configs(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """The baseline and ``count - 1`` random draws of the default space."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(count - 1):
        trial = study.ask()
        suggest(trial, SPACE)
        draws.append(trial.params)
        study.tell(trial, 0.0)
    return [dict(BASELINE), *draws]


def promote(index: int, params: dict[str, Any], mode: str, data: str) -> dict[str, Any]:
    """Train configuration ``index`` through both rungs under ``mode``; its value and compute."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SPACE.with_overrides({"promotion": mode})
    fashion = load_data(data, space.settings())
    study = optuna.create_study(direction="maximize", pruner=PromoteAll(PLAN))
    study.set_user_attr("seed", index)  # the trial's seed: the same in both modes
    study.enqueue_trial(params)
    with tempfile.TemporaryDirectory() as folder:
        context = TrialContext(Path(folder), device="cpu", metric="val_accuracy")
        study.optimize(lambda t: objective(t, fashion, space, context), n_trials=1)
    trial = study.trials[0]
    rungs = trial.user_attrs.get("rungs", [])
    return {
        "config": index,
        "mode": mode,
        "state": trial.state.name,
        "value": trial.value,
        "rung_3": rungs[0].get("val_accuracy") if rungs else None,
        "compute_s": sum(r.get("train_seconds", 0.0) for r in rungs),
        "test": trial.user_attrs.get("test_accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a storage holding a mynet study (its cheapest completed trials)")
    parser.add_argument("--study", help="that study's name")
    parser.add_argument("--configs", type=int, default=8, help="configurations to promote both ways")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if args.storage:
        configs = stored_configs(args.storage, args.study, args.configs)
    else:
        configs = drawn_configs(args.configs)
    source = f"{args.study} in {args.storage}" if args.storage else "baseline + random draws"
    print(f"mynet, rungs {PLAN.epochs}, {len(configs)} configurations from {source}, modes {MODES}")
    jobs = [(i, params, mode) for i, params in enumerate(configs) for mode in MODES]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(promote, i, params, mode, args.data) for i, params, mode in jobs]
        rows = []
        for future in futures:
            rows.append(future.result())
            row = rows[-1]
            print(f"  config {row['config']} {row['mode']}: {row['value']} in {row['compute_s']:.0f} s")
    table = pd.DataFrame(rows).pivot(index="config", columns="mode", values=["value", "compute_s", "rung_3"])
    print(table.to_string(float_format="%.4f"))
    values, compute = table["value"].dropna(), table["compute_s"]
    diff = values["continue"] - values["retrain"]
    spearman = values["continue"].corr(values["retrain"], method="spearman")
    same_best = values["continue"].idxmax() == values["retrain"].idxmax()
    print(
        f"continue - retrain: mean {diff.mean():+.4f}, median {diff.median():+.4f}, "
        f"range {diff.min():+.4f} .. {diff.max():+.4f} over {len(values)} configurations; "
        f"Spearman {spearman:.2f}; same best configuration: {'yes' if same_best else 'no'}; "
        f"compute continue / retrain x{compute['continue'].sum() / compute['retrain'].sum():.2f}"
    )


if __name__ == "__main__":
    main()
