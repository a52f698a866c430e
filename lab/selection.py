"""Choosing a hyper-parameter per cell on the validation split, and whether the choice is bracketed.

One rule for the sweeper that extends a grid (hydra_plugins/lab_sweeps) and for the reports:

- a value is eligible when every run of it finished `ok` and none collapsed (a value at which any
  seed learned nothing is unstable; its runs are shown, never averaged);
- the chosen value is the eligible one with the best mean validation score over the cell's base
  seeds (the seeds every value was tried at; seeds added later at the chosen value only confirm it);
- the choice is bracketed when a tried value lies on each side of it (each worse, or not eligible);
  otherwise it sits on the edge of its grid, and the optimum may lie outside.

Plain Python over plain values: no pandas, so the sweeper can import it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Trial:
    """One run of one value: its seed, its validation score, and whether it counts."""

    seed: int
    score: float | None
    learned: bool


@dataclass
class Choice:
    chosen: float | None
    values: list[float]
    means: dict[float, float] = field(default_factory=dict)
    base_seeds: list[int] = field(default_factory=list)

    @property
    def edge(self) -> str | None:
        """'low' or 'high' when the chosen value is the smallest or largest tried, else None."""
        if self.chosen is None:
            return None
        if self.chosen == min(self.values):
            return "low"
        return "high" if self.chosen == max(self.values) else None

    @property
    def bracketed(self) -> bool:
        return self.chosen is not None and self.edge is None


def choose(trials: dict[float, list[Trial]], higher_is_better: bool = True) -> Choice:
    """The chosen value of one cell from its trials {value: [Trial, ...]}."""
    values = sorted(trials)
    seed_sets = [{t.seed for t in runs} for runs in trials.values()]
    base = sorted(set.intersection(*seed_sets)) if seed_sets else []
    means = {}
    # In value order, so that a tie goes to the smallest value whatever order the runs were read in.
    for value, runs in sorted(trials.items()):
        if not runs or not all(t.learned and t.score is not None and math.isfinite(t.score) for t in runs):
            continue
        scores = [t.score for t in runs if t.seed in base] or [t.score for t in runs]
        means[value] = statistics.fmean(scores)
    if not means:
        return Choice(None, values, means, base)
    pick = max if higher_is_better else min
    return Choice(pick(means, key=means.get), values, means, base)


def spacing(values: list[float]) -> float:
    """The geometric step of a grid (its max/min over its gaps); 4 for a single value."""
    values = sorted(set(values))
    if len(values) < 2:
        return 4.0
    return (values[-1] / values[0]) ** (1 / (len(values) - 1))


def neighbour(choice: Choice, step: float) -> float | None:
    """The value beyond the grid edge the choice sits on (None when bracketed or nothing chosen)."""
    if choice.edge == "low":
        return round_value(choice.chosen / step)
    if choice.edge == "high":
        return round_value(choice.chosen * step)
    return None


def round_value(value: float) -> float:
    """Two significant digits: grid values people can read and retype (3.2e-2, 1.2e-4)."""
    return float(f"{value:.2g}")
