"""Intervals and tests, each naming its method and what it answers: scipy.stats and statsmodels, never
hand formulas for a test they have.

A cell's mean gets a Student t interval over its seeds (with a handful of seeds a percentile bootstrap
of the mean returns little more than the seed range), clipped to the metric's range when asked.

A difference of two cells is a `Comparison`, estimated over every source of noise the records allow:
- per-row outputs on the shared seeds (lab.rows): a two-level bootstrap that resamples the paired seeds
  and the shared test rows (aligned by row id) at once: it answers "another training seed and another
  test sample"; with one shared seed, McNemar's exact test and a bootstrap over rows ("another test
  sample");
- no per-row outputs (older records): the paired t test over the seeds both ran, Welch's t where the
  seeds differ: it answers "another training seed" only (the test split is taken as fixed).
Each comparison gives its interval at any level and one-sided p-values against any threshold, which
the decision rules (analysis.rules) turn into verdicts.

The bootstrap draws from a fixed seed, so a report is the same every time it is built. Resampling five
seeds with replacement understates their variance by (n-1)/n; the seed-level deviations are scaled by
sqrt(n/(n-1)) before resampling (Davison & Hinkley's adjusted residuals) so the seed share is unbiased.
Its percentiles still behave like normal quantiles, not Student t's: at 5 seeds, where the seed share
dominates, the interval is up to ~25 % narrower than the seed-paired t's would be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower, TTestPower

LEVEL = 0.95
DRAWS = 10_000
BOOTSTRAP_SEED = 20_261_207
_CHUNK = 2_000

SEED = "another training seed"
ROWS = "another test sample"
BOTH = "another training seed and another test sample"


@dataclass
class Estimate:
    """A value with its interval (NaN where there is none)."""

    value: float
    low: float
    high: float
    n: int
    method: str
    p: float | None = None
    clipped: bool = False

    def text(self, digits: int = 2, signed: bool = False) -> str:
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        if math.isnan(self.value):
            return f"– (n={self.n})"
        if math.isnan(self.low):
            return f"{fmt.format(self.value)} (n={self.n})"
        mark = "*" if self.clipped else ""
        return f"{fmt.format(self.value)} [{fmt.format(self.low)}, {fmt.format(self.high)}]{mark} (n={self.n})"


def clip(est: Estimate, bounds: tuple[float, float] | None) -> Estimate:
    """The interval cut at the metric's range (an interval past 100 % describes nothing that can happen)."""
    if bounds is None or math.isnan(est.low):
        return est
    low, high = max(est.low, bounds[0]), min(est.high, bounds[1])
    if (low, high) == (est.low, est.high):
        return est
    return Estimate(est.value, low, high, est.n, est.method + ", clipped to the metric's range", est.p, True)


def mean_interval(values, level: float = LEVEL, bounds: tuple[float, float] | None = None) -> Estimate:
    """Student t interval of the mean of `values` (one value: no interval), clipped to `bounds`."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1, "one run: no interval")
    if np.ptp(x) == 0:
        return Estimate(mean, mean, mean, n, f"t, {n - 1} df (no spread)")
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=stats.sem(x))
    return clip(Estimate(mean, float(low), float(high), n, f"t, {n - 1} df"), bounds)


def seed_sd(values) -> float:
    x = np.asarray(list(values), dtype=float)
    return float(x.std(ddof=1)) if len(x) >= 2 else math.nan


@dataclass
class Comparison:
    """mean(a) - mean(b): its value, what its interval answers, and the spreads a sample size needs."""

    value: float
    n: int
    method: str
    answers: str
    p: float | None  # two-sided, against no difference
    sd_seed: float = math.nan  # SD of the per-seed differences
    sd_row: float = math.nan  # SD of the per-row differences (averaged over seeds)
    rows: int = 0

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        return math.nan, math.nan

    def p_above(self, threshold: float) -> float:
        """One-sided p of H0: difference <= threshold (small: the difference is shown above it)."""
        return math.nan

    def p_below(self, threshold: float) -> float:
        """One-sided p of H0: difference >= threshold (small: the difference is shown below it)."""
        return math.nan

    @property
    def testable(self) -> bool:
        return not math.isnan(self.interval()[0])

    def estimate(self, level: float = LEVEL, bounds: tuple[float, float] | None = None) -> Estimate:
        low, high = self.interval(level)
        return clip(Estimate(self.value, low, high, self.n, self.method, self.p), bounds)


@dataclass
class TComparison(Comparison):
    """Seeds only: the paired t over per-seed differences, or Welch's t over two sets of seeds."""

    a: np.ndarray = None
    b: np.ndarray = None
    paired: bool = True

    def _test(self, shift: float, alternative: str):
        if self.paired:
            return stats.ttest_1samp(self.a - self.b, shift, alternative=alternative)
        return stats.ttest_ind(self.a - shift, self.b, equal_var=False, alternative=alternative)

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        ci = self._test(0.0, "two-sided").confidence_interval(level)
        return float(ci.low), float(ci.high)

    def p_above(self, threshold: float) -> float:
        return float(self._test(threshold, "greater").pvalue)

    def p_below(self, threshold: float) -> float:
        return float(self._test(threshold, "less").pvalue)


@dataclass
class BootstrapComparison(Comparison):
    """Rows (and seeds): the bootstrap distribution of the difference."""

    draws: np.ndarray = None

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        tail = 100 * (1 - level) / 2
        low, high = np.percentile(self.draws, [tail, 100 - tail])
        return float(low), float(high)

    def p_above(self, threshold: float) -> float:
        return float((np.sum(self.draws <= threshold) + 1) / (len(self.draws) + 1))

    def p_below(self, threshold: float) -> float:
        return float((np.sum(self.draws >= threshold) + 1) / (len(self.draws) + 1))


class NoComparison(Comparison):
    """Too few seeds for any test: the difference of means alone."""


def _row_counts(rng: np.random.Generator, size: int, n_rows: int) -> np.ndarray:
    """`size` bootstrap draws of the rows, each as how often every row was drawn (size x rows)."""
    picks = rng.integers(0, n_rows, size=(size, n_rows)) + (np.arange(size) * n_rows)[:, None]
    return np.bincount(picks.ravel(), minlength=size * n_rows).reshape(size, n_rows)


def two_level_bootstrap(diffs: np.ndarray, draws: int = DRAWS, seed: int = BOOTSTRAP_SEED,
                        seeds: bool = True, rows: bool = True) -> np.ndarray:
    """Bootstrap means of a (seeds x rows) matrix of paired differences, resampling the seeds, the rows
    (the same rows for every seed: they are one test sample), or both. Vectorised: each chunk draws
    row counts (a multinomial via bincount) and seed indices, then one matrix product."""
    n_seeds, n_rows = diffs.shape
    per_seed = diffs.mean(axis=1)
    if seeds and n_seeds > 1:  # adjusted residuals: the seed share of the variance unbiased
        diffs = diffs + ((per_seed - per_seed.mean()) * (math.sqrt(n_seeds / (n_seeds - 1)) - 1))[:, None]
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, draws, _CHUNK):
        size = min(_CHUNK, draws - start)
        if rows:
            means = _row_counts(rng, size, n_rows) @ diffs.T / n_rows  # draws x seeds
        else:
            means = np.broadcast_to(diffs.mean(axis=1), (size, n_seeds))
        if seeds:
            means = np.take_along_axis(means, rng.integers(0, n_seeds, size=(size, n_seeds)), axis=1)
        out.append(means.mean(axis=1))
    return np.concatenate(out)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact test (statsmodels) of two classifiers scored on the same rows."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    return float(mcnemar(table, exact=True).pvalue)


def _two_sided(draws: np.ndarray) -> float:
    tail = min(np.sum(draws <= 0), np.sum(draws >= 0))
    return float(min(1.0, 2 * (tail + 1) / (len(draws) + 1)))


def row_comparison(rows_a: pd.DataFrame, rows_b: pd.DataFrame) -> Comparison | None:
    """The paired comparison on per-row outputs (seed x row id), over the seeds and rows both have;
    None when they share no seed or no row. Per-row scores (points) are averaged; predicted labels
    (`attrs["gold"]` beside them) are scored by macro-F1, recomputed on every draw."""
    seeds = rows_a.index.intersection(rows_b.index)
    ids = rows_a.columns.intersection(rows_b.columns)
    if not len(seeds) or not len(ids):
        return None
    if "gold" in rows_a.attrs:
        return macro_f1_comparison(rows_a.loc[seeds, ids], rows_b.loc[seeds, ids], rows_a.attrs["gold"].loc[ids],
                                   rows_a.attrs["classes"])
    a = rows_a.loc[seeds, ids].to_numpy(float)
    b = rows_b.loc[seeds, ids].to_numpy(float)
    diffs = a - b
    value, n_rows = float(diffs.mean()), len(ids)
    sd_row = float(diffs.mean(axis=0).std(ddof=1))
    if len(seeds) == 1:
        draws = two_level_bootstrap(diffs, seeds=False)
        return BootstrapComparison(value, 1, f"one seed: McNemar exact; bootstrap over {n_rows:,} rows", ROWS,
                                   mcnemar_exact(a[0] > 0, b[0] > 0), sd_row=sd_row, rows=n_rows, draws=draws)
    draws = two_level_bootstrap(diffs)
    return BootstrapComparison(value, len(seeds), f"two-level bootstrap, {len(seeds)} paired seeds x {n_rows:,} "
                               f"rows, {DRAWS:,} draws", BOTH, _two_sided(draws),
                               sd_seed=seed_sd(diffs.mean(axis=1)), sd_row=sd_row, rows=n_rows, draws=draws)


def macro_f1(pred: np.ndarray, gold: np.ndarray, classes: int, counts: np.ndarray) -> np.ndarray:
    """Macro-F1 in points (draws x seeds) of each seed's predicted labels (seeds x rows) when row i
    counts counts[draw, i] times. Per class F1 = 2TP / (predicted + gold positives), 0 where a class
    is neither predicted nor present: sklearn's f1_score(average="macro", labels=range(classes)),
    which the shipped metric calls; a weighted sum here so that every draw is a matrix product."""
    total = np.zeros((counts.shape[0], pred.shape[0]))
    for c in range(classes):
        is_gold = (gold == c).astype(float)
        is_pred = (pred == c).astype(float)
        tp = counts @ (is_pred * is_gold).T
        denominator = counts @ is_pred.T + (counts @ is_gold)[:, None]
        total += np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return 100 * total / classes


def macro_f1_comparison(pred_a: pd.DataFrame, pred_b: pd.DataFrame, gold: pd.Series, classes: int,
                        draws: int = DRAWS, seed: int = BOOTSTRAP_SEED) -> Comparison:
    """Macro-F1 of a minus b on the same seeds and rows: the two-level bootstrap of
    `two_level_bootstrap`, with macro-F1 recomputed from each draw's rows (it is not a mean over rows)."""
    a, b, g = pred_a.to_numpy(), pred_b.to_numpy(), gold.to_numpy()
    n_seeds, n_rows = a.shape
    per_seed = (macro_f1(a, g, classes, np.ones((1, n_rows))) - macro_f1(b, g, classes, np.ones((1, n_rows))))[0]
    value = float(per_seed.mean())
    # Adjusted residuals, as for a mean: the seed share of the variance unbiased.
    adjust = (per_seed - value) * (math.sqrt(n_seeds / (n_seeds - 1)) - 1) if n_seeds > 1 else 0.0
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, draws, _CHUNK):
        size = min(_CHUNK, draws - start)
        counts = _row_counts(rng, size, n_rows).astype(float)
        diffs = macro_f1(a, g, classes, counts) - macro_f1(b, g, classes, counts) + adjust
        if n_seeds > 1:
            diffs = np.take_along_axis(diffs, rng.integers(0, n_seeds, size=(size, n_seeds)), axis=1)
        out.append(diffs.mean(axis=1))
    samples = np.concatenate(out)
    if n_seeds == 1:
        return BootstrapComparison(value, 1, f"one seed: bootstrap of macro-F1 over {n_rows:,} rows", ROWS,
                                   _two_sided(samples), rows=n_rows, draws=samples)
    return BootstrapComparison(value, n_seeds, f"two-level bootstrap of macro-F1, {n_seeds} paired seeds x "
                               f"{n_rows:,} rows, {draws:,} draws", BOTH, _two_sided(samples),
                               sd_seed=seed_sd(per_seed), rows=n_rows, draws=samples)


def seed_comparison(a: dict, b: dict) -> Comparison:
    """mean(a) - mean(b) over seeds (`a`, `b` map seed -> score): paired t over the seeds both ran when
    they ran the same seeds (at least 2), else Welch's t."""
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2 and len(shared) == len(a) == len(b):
        x, y = np.array([a[s] for s in shared]), np.array([b[s] for s in shared])
        p = float(stats.ttest_rel(x, y).pvalue)
        return TComparison(float(np.mean(x - y)), len(shared), f"paired t, {len(shared) - 1} df", SEED, p,
                           sd_seed=seed_sd(x - y), a=x, b=y, paired=True)
    if len(a) >= 2 and len(b) >= 2:
        x, y = np.array(list(a.values())), np.array(list(b.values()))
        result = stats.ttest_ind(x, y, equal_var=False)
        return TComparison(float(x.mean() - y.mean()), len(x) + len(y), f"Welch t, {result.df:.1f} df", SEED,
                           float(result.pvalue), sd_seed=math.sqrt(x.var(ddof=1) + y.var(ddof=1)), a=x, b=y,
                           paired=False)
    value = float(np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else math.nan
    return NoComparison(value, len(a) + len(b), "too few seeds for a test", SEED, None)


def compare(a: dict, b: dict, rows_a: pd.DataFrame | None = None, rows_b: pd.DataFrame | None = None) -> Comparison:
    """The best comparison the records allow: paired on rows and seeds where both cells kept per-row
    outputs, else over seeds alone (and the method says so)."""
    if rows_a is not None and rows_b is not None:
        found = row_comparison(rows_a, rows_b)
        if found is not None:
            return found
    return seed_comparison(a, b)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of one run's accuracy on `n` test rows (a fraction)."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def seeds_needed(shortfall: float, sd: float, alpha: float, power: float) -> float:
    """Seeds for a one-sided paired t (statsmodels) to show a true difference `shortfall` above the
    threshold at `alpha` with `power`, when per-seed differences spread by `sd`; inf if it cannot."""
    if not shortfall > 0 or not sd > 0:
        return math.inf if not shortfall > 0 else 2.0
    return float(TTestPower().solve_power(effect_size=shortfall / sd, alpha=alpha, power=power, alternative="larger"))


def rows_needed(shortfall: float, sd: float, alpha: float, power: float) -> float:
    """Test rows for a one-sided z test over rows (statsmodels, one sample) to show `shortfall`, when
    per-row differences spread by `sd`; inf if it cannot."""
    if math.isnan(sd):  # macro-F1 is no mean over rows: no per-row spread to size a test by
        return math.nan
    if not shortfall > 0 or not sd > 0:
        return math.inf if not shortfall > 0 else 1.0
    return float(NormalIndPower().solve_power(effect_size=shortfall / sd, alpha=alpha, power=power, ratio=0,
                                              alternative="larger"))
