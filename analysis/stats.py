"""Intervals and tests over seeds, each naming its method: scipy.stats, never hand-rolled.

With a handful of seeds a percentile bootstrap returns little more than the seed range (at n = 3 it
is the range), so it is not used: a mean gets a Student t interval; a difference of two cells gets
a paired t test when both ran the same seeds (the seed fixes initialisation and data order, so it
pairs), else Welch's t test. Each result carries n, the test's name, its p-value and the interval.

The test split itself is finite: a run's accuracy on n test rows has a binomial standard error of
sqrt(p(1-p)/n), stated beside every table (`binomial_se`). `detectable_difference` turns the test
split and the seeds into the smallest difference a comparison can tell from zero (a power line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass
class Estimate:
    """A mean with its interval, or a difference with its test."""

    value: float
    low: float
    high: float
    n: int
    method: str
    p: float | None = None

    @property
    def holds_zero(self) -> bool | None:
        if math.isnan(self.low):
            return None
        return self.low <= 0 <= self.high

    def text(self, digits: int = 2, signed: bool = False) -> str:
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if math.isnan(self.value):
            return f"– (n={self.n})"
        if math.isnan(self.low):
            return f"{fmt.format(self.value)} (n={self.n})"
        return f"{fmt.format(self.value)} [{fmt.format(self.low)}, {fmt.format(self.high)}] (n={self.n})"


def mean_interval(values, level: float = LEVEL) -> Estimate:
    """Student t interval of the mean of `values` (one value: no interval)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1, "one run: no interval")
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=stats.sem(x))
    return Estimate(mean, float(low), float(high), n, f"t, {n - 1} df")


def difference(a: dict, b: dict, level: float = LEVEL) -> Estimate:
    """mean(a) - mean(b) with its interval and p-value; `a`, `b` map seed -> score.

    Paired t test over the seeds both ran when they ran the same seeds (at least 2), else Welch.
    """
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2 and len(shared) == len(a) == len(b):
        result = stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared])
        n, method, value = len(shared), f"paired t, {len(shared) - 1} df", float(np.mean([a[s] - b[s] for s in shared]))
    elif len(a) >= 2 and len(b) >= 2:
        result = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        n, method = len(a) + len(b), f"Welch t, {result.df:.1f} df"
        value = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    else:
        value = float(np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else math.nan
        return Estimate(value, math.nan, math.nan, len(a) + len(b), "too few seeds for a test")
    ci = result.confidence_interval(level)
    return Estimate(value, float(ci.low), float(ci.high), n, method, float(result.pvalue))


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of one run's accuracy on `n` test rows (a fraction)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def detectable_difference(accuracy: float, test_rows: int, seeds: int, seed_sd: float = 0.0,
                          level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest true difference in accuracy (a fraction) between two methods that a two-sided
    test at `level` finds with probability `power`, from `seeds` runs of each on `test_rows` test rows.

    Two noises add: seed to seed (`seed_sd`, the spread of one run's accuracy across seeds, shrinks
    with more seeds) and the test split's own (binomial, does not shrink with seeds: it shrinks with
    more test rows). The two methods' test errors are taken as independent, which overstates the
    split's share when they agree on most rows: read it as an upper bound. Normal quantiles.
    """
    if seeds < 1 or test_rows < 1:
        return math.nan
    variance = 2 * seed_sd ** 2 / seeds + 2 * binomial_se(accuracy, test_rows) ** 2
    z = stats.norm.ppf(1 - (1 - level) / 2) + stats.norm.ppf(power)
    return float(z * math.sqrt(variance))
