"""``rpztune confirm`` on a small real finetune study (linear probes): k-fold CV over all photos, the refit
on every photo, and export writing that refit."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search.cli import main

PROBE = ["freeze=linear", "augment=none", "mix=none", "backbone=tf_efficientnet_lite0", "epochs=3"]


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def work(photos_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("confirm-finetune")
    url = f"sqlite:///{work / 'studies.db'}"
    sets = [item for key in [*PROBE, "max_images=120"] for item in ("--set", key)]
    run = ["run", "finetune", "--data", str(photos_dir), "--trials", "2", "--pruner", "none", "--seed", "0"]
    code, out = cli(*run, *sets, "--quiet", "--confirm", "2", "--storage", url)
    assert code == 0, out
    work.joinpath("run.txt").write_text(out)
    return work


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


def test_finetune_folds_keep_predictions_that_give_each_proxy_and_a_flip_estimate(work) -> None:
    """Each replicate's saved ORIG/AUG probabilities give its accuracies (linear probes: through the head on
    cached features); the ensemble estimate pairs the top 2 per fold, with and without flip TTA."""
    from search.ensemble import estimate_ensemble, predictions_file

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
