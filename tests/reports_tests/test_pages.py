"""Study and index pages rendered from real studies: sections, escaping, plotly.js once per page."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import optuna
import pytest
from plotly.offline import get_plotlyjs

from reports import StudyData, index_page, study_page
from reports.analysis import select_curves

PLOTLYJS_HEAD = get_plotlyjs()[:300]


class _Text(HTMLParser):
    """The text a browser shows (script and style contents left out) and every tag it builds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def load(url: str, name: str, **kwargs) -> StudyData:
    return StudyData.load(optuna.load_study(study_name=name, storage=url), **kwargs)


def figure_names(page: str) -> list[str]:
    return re.findall(r'<div class="figure" data-figure="([^"]+)">', page)


def test_study_page_shows_every_section_for_complete_pruned_failed_and_running_trials(report_storage) -> None:
    page = study_page(load(report_storage, "mlp"))
    text = " ".join(parse(page).text)
    for heading in (
        "Summary",
        "Best trial: #1",
        "How it was trained",
        "Optimisation history",
        "Per-epoch curves",
        "Parameter importances",
        "Parallel coordinates",
        "Slices",
        "Top trials",
        "Failed and unfinished trials",
        "Study settings",
        "Searched space",
    ):
        assert heading in text, heading
    figures = ["best-curves", "trust-scatter", "history", "curves", "importances", "parallel", "slices"]
    assert figure_names(page) == figures
    assert "Pruning stopped 3 trials early; they skipped 9 epochs in all." in text  # 3 x (5 - 2)
    assert "FloatingPointError: overflow in epoch 1" in text and "RUNNING" in text
    assert "The best 4 of 4 completed trials" in text
    assert page.count(PLOTLYJS_HEAD) == 1  # plotly.js once, inline: the page opens alone


def test_study_page_loads_plotlyjs_from_beside_when_asked(report_storage) -> None:
    page = study_page(load(report_storage, "mynet"), plotlyjs="plotly.min.js")
    assert PLOTLYJS_HEAD not in page
    assert page.count('<script src="plotly.min.js"') == 1
    assert "https://" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_study_page_escapes_hostile_names_everywhere(report_storage, hostile) -> None:
    page = study_page(load(report_storage, hostile["study"]))
    for raw in (*hostile.values(), "<script>window.__pwned", "<b>task</b>"):
        assert raw not in page, raw
    parsed = parse(page)
    assert set(parsed.tags) <= {
        "html", "head", "meta", "title", "style", "script", "body", "main", "h1", "h2", "h3", "p", "div",
        "span", "b", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "a",
    }  # fmt: skip
    assert "img" not in parsed.tags and "i" not in parsed.tags and "u" not in parsed.tags
    text = "".join(parsed.text)
    for shown in (hostile["study"], hostile["param"], hostile["attr"], hostile["choice"], hostile["metric"]):
        assert shown in text, shown  # shown as text, not markup
    assert "window.__pwned=3" in text  # an attribute value, shown as text
    # Figures: plotly reads entities, so names reach it as &lt;...; in JSON "<" is written \u003c.
    assert "&lt;img src=x onerror=" in page.replace("\\u0026", "&")


def test_study_page_says_why_importances_are_missing_with_one_completed_trial(tmp_path) -> None:
    study = optuna.create_study(study_name="single", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) ** 2, n_trials=1)
    page = study_page(StudyData.load(study))
    assert "Parameter importances need at least 2 completed trials; this study has 1." in page
    assert "importances" not in figure_names(page) and "history" in figure_names(page)


def test_study_page_of_a_study_without_trials(tmp_path) -> None:
    study = optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path / 'e.db'}")
    page = study_page(StudyData.load(study))
    assert "No trial has completed yet." in page and figure_names(page) == []


def test_study_page_of_a_multi_objective_study_shows_the_first_objective(tmp_path) -> None:
    study = optuna.create_study(directions=["minimize", "maximize"], storage=f"sqlite:///{tmp_path / 'm.db'}")
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=4)
    data = StudyData.load(study)
    assert data.trials["value"].tolist() == pytest.approx(data.trials["params_x"].tolist())
    page = study_page(data)
    assert "Multi-objective study (2 objectives): showing the first." in page and "history" in figure_names(
        page
    )


def test_index_page_compares_studies_of_several_tasks_and_metrics(report_storage, hostile) -> None:
    studies = [load(report_storage, n, importances=False) for n in ("mlp", "mynet", hostile["study"])]
    page = index_page(studies, {"mlp": "study-mlp.html"}, storage="sqlite:///x.db")
    parsed = parse(page)
    text = " ".join(parsed.text)
    assert '<a href="study-mlp.html">mlp</a>' in page
    assert "mynet" in text and hostile["study"] in text and hostile["study"] not in page
    body = page.split("<body>", 1)[1]
    assert body.count("<a href=") == 1  # the studies without a page are listed, not linked
    assert len(figure_names(page)) == 3  # one comparison per metric and direction
    assert "Best val_accuracy so far (maximize)" in text and "Best val_error so far (minimize)" in text
    assert page.count(PLOTLYJS_HEAD) == 1


def test_select_curves_keeps_the_best_and_spreads_the_sample() -> None:
    study = optuna.create_study()
    for i in range(40):
        state = optuna.trial.TrialState.PRUNED if i % 2 else optuna.trial.TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(state=state, value=float(i), intermediate_values={1: float(i)})
        )
    selection = select_curves(StudyData.load(study), top=3, cap=5)
    assert selection.top == [0, 2, 4]
    assert (selection.n_other_complete, selection.n_pruned) == (17, 20)
    assert selection.pruned == [1, 11, 21, 29, 39]  # evenly spread, first and last included
    assert selection.other_complete == [6, 14, 22, 30, 38]


@pytest.mark.parametrize("n", [0, 1])
def test_select_curves_small_studies_keep_everything(n) -> None:
    study = optuna.create_study()
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(i)))
    selection = select_curves(StudyData.load(study))
    assert selection.top == list(range(n)) and selection.pruned == [] and selection.other_complete == []
