"""One command's wall-clock budget, split between the pipeline's stages as the time goes.

``run --timeout T`` is the budget of the whole command. Each stage gets, when it starts, its share of the
time still left over the shares of the stages still to run (:class:`objectives.BudgetShares`), so time a
stage did not use moves on, and a machine slower than planned shortens the stages after it instead of the
budget growing. Every stage ends at its deadline however its estimates went (the trials, the confirmation
workers and the refit check it, see ``docs/engine.md``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from objectives import BudgetShares

__all__ = ["STAGES", "Budget", "parse_stages"]

STAGES = ("search", "confirm", "refit", "ensemble")
_SHARED = ("search", "confirm", "refit")  # the ensemble's choice reads stored predictions: seconds
END_RESERVE_S = 3.0  # the last stage ends this early: the summary lines and the process's exit


def parse_stages(text: str) -> tuple[str, ...]:
    """``"search,confirm"`` → the stages in pipeline order.

    Raises:
        ValueError: naming an unknown stage.
    """
    asked = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in asked if name not in STAGES]
    if unknown or not asked:
        bad = unknown[0] if unknown else text
        raise ValueError(f"--stages: unknown stage {bad!r}; stages: {', '.join(STAGES)}")
    return tuple(name for name in STAGES if name in asked)


@dataclass
class Budget:
    """The command's budget (``seconds``: ``None`` without ``--timeout``) from ``started`` (``time.time()``),
    the stages it runs, and the seconds each stage took."""

    shares: BudgetShares
    stages: Sequence[str]
    seconds: float | None = None
    started: float = field(default_factory=time.time)
    spent: dict[str, float] = field(default_factory=dict)

    @property
    def end(self) -> float | None:
        """``time.time()`` when the budget ends."""
        return None if self.seconds is None else self.started + self.seconds - END_RESERVE_S

    def left(self) -> float | None:
        """Seconds until :attr:`end` (``None``: no budget)."""
        return None if self.end is None else max(0.0, self.end - time.time())

    def share(self, stage: str) -> float:
        """``stage``'s share of the time left among the stages still to run."""
        if stage not in _SHARED:
            return 0.0
        still = [name for name in _SHARED if name in self.stages and name not in self.spent]
        total = sum(getattr(self.shares, name) for name in still)
        return getattr(self.shares, stage) / total if total else 1.0

    def deadline(self, stage: str) -> float | None:
        """``time.time()`` by which ``stage``, starting now, must end."""
        left = self.left()
        return None if left is None else time.time() + left * self.share(stage)

    def record(self, stage: str, started: float) -> None:
        """``stage`` ran from ``started`` until now."""
        self.spent[stage] = self.spent.get(stage, 0.0) + time.time() - started

    def plan(self, confirm_scheme: tuple[str, int] | None) -> str:
        """The plan in one line, e.g. ``plan for 20.0 min: search 14.0 min, confirm ≤ 3 trials × 2 seeds
        ≈ 4.0 min, refit ≈ 2.0 min``."""
        parts = []
        for stage in self.stages:
            seconds = None if self.seconds is None else self.seconds * self.share(stage)
            when = "" if seconds is None else f" {_minutes(seconds)}"
            if stage == "search":
                parts.append(f"search{when}")
            elif stage == "confirm" and confirm_scheme is not None:
                scheme, count = confirm_scheme
                parts.append(
                    f"confirm ≤ {self.shares.top} trials × {count} {scheme}s{' ≈' + when if when else ''}"
                )
            elif stage == "refit":
                parts.append(f"refit{' ≈' + when if when else ''}")
            elif stage == "ensemble":
                parts.append("ensemble if confirmation shows a gain")
        head = "plan" if self.seconds is None else f"plan for {_minutes(self.seconds)}"
        return f"{head}: {', '.join(parts)}"

    def where_it_went(self) -> str:
        """One line: each stage's seconds and the wall time against the budget."""
        wall = time.time() - self.started
        stages = ", ".join(f"{name} {self.spent[name]:.0f} s" for name in STAGES if name in self.spent)
        versus = "" if self.seconds is None else f" of the {self.seconds:.0f} s budget"
        return f"time: {stages or 'nothing ran'}; wall {wall:.0f} s{versus}"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
