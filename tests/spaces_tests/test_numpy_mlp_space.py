from __future__ import annotations

import optuna

from objectives import get_task
from spaces.numpy_mlp import BASELINE, SPACE, suggest


def test_the_baseline_lies_in_the_default_space_and_narrowing_drops_what_it_cannot_reach() -> None:
    assert get_task("numpy-mlp").baseline == BASELINE
    assert SPACE.searched(BASELINE) == BASELINE  # every key drawn (widths as width_N), every value reachable
    narrow = SPACE.with_overrides({"width": {"low": 128, "high": 512}, "depth": 2, "loss": ["se"]})
    assert set(BASELINE) - set(narrow.searched(BASELINE)) == {"depth", "width_1", "loss"}
    fixed_lr = narrow.with_overrides({"lr": 0.1})  # still the numpy-mlp space after another override
    assert fixed_lr.searched(BASELINE).keys() == narrow.searched(BASELINE).keys() - {"lr"}
    assert "width_1" not in SPACE.with_overrides({"width": 100}).searched(BASELINE)  # a constant is not drawn
    assert SPACE.searched({"width_0": 100, "widths": 100}) == {}


def test_an_enqueued_baseline_is_drawn_as_it_stands() -> None:
    study = optuna.create_study()
    study.enqueue_trial(SPACE.searched(BASELINE))
    cfg = suggest(study.ask(), SPACE)
    drawn = cfg.to_dict()
    assert cfg.widths == (BASELINE["width_1"],)
    assert {k: v for k, v in BASELINE.items() if k not in ("depth", "width_1")} == {
        k: drawn[k] for k in BASELINE if k not in ("depth", "width_1")
    }
