"""Benchmark of confirmation on the real numpy-mlp task: today's winner (best validation value) vs the
confirmed winner (``rpztune confirm``) and its refit, by their test error (information only: the test split
never chooses anything; it is printed to measure the selection).

Usage: ``python bench/confirm.py [--trials 60] [--top 10] [--plans seed:2,fold:5] [--seeds 0,1,2]
[--data PATH]``

For every study seed: a numpy-mlp study of ``--trials`` trials (TPE + ASHA, the default space), then for each
plan a confirmation of the top ``--top`` trials and a refit of its winner. Prints per study: ties at the best
validation value, today's winner's test error, each plan's confirmed winner (its trial checkpoint's test
error, its refit's test error), then the medians over seeds of the differences (today's minus confirmed:
positive means confirmation helped). A few minutes per seed on one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from search import run_study  # noqa: E402
from search.selection.confirm import confirm  # noqa: E402
from search.selection.refit import refit  # noqa: E402


def main() -> None:
    """Run the studies and confirmations; print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--plans", default="seed:2,fold:5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    plans = [(p.split(":")[0], int(p.split(":")[1])) for p in args.plans.split(",")]
    gains: dict[str, list[float]] = {f"{s}:{n}": [] for s, n in plans}
    refit_gains: dict[str, list[float]] = {f"{s}:{n}": [] for s, n in plans}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            url = f"sqlite:///{tmp}/seed{seed}.db"
            run_study("numpy-mlp", storage=url, data=args.data, seed=seed, n_trials=args.trials, threads=1,
                      keep_top=args.top, progress=False)  # fmt: skip
            study = optuna.load_study(study_name="numpy-mlp", storage=url)
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            best = study.best_trial
            ties = sum(t.value == best.value for t in complete)
            today = best.user_attrs["test_error"]
            print(
                f"seed {seed}: {len(study.trials)} trials, {len(complete)} complete; best val_error "
                f"{best.value:.4f} shared by {ties}; today's winner trial {best.number}: test_error "
                f"{today:.4f}"
            )
            for scheme, count in plans:
                plan = f"{scheme}:{count}"
                kwargs = {"folds": count} if scheme == "fold" else {"seeds": count}
                result = confirm(url, "numpy-mlp", top=args.top, **kwargs)
                chosen = study.trials[result.winner.trial]
                refitted = refit(url, "numpy-mlp", result.winner.trial)
                trial_test = chosen.user_attrs["test_error"]
                refit_test = refitted.record["test_error"]
                gains[plan].append(today - trial_test)
                refit_gains[plan].append(today - refit_test)
                print(
                    f"  {plan}: confirmed winner trial {chosen.number} ({result.winner.mean:.4f} ± "
                    f"{result.winner.sd:.4f}; search {chosen.value:.4f}): test_error {trial_test:.4f}, "
                    f"refit ({refitted.record['epochs']} epochs, all images) {refit_test:.4f}; "
                    f"{result.reason}"
                )
    for plan in gains:
        per_seed, per_refit = [round(g, 4) for g in gains[plan]], [round(g, 4) for g in refit_gains[plan]]
        print(
            f"median over seeds, {plan}: today's test_error minus confirmed winner's "
            f"{statistics.median(gains[plan]):+.4f} (its checkpoint), "
            f"{statistics.median(refit_gains[plan]):+.4f} (its refit); per seed {per_seed}, refit {per_refit}"
        )


if __name__ == "__main__":
    main()
