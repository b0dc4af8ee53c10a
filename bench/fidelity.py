"""Benchmark of selection fidelity: does a study's value pick trials that score well on the public test split?

Usage: ``python bench/fidelity.py [--tasks numpy-mlp,mynet,finetune] [--seeds 5,6] [--trials 60,100]
[--top 10] [--mynet-trials 10] [--finetune-trials 24] [--finetune-top 3] [--finetune-test 500] [--data PATH]
[--workdir DIR] [--pruning] [--cost]``, or
``python bench/fidelity.py --analyze --storage URL --study S [--test-attr NAME]`` for an existing study.

For each task and seed it runs today's selection and the new one side by side, each as its own study
(``rpztune run`` in this process, one thread):

- numpy-mlp: today's defaults (``folds=1``: one seeded 200-image validation split, the best epoch's error;
  ASHA) against the new ones (stratified 5-fold CV, the pooled error with its Brier tie-break, no pruner,
  then ``run --confirm K``'s path: ``confirm`` of the top ``--top`` on 5 fresh folds, the refit of the
  confirmed winner on all 1,000 training images). Each study runs to the first count of ``--trials`` and is
  then continued to the next (as ``rpztune run`` resumes a study), confirmed and exported again. The figure
  judged is the test error of the weights ``rpztune export`` writes (today: the best trial's checkpoint,
  trained on 800 images; new: the refit), as a user gets them; also the Spearman of the selection value with
  the trials' recorded test error over complete trials and over the 10 best by value, and the regret of the
  exported weights against the best test error among those 10 trials' checkpoints.
- mynet at a tiny budget (random search, no pruning, the same sampler seed in both studies, so both train the
  same configurations with the same seeds and differ only in how they validate): ``val_source=lab`` with
  today's value, the best epoch's accuracy on the lab's 600 images (recomputed from the curve: the max over
  epochs), vs the 10,000 images from "additional" at the final epoch. The two studies' trials are the same
  networks; today's rule picks the best epoch's weights, so its chosen test figure is read from the same
  trial's final weights only where its best epoch is the last (it says how often it is not).

- finetune (no public test split here): ``--finetune-test`` photos (half per class, seeded, symbolic links)
  are held out of the study as the bench's public test; one study per seed runs the probe stage of the
  default staged search (``--finetune-trials`` linear probes on cached features, never pruned) on the rest.
  Today's rule exports the best single-split proxy's checkpoint; the new one confirms the top
  ``--finetune-top`` and the baseline probe by 5-fold CV over the study's photos and exports the confirmed
  winner's refit on all of them. Every complete trial, and the refit, is scored on the held-out photos
  (2/3 ORIG + 1/3 AUG: the leaderboard's weights without NEW, AUG from the same condition bank).

``--analyze`` reads one existing study (mynet: ``val_accuracy`` vs the trials' ``test_accuracy`` on t10k;
finetune: its proxy vs ``--test-attr``; numpy-mlp: ``val_error`` vs ``test_error``): Spearman over complete
trials and over the 10 best, ties at the top, the best-value trial's and the confirmed winner's test figure
against the best of the top 10 and of the study, and the stored refit's figure.

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
import contextlib
import io
import json
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from objectives.folds import tie_broken_error  # noqa: E402
from search import run_study  # noqa: E402
from search.delivery.export import export  # noqa: E402
from search.engine.algorithms import make_pruner  # noqa: E402
from search.engine.storage import get_storage  # noqa: E402
from search.selection.winner import find_winner  # noqa: E402

ANALYZE_TEST_ATTRS = {
    "numpy-mlp": ("test_error",),
    "mynet": ("test_accuracy",),
    "finetune": ("test_proxy", "test_accuracy", "extra_test_accuracy"),
}  # the recorded test figure per task (information only: it never chose anything)
MYNET_TINY = [
    "data_fraction=0.02",
    "epochs=6",
    "stages=[1, 2]",
    "channels={low=8, high=16, log=true}",
    "fc_layers=0",
    "batch_size=[64, 128]",
]  # a few seconds per trial on one core


def load(name: str, storage: str) -> optuna.Study | None:
    """The study ``name`` (``None`` when missing); opening an SQLite file right after a run closed it can
    fail with "disk I/O error" on a loaded machine, so it is retried."""
    for attempt in range(5):
        try:
            return optuna.load_study(study_name=name, storage=get_storage(storage))
        except KeyError:
            return None
        except sqlalchemy.exc.OperationalError:
            if attempt == 4:
                raise
            time.sleep(2.0)
    return None


def run(
    task: str, name: str, storage: str, seed: int, args: argparse.Namespace, sets: list[str], **kw
) -> tuple[optuna.Study, float]:
    """Run one study in this process up to ``n_trials`` trials in all (a study left by an interrupted run
    of this bench is continued); the study and the CPU seconds it took."""
    started = time.process_time()
    existing = load(name, storage)
    wanted = kw.pop("n_trials") - (0 if existing is None else len(existing.trials))
    if wanted > 0:
        run_study(
            task,
            study_name=name,
            storage=storage,
            seed=seed,
            data=args.data,
            overrides=sets,
            n_trials=wanted,
            threads=1,
            device="cpu",
            progress=False,
            **kw,
        )
    return load(name, storage), time.process_time() - started


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


def top10_spearman(study: optuna.Study, value, test: str, better_test) -> float:
    """Spearman of ``value`` with the test figure among the 10 best completed trials by ``value``."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    top = sorted(done, key=value, reverse=True)[:10]
    return spearmanr([value(t) for t in top], [better_test(t.user_attrs[test]) for t in top]).statistic


def exported_test_error(storage: str, name: str, out: Path) -> tuple[float, str]:
    """Export the study's winner as a user would (``rpztune export``) and read back the test error of the
    written weights (``winner.json``), with where the weights came from (``trial`` or ``refit``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        export(find_winner(storage, name), out)
    record = json.loads((out / "winner.json").read_text())
    return float(record["test_error"]), str(record["weights"])


def numpy_mlp(args, storage: str, seed: int) -> list[tuple[str, dict, float]]:
    """Per trial count: today's selection (``folds=1``, ASHA: the old defaults; the best trial's checkpoint
    is exported) vs the new default (5-fold CV, no pruner, then ``confirm`` of the top ``--top`` on 5 fresh
    folds and the refit of the confirmed winner, which export writes), each its own study."""
    from search.selection.confirm import confirm
    from search.selection.refit import refit

    rows, old_cpu, new_cpu = [], 0.0, 0.0
    old_name, new_name = f"np-old-s{seed}", f"np-new-s{seed}"
    for n in sorted(args.trial_counts):  # each study continued to the next count, as `rpztune run` resumes
        old_study, cpu = run(
            "numpy-mlp", old_name, storage, seed, args, ["folds=1"], n_trials=n, pruner="asha"
        )
        old_cpu += cpu
        new_study, cpu = run("numpy-mlp", new_name, storage, seed, args, [], n_trials=n)
        new_cpu += cpu
        started = time.process_time()
        result = confirm(storage, new_name, top=args.top)
        refit(storage, new_name, result.winner.trial)
        new_cpu += time.process_time() - started
        value, test, lower = (lambda t: -t.value), "test_error", (lambda x: -x)
        for label, study, name, cpu in (
            (f"{n} trials, folds=1+ASHA (today)", old_study, old_name, old_cpu),
            (f"{n} trials, CV+confirm+refit", new_study, new_name, new_cpu),
        ):
            figures = summarize(study, value, test, lower)
            figures["spearman_top10"] = top10_spearman(study, value, test, lower)
            out = Path(args.workdir) / "export" / f"{name}-n{n}"
            exported, weights = exported_test_error(storage, name, out)
            figures["exported"] = exported
            figures["weights"] = weights
            figures["regret_top10"] = exported - figures["top10_best"]
            if study is new_study:
                trials = new_study.trials
                chosen = trials[result.winner.trial]
                figures["confirmed_trial"] = chosen.number
                figures["confirmed_checkpoint_test"] = chosen.user_attrs[test]
                means = [e.mean for e in result.ranking]
                tests = [trials[e.trial].user_attrs[test] for e in result.ranking]
                figures["confirm_spearman_top"] = spearmanr(means, tests).statistic
                done_refit = new_study.user_attrs[f"refit:{chosen.number}"]
                members = done_refit.get("member_test_errors", [done_refit["test_error"]])
                figures["refit_one_seed"] = members[0]  # the refit of one seed (before packed refits)
                figures["refit_members"] = len(members)
            rows.append((label, figures, cpu))
            shown = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in figures.items()}
            print(f"numpy-mlp, seed {seed}, {label}: cpu {cpu:.0f} s {shown}", flush=True)
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


def split_photos(root: Path, out: Path, n_test: int, seed: int = 0) -> tuple[Path, Path]:
    """``out/train`` and ``out/test`` as folders of symbolic links to the photos of ``root`` (nothing is
    copied): ``n_test`` photos, half per class, seeded, held out of every study as the bench's public test."""
    rng = random.Random(seed)
    for cls in sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(f for f in (root / cls).iterdir() if f.is_file())
        rng.shuffle(files)
        for part, chosen in (("test", files[: n_test // 2]), ("train", files[n_test // 2 :])):
            (out / part / cls).mkdir(parents=True, exist_ok=True)
            for file in chosen:
                link = out / part / cls / file.name
                if not link.is_symlink():
                    link.symlink_to(file.resolve())
    return out / "train", out / "test"


class PhotoTest:
    """The bench's held-out photos and their condition-bank copies, scored as the leaderboard proxy without
    NEW (2/3 ORIG + 1/3 AUG). A linear probe's backbone is its pretrained one, so the pooled features are
    computed once per backbone state and resolution and each model's head is applied to them."""

    def __init__(self, folder: Path, copies: int = 2) -> None:
        from objectives.finetune.photos import load_photos
        from objectives.finetune.proxy import condition_bank

        photos = load_photos(folder)
        self.x, self.y = photos.x, photos.y
        self.x_aug, _ = condition_bank(photos.x, copies=copies, seed=0)
        self.y_aug = photos.y.repeat(copies)
        self._features: dict[tuple, tuple] = {}

    def score(self, model) -> dict[str, float]:
        """``{"orig", "aug", "proxy"}`` of ``model`` (a FinetuneNet) on the held-out photos."""
        import hashlib

        import torch

        from objectives.finetune.proxy import proxy_score

        model.eval()
        digest = hashlib.sha256()
        for tensor in model.backbone.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        key = (model.cfg.resolution, digest.hexdigest())
        if key not in self._features:
            with torch.inference_mode():
                self._features[key] = tuple(
                    torch.cat(
                        [model.forward_features(x[i : i + 32].float().div(255)) for i in range(0, len(x), 32)]
                    )
                    for x in (self.x, self.x_aug)
                )
        with torch.inference_mode():
            orig, aug = (
                float((model.forward_head(f).argmax(1) == y).float().mean())
                for f, y in zip(self._features[key], (self.y, self.y_aug), strict=True)
            )
        return {"orig": orig, "aug": aug, "proxy": proxy_score(orig, aug)}


def finetune(args, storage: str, seed: int) -> list[tuple[str, dict, float]]:
    """One study per seed: the probe stage of the default staged search (``--finetune-trials`` linear probes
    on cached features) on the photos minus ``--finetune-test`` held out; then today's rule (the best
    single-split proxy; export writes that trial's checkpoint) against the new one (``confirm`` of the top
    ``--finetune-top`` and the baseline probe by 5-fold CV over the study's photos, then the refit of the
    confirmed winner on all of them, which export writes). Every complete trial, the confirmed winner and the
    refit are scored on the held-out photos."""
    from objectives.finetune.objective import load_model
    from search.selection.confirm import confirm
    from search.selection.refit import refit

    train, test_dir = split_photos(
        Path(args.data) / "dogs_and_cats", Path(args.workdir) / "photos", args.finetune_test
    )
    name, n = f"ft-s{seed}", args.finetune_trials
    on_train = argparse.Namespace(**{**vars(args), "data": str(train)})
    study, cpu = run("finetune", name, storage, seed, on_train, [], n_trials=n, keep_top=n)
    test, scored = PhotoTest(test_dir), []
    for trial in study.get_trials(deepcopy=True, states=(TrialState.COMPLETE,)):
        checkpoint = find_winner(storage, name, trial.number).checkpoint
        trial.user_attrs["test_proxy"] = test.score(load_model(trial, checkpoint))["proxy"]
        scored.append(trial)
    figures = {t.number: t.user_attrs["test_proxy"] for t in scored}
    judged = optuna.create_study(direction="maximize")  # the scored trials, in memory
    judged.add_trials(scored)
    started = time.process_time()
    result = confirm(storage, name, top=args.finetune_top, data=str(train))
    done = refit(storage, name, result.winner.trial, data=str(train))
    new_cpu = cpu + time.process_time() - started
    winner = study.trials[result.winner.trial]
    refit_scores = test.score(load_model(winner, done.path))
    old = summarize(judged, lambda t: t.value, "test_proxy", lambda x: x)
    old["spearman_top10"] = top10_spearman(judged, lambda t: t.value, "test_proxy", lambda x: x)
    old["exported"] = old["chosen"]
    new = dict(old)
    new["chosen_trial"] = result.winner.trial
    new["chosen"] = figures[result.winner.trial]
    new["single_split"] = winner.value
    new["confirmed"] = f"{result.winner.mean:.4f} +- {result.winner.se:.4f}"
    new["confirm_spearman_top"] = spearmanr(
        [e.mean for e in result.ranking], [figures[e.trial] for e in result.ranking]
    ).statistic
    new["exported"] = refit_scores["proxy"]
    new["exported_parts"] = f"orig {refit_scores['orig']:.4f} aug {refit_scores['aug']:.4f}"
    new["refit_images"] = done.record.get("n_train")
    print(f"finetune, seed {seed}: held-out proxy per trial {figures}", flush=True)
    return [("single split, best proxy (today)", old, cpu), ("confirm 5 folds + refit", new, new_cpu)]


def mynet_cost(args: argparse.Namespace) -> None:
    """CPU seconds (one thread) of one training epoch of the baseline network at the lab's 9 % vs validating
    600, 2,000 and 10,000 images, and the standard error of an accuracy near 0.9 on as many images."""
    import torch

    from models import MyNet, MyNetCfg
    from objectives.mynet.objective import load_data
    from objectives.training.fit import accuracy, fit
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


def analyze(args: argparse.Namespace) -> None:
    """Fidelity of an existing study (``--storage URL --study S --analyze``): Spearman of its selection value
    with its recorded test figure over complete trials and over the 10 best, ties at the top, the best-value
    trial's and the confirmed winner's test figure against the best of the top 10 and of the study, and the
    winner's refit's figure when one is stored."""
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    attrs = study.user_attrs
    task = attrs.get("task", "?")
    test = args.test_attr or next(
        (n for n in ANALYZE_TEST_ATTRS.get(task, ()) if any(n in t.user_attrs for t in study.trials)), None
    )
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    scored = [t for t in done if test is not None and t.user_attrs.get(test) is not None]
    if len(scored) < 3:
        sys.exit(
            f"fidelity: study {args.study!r} ({task}) has {len(scored)} complete trials with a test figure "
            f"{test!r} (pass --test-attr NAME)"
        )
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    sign = 1.0 if maximize else -1.0
    higher_test = test not in ("test_error",)  # an error is better lower, an accuracy higher

    def better(x: float) -> float:
        return x if higher_test else -x

    def value(t: FrozenTrial) -> float:
        return sign * t.value

    partial = optuna.create_study(direction=study.direction)  # the scored trials only
    partial.add_trials(scored)
    figures = summarize(partial, value, test, better)
    figures["spearman_top10"] = top10_spearman(partial, value, test, better)
    metric = attrs.get("metric", "value")
    print(
        f"{args.study} ({task}): {len(study.trials)} trials, {len(done)} complete, {len(scored)} with "
        f"{test}; selection value {metric}"
    )
    print(
        f"  Spearman({metric}, {test}): {figures['spearman']:.3f} over complete trials, "
        f"{figures['spearman_top10']:.3f} over the 10 best by {metric}; ties at the best value: "
        f"{figures['ties_at_top']}"
    )
    print(
        f"  best-value trial {figures['chosen_trial']}: {test} {figures['chosen']:.4f}; best of the top 10 "
        f"{figures['top10_best']:.4f}; study's best {figures['study_best']:.4f} (gap "
        f"{abs(figures['chosen'] - figures['study_best']):.4f})"
    )
    record = attrs.get("confirm")
    if record:
        winner = study.trials[record["winner"]]
        print(
            f"  confirmed winner trial {winner.number} ({record['count']} {record['scheme']}s): {test} "
            f"{winner.user_attrs.get(test)}; gap to the study's best "
            f"{abs(winner.user_attrs.get(test, float('nan')) - figures['study_best']):.4f}"
        )
    chosen = record["winner"] if record else figures["chosen_trial"]
    refit_record = attrs.get(f"refit:{chosen}")
    if refit_record:
        shown = {k: refit_record[k] for k in ("epochs", "n_train", test) if k in refit_record}
        print(f"  refit of trial {chosen}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="numpy-mlp,mynet")
    parser.add_argument("--seeds", default="5,6")
    parser.add_argument("--trials", default="60,100", help="numpy-mlp trials per study (one pair per count)")
    parser.add_argument("--top", type=int, default=10, help="numpy-mlp: trials confirmed (run --confirm K)")
    parser.add_argument("--mynet-trials", type=int, default=10)
    parser.add_argument("--finetune-trials", type=int, default=24, help="finetune: linear probes per study")
    parser.add_argument("--finetune-top", type=int, default=3, help="finetune: trials confirmed")
    parser.add_argument("--finetune-test", type=int, default=500, help="finetune: photos held out as test")
    parser.add_argument("--pruning", action="store_true", help="numpy-mlp: also replay pruning policies")
    parser.add_argument("--cost", action="store_true", help="mynet: time training vs validation, then exit")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--workdir", help="keep the studies and exports here (default: a temporary folder)")
    parser.add_argument("--analyze", action="store_true", help="only analyze --study S in --storage URL")
    parser.add_argument("--storage", help="with --analyze: the study's storage URL")
    parser.add_argument("--study", help="with --analyze: the study's name")
    parser.add_argument("--test-attr", help="with --analyze: the trials' test figure (default per task)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.analyze:
        if not (args.storage and args.study):
            parser.error("--analyze needs --storage URL and --study S")
        return analyze(args)
    if args.cost:
        return mynet_cost(args)
    args.trial_counts = [int(n) for n in args.trials.split(",")]
    args.trials = args.trial_counts[0]
    runners = {"numpy-mlp": numpy_mlp, "mynet": mynet, "finetune": finetune}
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = args.workdir or tmp
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{Path(args.workdir) / 'fidelity.db'}"
        table = []
        for task in args.tasks.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows = runners[task](args, storage, seed)
                print(f"\n{task}, seed {seed}")
                for label, figures, cpu in rows:
                    shown = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in figures.items()}
                    print(f"  {label:34s} cpu {cpu:7.1f} s  {shown}")
                    table.append((task, seed, label, figures))
                for (_, old, old_cpu), (_, new, new_cpu) in zip(rows[::2], rows[1::2], strict=True):
                    chosen = "exported" if "exported" in new else "chosen"
                    print(
                        f"  new vs today: spearman {new['spearman']:.2f} vs {old['spearman']:.2f}; "
                        f"chosen test {new[chosen]:.4f} vs {old[chosen]:.4f}; cpu {new_cpu / old_cpu:.2f}x",
                        flush=True,
                    )
        numpy_rows = [r for r in table if r[0] == "numpy-mlp"]
        if numpy_rows:
            print("\nnumpy-mlp: exported winner's test error, regret vs the best of the top 10, Spearman")
            print(f"  {'seed':>4}  {'selection':34s} {'complete':>8} {'rho all':>7} {'rho top10':>9} "
                  f"{'exported':>8} {'top10 best':>10} {'regret':>7}")  # fmt: skip
            for _, seed, label, f in numpy_rows:
                print(
                    f"  {seed:>4}  {label:34s} {f['complete']:>8} {f['spearman']:>7.2f} "
                    f"{f['spearman_top10']:>9.2f} {f['exported']:>8.4f} {f['top10_best']:>10.4f} "
                    f"{f['regret_top10']:>+7.4f}"
                )


if __name__ == "__main__":
    main()
