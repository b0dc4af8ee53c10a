"""The pipeline's budget arithmetic and its confirmation plan (no training)."""

from __future__ import annotations

import datetime

import optuna
import pytest
from optuna.trial import TrialState

from objectives import BudgetShares
from search.pipeline.budget import STAGES, Budget, parse_stages
from search.pipeline.run import confirm_plan, fewer_replicates_plan, prep_seconds, replicate_seconds


def trial(number: int, seconds: float, **attrs) -> optuna.trial.FrozenTrial:
    start = datetime.datetime(2026, 12, 6, 12, 0, 0)
    return optuna.trial.FrozenTrial(
        number=number, state=TrialState.COMPLETE, value=0.1, values=None, datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=seconds), params={}, distributions={},
        user_attrs=attrs, system_attrs={}, intermediate_values={}, trial_id=number,
    )  # fmt: skip


def test_each_stage_gets_its_share_of_what_is_left_over_the_stages_still_to_run() -> None:
    budget = Budget(BudgetShares(search=0.6, confirm=0.3, refit=0.1), STAGES, seconds=103, started=1000.0)
    assert budget.end == pytest.approx(1100.0)  # the command's exit keeps END_RESERVE_S (3 s)
    assert budget.share("search") == pytest.approx(0.6)
    budget.spent["search"] = 80.0  # the search ended; confirm and refit share what is left, 3 : 1
    assert budget.share("confirm") == pytest.approx(0.75) and budget.share("refit") == pytest.approx(0.25)
    budget.spent["confirm"] = 5.0
    assert budget.share("refit") == 1.0 and budget.share("ensemble") == 0.0


def test_a_stage_left_out_gives_its_share_to_the_others() -> None:
    budget = Budget(BudgetShares(search=0.6, confirm=0.3, refit=0.1), ("search", "refit"), seconds=70)
    assert budget.share("search") == pytest.approx(6 / 7)
    assert "confirm" not in budget.plan(("fold", 5))


def test_no_budget_means_no_deadline() -> None:
    budget = Budget(BudgetShares(), STAGES)
    assert budget.deadline("search") is None and budget.left() is None
    assert budget.plan(("seed", 2)).startswith("plan: search, confirm ≤ 3 trials × 2 seeds, refit")


def test_the_plan_names_each_stage_with_its_minutes() -> None:
    plan = Budget(BudgetShares(search=0.7, confirm=0.2, refit=0.1), STAGES, seconds=1200).plan(("fold", 5))
    assert plan == (
        "plan for 20.0 min: search 14.0 min, confirm ≤ 3 trials × 5 folds ≈ 4.0 min, refit ≈ 2.0 min, "
        "ensemble if confirmation shows a gain"
    )


@pytest.mark.parametrize(
    ("text", "stages"), [("search", ("search",)), ("refit, search", ("search", "refit"))]
)
def test_stages_are_put_in_pipeline_order(text, stages) -> None:
    assert parse_stages(text) == stages


@pytest.mark.parametrize("text", ["", "search,deploy", ","])
def test_unknown_or_no_stages_are_refused(text) -> None:
    with pytest.raises(ValueError, match="--stages: unknown stage"):
        parse_stages(text)


def test_a_replicate_is_estimated_at_its_trials_training_seconds_over_its_folds() -> None:
    assert replicate_seconds(trial(0, 50.0, train_seconds=20.0)) == 20.0
    assert replicate_seconds(trial(1, 50.0)) == 50.0  # no train_seconds: the whole duration
    assert replicate_seconds(trial(2, 50.0, folds=5)) == 10.0  # a 5-fold trial trained five times


def test_confirmation_takes_the_most_top_trials_that_fit_with_the_reference() -> None:
    leaders = [trial(n, 10.0) for n in range(1, 5)]
    reference = trial(0, 10.0)
    # 2 configurations × 2 seeds = 4 replicates of (10 + 1) s, ×1.25, + 5 s: 60 s
    assert confirm_plan(leaders, reference, 2, 1, 60.0, 3, overhead=5.0) == (1, pytest.approx(60.0))
    assert confirm_plan(leaders, reference, 2, 1, 59.0, 3, overhead=5.0)[0] == 0  # not even that fits
    assert confirm_plan(leaders, reference, 2, 2, 59.0, 3, overhead=5.0)[0] == 2  # two workers: 3 rounds
    assert confirm_plan(leaders, reference, 2, 1, None, 3)[0] == 3  # no budget: the most asked
    assert confirm_plan(leaders[:1], None, 2, 1, None, 3) == (0, 0.0)  # one configuration: no comparison
    assert confirm_plan([reference, *leaders], reference, 2, 1, None, 3)[0] == 3  # the reference leads


def test_a_probes_feature_extraction_is_planned_once_before_its_replicates_not_in_each() -> None:
    # the baseline probe missed the feature cache (200 of its 205 s); a later probe of its backbone hit it
    baseline = trial(0, 210.0, train_seconds=205.0, prep_seconds=200.0, prep_key="lite0@224")
    leader = trial(1, 10.0, train_seconds=6.0, prep_seconds=0.5, prep_key="lite0@224")
    assert replicate_seconds(baseline) == pytest.approx(5.0) and replicate_seconds(leader) == 5.5
    prep = prep_seconds([baseline, leader, trial(2, 10.0)], 2.2)
    assert prep == {"lite0@224": pytest.approx(440.0)}
    # 2 configurations × 5 folds of (5.5 + 1) s after one extraction of 440 s, ×1.25, + 10 s
    top, needed = confirm_plan([leader], baseline, 5, 1, 700.0, 3, overhead=10.0, prep=prep)
    assert top == 1 and needed == pytest.approx(10.0 + 1.25 * (440.0 + 10 * 6.5))
    assert confirm_plan([leader], baseline, 5, 1, 600.0, 3, overhead=10.0, prep=prep)[0] == 0


def test_an_expensive_leader_is_confirmed_over_fewer_replicates_rather_than_not_at_all() -> None:
    leader, reference = trial(1, 150.0), trial(0, 5.0)  # a fine-tune trial leads the baseline probe

    def plan(seconds: float, count: int = 5):
        return fewer_replicates_plan(
            lambda n: confirm_plan([leader], reference, n, 1, seconds, 3, overhead=10.0), count
        )

    # 2 configurations × 5 folds of (150 + 1) s, ×1.25, + 10 s = 1897.5 s; × 3 folds: 1142.5 s
    assert confirm_plan([leader], reference, 5, 1, 1200.0, 3, overhead=10.0)[0] == 0
    assert plan(1200.0) == (1, 3, pytest.approx(10.0 + 1.25 * 6 * 151.0))
    assert plan(2000.0)[1] == 5  # all fit
    assert plan(1100.0) == (0, 5, 0.0)
    assert plan(100.0, count=2)[:2] == (0, 2)  # never below 2 seeds
