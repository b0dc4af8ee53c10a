"""The "Can you trust the winner?" section of a study page, on a real SQLite study written with ask/tell."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from reports.analysis import StudyData
from reports.pages import study_page
from reports.trust import trust_section
from search.selection.winner import Estimate, choose_confirmed

# (val_error, test_error): two trials tie at the best value
TRIALS = [(0.02, 0.05), (0.02, 0.03), (0.04, 0.04), (0.06, 0.08), (0.10, 0.09)]


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    study = optuna.create_study(study_name="mlp", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.set_user_attr("task", "numpy-mlp")
    study.set_user_attr("metric", "val_error")
    for value, test in TRIALS:
        trial = study.ask()
        trial.suggest_float("lr", 1e-3, 1.0, log=True)
        trial.set_user_attr("test_error", test)
        study.tell(trial, value)
    return study


def test_trust_section_counts_ties_and_ranks_value_against_test(study) -> None:
    html = trust_section(StudyData.load(study, importances=False))
    assert "Can you trust the winner?" in html
    assert "2 (at 0.02)" in html
    frame = pd.DataFrame(TRIALS, columns=["value", "test"])
    rho = frame.value.rank().corr(frame.test.rank())
    assert f"Spearman (val_error vs test_error, 5 trials)</th><td>{rho:.2f}" in html
    assert "none: the best validation value below comes from one split" in html and "trust-scatter" in html


def test_trust_section_shows_the_confirmed_ranking_with_its_spread(study) -> None:
    estimates = [
        Estimate(0, (0.030, 0.034), epochs=9, complexity=5_000, search_value=0.02),
        Estimate(1, (0.020, 0.024), epochs=9, complexity=9_000, search_value=0.02),
    ]
    winner, ranking, reason = choose_confirmed(estimates, "minimize")
    study.set_user_attr(
        "confirm",
        {"scheme": "seed", "count": 2, "estimates": [e.to_dict() for e in ranking], "winner": winner.trial,
         "reason": reason},
    )  # fmt: skip
    html = study_page(StudyData.load(study, importances=False))
    shown = f"trial {winner.trial}: val_error {winner.mean:.4f} ± {winner.sd:.4f}; {reason}"
    assert shown in html and "trust-ranking" in html
    assert html.index("1 (winner)") < html.index("0.0320 ± 0.0028")  # trial 1 first: the better mean


def test_trust_section_sets_the_winner_against_the_baseline(study) -> None:
    from search.selection.reference import compare

    base = Estimate(0, (0.030, 0.034, 0.032), epochs=9, complexity=5_000, search_value=0.02)
    best = Estimate(1, (0.020, 0.025, 0.021), epochs=9, complexity=5_000, search_value=0.02)
    winner, ranking, reason = choose_confirmed([base, best], "minimize")
    versus = compare(winner, base, "minimize", "val_error")
    study.set_user_attr(
        "confirm",
        {"scheme": "fold", "count": 3, "estimates": [e.to_dict() for e in ranking], "winner": winner.trial,
         "reason": reason, "reference": versus},
    )  # fmt: skip
    html = study_page(StudyData.load(study, importances=False))
    assert "against the baseline" in html and "the search beats not searching" in html
    assert "trial 0 (baseline)" in html  # the ranking figure labels the reference
