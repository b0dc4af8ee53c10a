"""``rpztune confirm`` on a small real finetune study (linear probes) with NEW photos from "another source":
k-fold CV over all photos with the ORIG/AUG/NEW parts, the baseline confirmed as the reference, the refit on
every photo, and export writing that refit."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from objectives.finetune.proxy import proxy_score
from search.cli import main
from search.selection.reference import compare
from search.selection.winner import Estimate

PROBE = [
    "freeze=linear", "augment=none", "mix=none", "backbone=tf_efficientnet_lite0", "epochs=3",
    "resolution=224", "extra_backbones=none",  # the baseline's features serve both trials
]  # fmt: skip
N_IMAGES, N_NEW = 120, 24


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def other_source(photos_dir: Path, out: Path) -> Path:
    """A stand-in for photos from another source: real photos the study does not draw (outside its seeded
    ``max_images`` subset), shrunk to 64 px and re-encoded as JPEG at quality 25, half of each class."""
    files = [f for name in ("cat", "dog") for f in sorted((photos_dir / name).iterdir())]
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    unused = [files[i] for i in order[N_IMAGES:]]
    for name in ("cat", "dog"):
        (out / name).mkdir(parents=True)
        for file in [f for f in unused if f.parent.name == name][: N_NEW // 2]:
            with Image.open(file) as image:
                small = image.convert("RGB")
                small.thumbnail((64, 64))
                small.save(out / name / file.name, quality=25)
    return out


@pytest.fixture(scope="module")
def work(photos_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("confirm-finetune")
    url = f"sqlite:///{work / 'studies.db'}"
    new = other_source(photos_dir, work / "new")
    sets = [item for key in [*PROBE, f"max_images={N_IMAGES}", f"new_data={new}"] for item in ("--set", key)]
    run = ["run", "finetune", "--stages", "search,confirm,refit", "--data", str(photos_dir), "--trials", "2"]
    run += ["--pruner", "none", "--seed", "0"]
    code, out = cli(*run, *sets, "--quiet", "--confirm", "2", "--storage", url)
    assert code == 0, out
    work.joinpath("run.txt").write_text(out)
    return work


@pytest.mark.slow
def test_finetune_confirm_cross_validates_all_photos_and_refits_the_winner(work, tmp_path) -> None:
    url = f"sqlite:///{work / 'studies.db'}"
    study = optuna.load_study(study_name="finetune", storage=url)
    record = study.user_attrs["confirm"]
    assert record["scheme"] == "fold" and record["count"] == 5 and len(record["estimates"]) == 2
    replicates = optuna.load_study(study_name="finetune:confirm", storage=url).trials
    held = [t.user_attrs["n_val"] for t in replicates if t.user_attrs.get("confirm_of") == record["winner"]]
    assert sorted(held) == [24] * 5  # every one of the 120 photos is held out once: 5 folds of 24
    refit = study.user_attrs[f"refit:{record['winner']}"]
    assert refit["n_train"] == 120 and refit["epochs"] >= 1
    out = tmp_path / "export"
    code, printed = cli("export", "--study", "finetune", "--out", str(out), "--storage", url)
    assert code == 0
    summary = json.loads((out / "winner.json").read_text())
    assert summary["trial"] == record["winner"] and summary["weights"] == "refit"
    refit_file = work / "studies-checkpoints" / "finetune" / refit["checkpoint"]
    assert (out / "finetuned.pt").read_bytes() == refit_file.read_bytes()
    assert f"the refit of trial {record['winner']}" in printed
    own = torch.load(
        work / "studies-checkpoints" / "finetune" / f"trial-{record['winner']:05d}.pt", weights_only=True
    )
    refitted = torch.load(refit_file, weights_only=True)
    head = [key for key in own if key.startswith("head.")]
    assert head and not all(torch.equal(own[k], refitted[k]) for k in head)  # retrained, not copied


@pytest.mark.slow
def test_finetune_folds_keep_predictions_that_give_each_proxy_and_a_flip_estimate(work) -> None:
    """Each replicate's saved ORIG/AUG probabilities give its accuracies (linear probes: through the head on
    cached features); the ensemble estimate pairs the top 2 per fold, with and without flip TTA."""
    from search.selection.ensemble import choose_ensemble, estimate_ensemble, predictions_file

    url = f"sqlite:///{work / 'studies.db'}"
    study = optuna.load_study(study_name="finetune", storage=url)
    folder = work / "studies-checkpoints" / "finetune"
    for trial in optuna.load_study(study_name="finetune:confirm", storage=url).trials:
        with np.load(predictions_file(folder, trial.user_attrs["confirm_key"])) as saved:
            parts = {n: float(np.mean(saved[n].argmax(1) == saved[f"{n}_y"])) for n in ("orig", "aug")}
            assert saved["orig_flip"].shape == saved["orig"].shape == (24, 2)
        assert parts["orig"] == pytest.approx(trial.user_attrs["orig_acc"])
        assert parts["aug"] == pytest.approx(trial.user_attrs["aug_acc"])
    plain, flipped = (estimate_ensemble(study, folder, 2, flip=flip) for flip in (False, True))
    record = study.user_attrs["confirm"]
    stored = next(e for e in record["estimates"] if e["trial"] == record["winner"])
    assert list(plain.single) == pytest.approx(stored["values"]) and len(plain.ensemble) == 5
    assert flipped.flip and flipped.single == plain.single
    print(f"tiny finetune study: {plain.describe()}; {flipped.describe()}")
    alone = estimate_ensemble(study, folder, 1, flip=True)  # the winner alone, over flips
    assert alone.members == (record["winner"],) and alone.single == plain.single
    assert alone.describe().startswith(f"trial {record['winner']} alone with flip TTA: held-out proxy")
    with pytest.raises(ValueError, match="at least 2 members"):
        estimate_ensemble(study, folder, 1)
    _, tried = choose_ensemble(study, folder)  # what the pipeline's ensemble stage weighs
    kinds = {(len(e.members), e.flip) for e in tried}
    assert {(1, True), (2, False), (2, True)} <= kinds and (1, False) not in kinds


@pytest.mark.slow
def test_export_tta_flip_alone_weighs_the_winner_over_flips_by_the_confirmation_rule(
    work, tmp_path, capsys
) -> None:
    url = f"sqlite:///{work / 'studies.db'}"
    study = optuna.load_study(study_name="finetune", storage=url)
    winner = study.user_attrs["confirm"]["winner"]
    from search.selection.ensemble import estimate_ensemble

    alone = estimate_ensemble(study, work / "studies-checkpoints" / "finetune", 1, flip=True)
    out = tmp_path / "flip"
    code, printed = cli("export", "--study", "finetune", "--tta", "flip", "--out", str(out), "--storage", url)
    if alone.helps:  # the written file averages the winner over flips (its packing: test_ensemble_export)
        assert code == 0 and f"trial {winner} alone with flip TTA" in printed
        summary = json.loads((out / "winner.json").read_text())
        assert summary["ensemble"]["members"] == [winner] and summary["ensemble"]["flip"] is True
    else:  # these 120 photos: the flips change no fold's figure
        error = capsys.readouterr().err
        assert code == 2 and f"trial {winner} alone with flip TTA" in error
        assert "no ensemble is written" in error
        assert not out.exists()


@pytest.mark.slow
def test_new_photos_enter_every_replicate_with_the_leaderboard_weights(work) -> None:
    url = f"sqlite:///{work / 'studies.db'}"
    record = optuna.load_study(study_name="finetune", storage=url).user_attrs["confirm"]
    replicates = optuna.load_study(study_name="finetune:confirm", storage=url).trials
    assert len(replicates) == 10
    for rep in replicates:
        a = rep.user_attrs
        assert a["n_val"] == N_IMAGES // 5
        assert rep.value == pytest.approx(proxy_score(a["orig_acc"], a["aug_acc"], a["new_acc"]))
        assert rep.value == pytest.approx(0.6 * a["orig_acc"] + 0.3 * a["aug_acc"] + 0.1 * a["new_acc"])
    for estimate in record["estimates"]:
        mine = [t.user_attrs for t in replicates if t.user_attrs["confirm_of"] == estimate["trial"]]
        parts = record["parts"][str(estimate["trial"])]
        assert set(parts) == {"orig_acc", "aug_acc", "new_acc"}
        assert parts["new_acc"][0] == pytest.approx(sum(a["new_acc"] for a in mine) / 5)


@pytest.mark.slow
def test_the_baseline_is_confirmed_beside_the_top_k_as_the_reference(work, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    url = f"sqlite:///{copy / 'studies.db'}"
    study = optuna.load_study(study_name="finetune", storage=url)
    baseline = next(t for t in study.trials if t.user_attrs.get("baseline"))
    best = max(
        study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: (t.value, -t.number)
    )
    code, printed = cli("confirm", "--study", "finetune", "--top", "1", "--storage", url)
    assert code == 0
    assert "trained 0 replicates" in printed  # the baseline's folds were trained in the first confirmation
    record = optuna.load_study(study_name="finetune", storage=url).user_attrs["confirm"]
    assert {e["trial"] for e in record["estimates"]} == {best.number, baseline.number}
    versus = record["reference"]
    assert versus["trial"] == baseline.number and versus["line"] in printed
    assert "baseline" in next(line for line in printed.splitlines() if f"trial {baseline.number:>4}:" in line)
    mine = next(e for e in record["estimates"] if e["trial"] == record["winner"])
    theirs = next(e for e in record["estimates"] if e["trial"] == baseline.number)
    assert versus["gain"] == pytest.approx(mine["mean"] - theirs["mean"])
    out = tmp_path / "export"
    code, exported = cli("export", "--study", "finetune", "--out", str(out), "--storage", url)
    assert code == 0 and versus["line"] in exported


def test_compare_pairs_the_replicates_and_says_who_wins() -> None:
    base = Estimate(0, (0.95, 0.97, 0.93, 0.96, 0.94), epochs=6, complexity=10, search_value=0.96)
    steady = Estimate(7, (0.96, 0.98, 0.94, 0.97, 0.95), epochs=6, complexity=10, search_value=0.97)
    versus = compare(steady, base, "maximize", "proxy")
    # +0.01 on every fold: the paired se is 0 although each mean's own se is about 0.007
    assert versus["gain"] == pytest.approx(0.01) and versus["gain_se"] == pytest.approx(0.0, abs=1e-12)
    assert versus["verdict"] == "beats" and versus["wins"] == 5 and "beats not searching" in versus["line"]
    noisy = Estimate(8, (0.97, 0.95, 0.95, 0.95, 0.94), epochs=6, complexity=10, search_value=0.99)
    assert compare(noisy, base, "maximize")["verdict"] == "ties"
    errors = Estimate(9, (0.06, 0.04, 0.08, 0.05, 0.07), epochs=6, complexity=10, search_value=0.01)
    lower = Estimate(1, (0.05, 0.03, 0.07, 0.04, 0.06), epochs=6, complexity=10, search_value=0.02)
    assert compare(errors, lower, "minimize")["verdict"] == "loses"
    assert compare(base, base, "maximize")["verdict"] == "is"


def test_a_fine_tune_replicate_keeps_the_memory_cap(photos_dir) -> None:
    from types import SimpleNamespace

    from objectives.finetune.objective import load_data
    from objectives.finetune.replicate import retrain_finetune
    from objectives.replicate import Replicate

    data = load_data(str(photos_dir), {"max_images": 20})
    config = {
        "model": {"backbone": "tf_efficientnet_lite0", "resolution": 96, "head": "linear"},
        "train": {"freeze": "full", "augment": "flip_crop", "batch_size": 8, "epochs": 1},
    }
    trial = SimpleNamespace(number=3, user_attrs={"config": config, "seed": 3})
    with pytest.raises(MemoryError, match="exceeds max_memory_mb=64"):
        retrain_finetune(trial, data, Replicate("fold", 0, 2), {"max_memory_mb": 64})
