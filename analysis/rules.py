"""The decision rules every report applies, and their one setting: the margin.

A difference between two cells (analysis.stats.Comparison) is judged against a declared margin, in the
metric's points (default 1 point; `python -m analysis report --margin`):
- "competitive" is non-inferiority: the one-sided 95 % lower bound above -margin (H0: diff <= -margin);
- "similar" is equivalence by two one-sided tests (TOST): the 90 % interval inside +-margin
  (H0: |diff| >= margin; p is the larger of the two one-sided p-values);
- "gain" is superiority: the one-sided 95 % lower bound above 0 (H0: diff <= 0).
Each family of comparisons (one claim, or the answer's every-cell-against-full-FT) is corrected by
Holm's step-down method (statsmodels multipletests), and a verdict passes only on its adjusted p.
A failed test is not the opposite claim: "worse" or "different" needs the 95 % interval wholly past
the margin, and anything between is "inconclusive".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from statsmodels.stats.multitest import multipletests

from analysis.stats import Comparison, rows_needed, seeds_needed

MARGIN = 1.0
ALPHA = 0.05
POWER = 0.8

NON_INFERIORITY = "non-inferiority"
EQUIVALENCE = "equivalence"
SUPERIORITY = "superiority"


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


@dataclass
class Judged:
    """One comparison of a family, its test, its p before and after Holm, and its verdict."""

    comparison: Comparison
    test: str
    p: float
    p_holm: float
    verdict: str
    family: int


@dataclass(frozen=True)
class Rules:
    margin: float = MARGIN
    alpha: float = ALPHA
    power: float = POWER

    def __post_init__(self):
        if not (isinstance(self.margin, (int, float)) and self.margin > 0 and math.isfinite(self.margin)):
            raise ValueError(f"margin: {self.margin!r} is not allowed; it is a positive number of the metric's points")

    @property
    def unit(self) -> str:
        return "point" if self.margin == 1 else "points"

    def describe(self) -> str:
        m = f"{self.margin:g}"
        return (f"margin {m} {self.unit}; similar = equivalence (TOST: the 90% interval inside ±{m}), competitive = "
                f"non-inferiority (one-sided 95% lower bound above −{m}), gain = superiority (one-sided 95% lower "
                f"bound above 0); Holm's correction across each family of comparisons, α = {self.alpha:g}")

    def p_value(self, comparison: Comparison, test: str) -> float:
        if test == NON_INFERIORITY:
            return comparison.p_above(-self.margin)
        if test == EQUIVALENCE:
            return max(comparison.p_above(-self.margin), comparison.p_below(self.margin))
        if test == SUPERIORITY:
            return comparison.p_above(0.0)
        raise ValueError(f"test: {test!r}; allowed: {NON_INFERIORITY}, {EQUIVALENCE}, {SUPERIORITY}")

    def interval_level(self, test: str) -> float:
        """The two-sided interval whose bound(s) a test at alpha reads: 90 % for one-sided 5 % tests."""
        return 1 - 2 * self.alpha

    def _failed(self, comparison: Comparison, test: str) -> str:
        low, high = comparison.interval(1 - self.alpha)
        if test == NON_INFERIORITY:
            return "worse" if high < -self.margin else "inconclusive"
        if test == EQUIVALENCE:
            return "different" if high < -self.margin or low > self.margin else "inconclusive"
        return "no gain shown"

    def verdict(self, comparison: Comparison, test: str, p_holm: float) -> str:
        if not comparison.testable:
            return "untested"
        if p_holm < self.alpha:
            return {NON_INFERIORITY: "competitive", EQUIVALENCE: "similar", SUPERIORITY: "gain"}[test]
        return self._failed(comparison, test)

    def family(self, comparisons: list[Comparison], test: str) -> list[Judged]:
        """Each comparison judged by `test`, Holm-corrected across the ones that could be tested."""
        ps = [self.p_value(c, test) if c.testable else math.nan for c in comparisons]
        tested = [p for p in ps if not math.isnan(p)]
        adjusted = iter(multipletests(tested, alpha=self.alpha, method="holm")[1] if tested else [])
        holm = [math.nan if math.isnan(p) else float(next(adjusted)) for p in ps]
        return [Judged(c, test, p, h, self.verdict(c, test, h), len(tested)) for c, p, h in zip(comparisons, ps, holm)]

    def evidence(self, judged: Judged, bounds: tuple[float, float] | None = None) -> str:
        """The comparison in words: its value and interval, what the interval answers, its test and p."""
        c = judged.comparison
        if not c.testable:
            return f"{c.value:+.2f} points, {c.method}"
        level = self.interval_level(judged.test)
        est = c.estimate(level, bounds)
        return (f"{est.text(signed=True)} points ({100 * level:.0f}% interval: {c.answers}; {c.method}); "
                f"{self.threshold_text(judged.test)}: p {p_text(judged.p)}, Holm p {p_text(judged.p_holm)} "
                f"(family of {judged.family}) -> {judged.verdict}")

    def threshold_text(self, test: str) -> str:
        return {NON_INFERIORITY: f"non-inferiority at −{self.margin:g}",
                EQUIVALENCE: f"equivalence within ±{self.margin:g}",
                SUPERIORITY: "superiority over 0"}[test]

    def sample_size(self, comparison: Comparison) -> tuple[float, float]:
        """Seeds, and test rows, that non-inferiority at the margin would need (80 % power) if the observed
        difference and spreads are the truth, each holding the other source of noise as it is."""
        shortfall = comparison.value + self.margin
        return (seeds_needed(shortfall, comparison.sd_seed, self.alpha, self.power),
                rows_needed(shortfall, comparison.sd_row, self.alpha, self.power))
