"""``rpztune submit --data DIR --timeout T``: the lab's whole deliverable from nothing, within one budget.

The three studies run one after the other, each through the pipeline (:mod:`search.pipeline.run`), with
the budget split by what the lab rewards (:data:`SHARES`): the NumPy part must pass the lab's checks and
MyNet 75 %, while the leaderboard ranks FinetuneNet, so FinetuneNet gets the most time and runs last,
taking whatever the others left. :data:`FINISH_SHARE` is kept for the FCNet figure, the zip and
``validate``. Progress is kept beside the zip (``<out>.progress.json``): a run interrupted after a study
skips it when run again and continues with the next (a study interrupted mid-way continues its pipeline);
the file goes once the zip is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import objectives
from objectives.files import atomic_write_text
from search.engine.study import RunSummary
from search.pipeline.run import run_pipeline

__all__ = ["FINISH_SHARE", "SHARES", "StudyRuns", "run_studies"]

# role -> (task, share of the budget); the order is the order they run in
SHARES = {"numpy": ("numpy-mlp", 0.10), "mynet": ("mynet", 0.25), "finetune": ("finetune", 0.55)}
FINISH_SHARE = 0.10  # the FCNet study (when none exists), the zip and validate


@dataclass
class StudyRuns:
    """Where the time went: seconds per study and for the finish, and each study's last lines."""

    seconds: dict[str, float] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    finish_started: float = 0.0  # when the FCNet figure, the zip and validate began

    def describe(self, wall: float, budget: float) -> str:
        """One line: each part's seconds, then the wall time against the budget."""
        parts = ", ".join(f"{role} {seconds:.0f} s" for role, seconds in self.seconds.items())
        return f"time: {parts}; wall {wall:.0f} s of the {budget:.0f} s budget"


def _searched(summary: RunSummary) -> str:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary.counts.items()))
    best = "" if summary.best_trial is None else f"; best {summary.metric} {summary.best_value:.4f}"
    return f"search: {summary.new_trials} new trials (total {counts}){best}"


def data_for(task: objectives.Task, root: Path) -> str:
    """Where ``task``'s data lies under the data folder ``root``: its ``data_subfolder`` (or that name's zip)
    when it has one, else ``root``."""
    for name in (task.data_subfolder, f"{task.data_subfolder}.zip") if task.data_subfolder else ():
        if (root / name).exists():
            return str(root / name)
    return str(root)


def run_studies(
    storage: str,
    data: str | Path,
    timeout: float,
    *,
    studies: dict[str, str],
    progress: Path,
    started: float | None = None,
    seed: int | None = None,
    workers: int = 1,
    device: str = "auto",
    checkpoints: str | None = None,
    n_trials: int | None = None,
    overrides: dict[str, list[str]] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> StudyRuns:
    """Run the three studies (``studies``: role → study name) through the pipeline within ``timeout``
    seconds from ``started``, leaving :data:`FINISH_SHARE` of it; skip those ``progress`` says are done.
    ``n_trials``: each search's trials; ``overrides``: task name → ``KEY=VALUE`` of a new study's space.

    Raises:
        DataError: when ``data`` does not exist; what ``run_pipeline`` raises.
    """
    root = Path(data)
    if not root.exists():
        raise objectives.DataError(f"data path {str(root)!r} does not exist")
    started = started or time.time()
    end = started + timeout * (1 - FINISH_SHARE)
    done: dict[str, Any] = json.loads(progress.read_text()) if progress.is_file() else {}
    runs = StudyRuns()
    roles = list(SHARES)
    for index, role in enumerate(roles):
        task_name, share = SHARES[role]
        if role in done.get("studies", {}):
            runs.skipped.append(role)
            log(f"{role}: study {studies[role]!r} was finished by the interrupted submit; kept")
            continue
        still = sum(SHARES[r][1] for r in roles[index:] if r not in done.get("studies", {}))
        seconds = max(1.0, (end - time.time()) * share / still)
        task = objectives.get_task(task_name)
        log(f"{role}: rpztune run {task_name} --study {studies[role]} for {seconds:.0f} s")
        began = time.time()
        result = run_pipeline(
            task_name, study_name=studies[role], storage=storage, data=data_for(task, root), timeout=seconds,
            started=began, workers=workers, device=device, checkpoints=checkpoints, seed=seed, progress=False,
            n_trials=n_trials, overrides=(overrides or {}).get(task_name, ()),
            log=lambda line, role=role: log(f"  {role}: {line}"),
            on_search=lambda summary, role=role: log(f"  {role}: {_searched(summary)}"),
        )  # fmt: skip
        runs.seconds[role] = time.time() - began
        runs.lines[role] = result.lines
        done.setdefault("studies", {})[role] = {
            "study": studies[role],
            "seconds": round(runs.seconds[role], 1),
        }
        atomic_write_text(progress, json.dumps(done, indent=2) + "\n")
    return runs
