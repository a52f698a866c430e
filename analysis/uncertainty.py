"""Seed-to-seed uncertainty: percentile bootstrap intervals of a mean and of a difference of means.

Resampling draws seeds with replacement from a generator with a fixed seed, so a report is the same
every time it is built. With a handful of seeds (n = 3) a percentile bootstrap understates the
spread (it can only resample the values it has): "within noise" by this rule is a lenient bar.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0


def _bootstrap_means(values, rng: np.random.Generator, resamples: int) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def mean_ci(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values`; (nan, nan) below two values."""
    if len(values) < 2:
        return float("nan"), float("nan")
    return _interval(_bootstrap_means(values, np.random.default_rng(seed), resamples), level)


def difference_ci(a, b, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The interval of mean(a) - mean(b), each group resampled on its own (independent seeds)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    return _interval(_bootstrap_means(a, rng, resamples) - _bootstrap_means(b, rng, resamples), level)


def within_noise(interval: tuple[float, float]) -> bool | None:
    """True when the interval of a difference holds 0; None when there is no interval."""
    low, high = interval
    if np.isnan(low) or np.isnan(high):
        return None
    return low <= 0 <= high
