"""Benchmark of selection fidelity: does a study's value pick trials that score well on the public test split?

Usage: ``python bench/fidelity.py [--tasks numpy-mlp,mynet] [--seeds 0,1] [--trials 60] [--mynet-trials 10]
[--data PATH] [--pruning] [--cost]``

For each task and seed it runs today's selection and the new one side by side, each as its own study
(``rpztune run`` in this process, one thread):

- numpy-mlp (TPE + ASHA, the defaults): ``folds=1`` (one seeded 200-image validation split, the best
  epoch's error) vs ``folds=5`` (stratified 5-fold cross-validation, the pooled error with its Brier
  tie-break). Both export a model trained on 800 images (the split's / fold 1's).
- mynet at a tiny budget (random search, no pruning, the same sampler seed in both studies, so both train the
  same configurations with the same seeds and differ only in how they validate): ``val_source=lab`` with
  today's value, the best epoch's accuracy on the lab's 600 images (recomputed from the curve: the max over
  epochs), vs the 10,000 images from "additional" at the final epoch. The two studies' trials are the same
  networks; today's rule picks the best epoch's weights, so its chosen test figure is read from the same
  trial's final weights only where its best epoch is the last (it says how often it is not).

It prints, per study, the Spearman correlation of the selection value with the recorded test figure over
complete trials, the chosen trial's test figure, the best test figure among the top 10 by value and in the
whole study, and the compute; then each pair side by side. The test split never chooses anything here: it
is only read to judge the choice.

``--pruning`` also runs a numpy-mlp ``folds=5`` study without pruning per seed and replays its trials
through the pruners as the objective reports (ASHA and median on the pooled figure each epoch) and as
fold-wise reporting would (``WilcoxonPruner``, one value per finished fold): trials stopped, compute kept,
and how many of the best tenth were stopped. ``--cost`` times one mynet training epoch at the lab's 9 %
against validating 600, 2,000 and 10,000 images (the baseline network, one thread) and exits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from objectives.folds import tie_broken_error  # noqa: E402
from search import run_study  # noqa: E402
from search.algorithms import make_pruner  # noqa: E402

MYNET_TINY = [
    "data_fraction=0.02",
    "epochs=6",
    "stages=[1, 2]",
    "channels={low=8, high=16, log=true}",
    "fc_layers=0",
    "batch_size=[64, 128]",
]  # a few seconds per trial on one core


def run(
    task: str, name: str, storage: str, seed: int, args: argparse.Namespace, sets: list[str], **kw
) -> tuple[optuna.Study, float]:
    """Run one study in this process; the study and the CPU seconds it took."""
    started = time.process_time()
    run_study(
        task,
        study_name=name,
        storage=storage,
        seed=seed,
        data=args.data,
        overrides=sets,
        n_trials=kw.pop("n_trials"),
        threads=1,
        device="cpu",
        progress=False,
        **kw,
    )
    return optuna.load_study(study_name=name, storage=storage), time.process_time() - started


def summarize(study: optuna.Study, value, test: str, better_test) -> dict:
    """Fidelity figures of ``study`` ranked by ``value(trial)`` (higher is better after the sign)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    ranked = sorted(done, key=value, reverse=True)
    tests = [t.user_attrs[test] for t in ranked]
    rho = spearmanr([value(t) for t in ranked], [better_test(x) for x in tests]).statistic
    best_test = max(tests, key=better_test)
    return {
        "complete": len(done),
        "trials": len(study.trials),
        "spearman": rho,
        "chosen": tests[0],
        "chosen_trial": ranked[0].number,
        "top10_best": max(tests[:10], key=better_test),
        "study_best": best_test,
        "ties_at_top": sum(value(t) == value(ranked[0]) for t in ranked),
    }


def replay(trials: list[FrozenTrial], pruner: optuna.pruners.BasePruner, reports) -> dict:
    """Replay unpruned trials through ``pruner`` in order, reporting ``reports(trial)``: (step, value,
    share of the trial's compute done) each; how many it stops, the compute it keeps, and how many of the
    best tenth (by final value) it stops."""
    study = optuna.create_study(direction="minimize", pruner=pruner)
    stopped, compute = set(), 0.0
    for trial in trials:
        live = study.ask()
        for step, value, done in reports(trial):
            live.report(value, step)
            if live.should_prune():
                study.tell(live, state=TrialState.PRUNED)
                stopped.add(trial.number)
                compute += done
                break
        else:
            study.tell(live, trial.value)
            compute += 1.0
    top = sorted(trials, key=lambda t: t.value)[: max(1, len(trials) // 10)]
    return {
        "stopped": len(stopped),
        "compute": round(compute / len(trials), 3),
        "top10pct_stopped": sum(t.number in stopped for t in top),
    }


def pruning_policies(study: optuna.Study) -> dict:
    """Epoch-wise ASHA on the pooled figure vs fold-wise Wilcoxon, replayed on a study run without pruning."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]

    def epochwise(t: FrozenTrial) -> list:
        curves, n = t.user_attrs["curves"], t.user_attrs["n_val"]
        pairs = list(zip(curves["val_error"], curves["val_brier"], strict=True))
        return [(e + 1, tie_broken_error(a, b, n), (e + 1) / len(pairs)) for e, (a, b) in enumerate(pairs)]

    def foldwise(t: FrozenTrial) -> list:
        k, n = t.user_attrs["folds"], t.user_attrs["n_val"]
        folds = zip(t.user_attrs["fold_val_error"], t.user_attrs["fold_val_brier"], strict=True)
        return [(f, tie_broken_error(a, b, n // k), (f + 1) / k) for f, (a, b) in enumerate(folds)]

    epochs = max(len(t.user_attrs["curves"]["val_error"]) for t in trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        wilcoxon = optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return {
        "asha_epochwise": replay(trials, make_pruner("asha", epochs), epochwise),
        "median_epochwise": replay(trials, make_pruner("median", epochs), epochwise),
        "wilcoxon_foldwise": replay(trials, wilcoxon, foldwise),
    }


def numpy_mlp(args, storage: str, seed: int) -> list[tuple[str, dict, float]]:
    rows = []
    for label, folds in (("folds=1 (today)", 1), ("folds=5", 5)):
        study, cpu = run(
            "numpy-mlp", f"np-f{folds}-s{seed}", storage, seed, args, [f"folds={folds}"], n_trials=args.trials
        )
        figures = summarize(study, lambda t: -t.value, "test_error", lambda x: -x)
        if folds > 1:  # would the pooled Brier score alone rank better? (the choice of figure)
            done = [t for t in study.trials if t.state == TrialState.COMPLETE]
            brier = [t.user_attrs["curves"]["val_brier"][t.user_attrs["best_epoch"] - 1] for t in done]
            figures["spearman_brier"] = spearmanr(brier, [t.user_attrs["test_error"] for t in done]).statistic
        rows.append((label, figures, cpu))
    if args.pruning:
        name, sets = f"np-nopr-s{seed}", ["folds=5"]
        study, _ = run("numpy-mlp", name, storage, seed, args, sets, n_trials=args.trials, pruner="none")
        print(f"\nnumpy-mlp, seed {seed}, folds=5 without pruning, replayed: {pruning_policies(study)}")
    return rows


def mynet(args, storage: str, seed: int) -> list[tuple[str, dict, float]]:
    common = [*MYNET_TINY]
    kw = {"n_trials": args.mynet_trials, "sampler": "random", "pruner": "none", "baseline": False}
    lab, lab_cpu = run("mynet", f"my-lab-s{seed}", storage, seed, args, [*common, "val_source=lab"], **kw)
    new, new_cpu = run("mynet", f"my-add-s{seed}", storage, seed, args, common, **kw)

    def today(t: FrozenTrial) -> float:
        return max(t.user_attrs["curves"]["val_accuracy"])

    def earlier(t: FrozenTrial) -> bool:
        curve = t.user_attrs["curves"]["val_accuracy"]
        return curve.index(max(curve)) < len(curve) - 1

    old = summarize(lab, today, "test_accuracy", lambda x: x)
    done = [t for t in lab.trials if t.state == TrialState.COMPLETE]
    old["best_epoch_not_last"] = sum(map(earlier, done))
    old["lab_final_spearman"] = summarize(lab, lambda t: t.value, "test_accuracy", lambda x: x)["spearman"]
    same = [a.params == b.params for a, b in zip(lab.trials, new.trials, strict=False)]
    figures = summarize(new, lambda t: t.value, "test_accuracy", lambda x: x)
    figures["same_configs"] = f"{sum(same)}/{len(same)}"
    return [("lab 600, best epoch (today)", old, lab_cpu), ("additional 10,000, final", figures, new_cpu)]


def mynet_cost(args: argparse.Namespace) -> None:
    """CPU seconds (one thread) of one training epoch of the baseline network at the lab's 9 % vs validating
    600, 2,000 and 10,000 images, and the standard error of an accuracy near 0.9 on as many images."""
    import torch

    from models import MyNet, MyNetCfg
    from objectives.mynet import load_data
    from objectives.torch_fit import accuracy, fit
    from spaces.mynet import SPACE, AugmentConfig, TrainConfig

    torch.set_num_threads(1)
    data = load_data(args.data, SPACE.settings())
    torch.manual_seed(0)
    model = MyNet(MyNetCfg(channels=(32, 64, 128), convs_per_stage=2, head="avg", dropout=0.2))
    model.to(memory_format=torch.channels_last)
    cfg = TrainConfig("sgd", 0.1, 0.9, 5e-4, "onecycle", 64, 30, 0.1)
    started = time.process_time()
    fit(model, cfg, AugmentConfig(2, True, 0.25), (data.x_train, data.y_train), None,
        generator=torch.Generator().manual_seed(0), epochs=1)  # fmt: skip
    epoch = time.process_time() - started
    print(f"\nmynet cost: one training epoch on {len(data.y_train)} images {epoch:.1f} CPU s")
    for n in (600, 2000, 10000):
        started = time.process_time()
        accuracy(model, data.x_holdout[:n], data.y_holdout[:n])
        seconds = time.process_time() - started
        print(
            f"  validating {n:5d} images: {seconds:5.2f} CPU s = {seconds / epoch:.2f} epoch; "
            f"standard error at 0.9: {100 * (0.9 * 0.1 / n) ** 0.5:.2f} points"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="numpy-mlp,mynet")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--trials", type=int, default=60, help="numpy-mlp trials per study")
    parser.add_argument("--mynet-trials", type=int, default=10)
    parser.add_argument("--pruning", action="store_true", help="numpy-mlp: also replay pruning policies")
    parser.add_argument("--cost", action="store_true", help="mynet: time training vs validation, then exit")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.cost:
        return mynet_cost(args)
    runners = {"numpy-mlp": numpy_mlp, "mynet": mynet}
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'fidelity.db'}"
        for task in args.tasks.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows = runners[task](args, storage, seed)
                print(f"\n{task}, seed {seed}")
                for label, figures, cpu in rows:
                    shown = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in figures.items()}
                    print(f"  {label:30s} cpu {cpu:7.1f} s  {shown}")
                (old_label, old, old_cpu), (new_label, new, new_cpu) = rows
                print(
                    f"  new vs today: spearman {new['spearman']:.2f} vs {old['spearman']:.2f}; chosen test "
                    f"{new['chosen']:.4f} vs {old['chosen']:.4f}; cpu {new_cpu / old_cpu:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
