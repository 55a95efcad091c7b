"""Intervals and tests for a handful of seeds: t-intervals, a bootstrap beside them,
paired and Welch comparisons, Holm's adjustment for many comparisons, and the
smallest difference a number of seeds can detect. scipy.stats does the work; this
module fixes the choices (95%, the metric's range, what a tiny sample allows).
Ranges are (low, high) in the metric's units, None for an open end; a difference of
two values has its own range (Objective.delta_bounds)."""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
ALPHA = 1 - LEVEL
Bounds = tuple[float | None, float | None] | None


@contextmanager
def _quiet():
    """Equal values on every seed (say, all at 100%) have zero variance: scipy warns of
    precision loss and degenerate bootstraps; the interval is then just the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        warnings.filterwarnings("ignore", category=stats.DegenerateDataWarning)
        yield


def clip(lo: float, hi: float, bounds: Bounds) -> tuple[float, float]:
    """An interval cut to the values the quantity can take. The true value lies in
    `bounds` for sure, so cutting keeps the coverage. None, or a None end (an RMSE has
    no upper one), cuts nothing on that side."""
    if bounds is None or math.isnan(lo):
        return lo, hi
    low, high = bounds
    return (lo if low is None else max(lo, low)), (hi if high is None else min(hi, high))


def t_interval(x, bounds: Bounds = None) -> tuple[float, float]:
    """95% t-interval of the mean, cut to `bounds`; NaN with fewer than two values."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    lo, hi = stats.t.interval(LEVEL, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    return clip(float(lo), float(hi), bounds)


def bootstrap_interval(x, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean (scipy.stats.bootstrap; BCa from 6 values,
    percentile below, where BCa's jackknife is unstable). It lies inside the values'
    own range, so it respects the metric's. With a handful of seeds it is too narrow:
    3 values allow only 10 distinct resamples. Shown beside the t-interval, never alone."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    with _quiet():
        res = stats.bootstrap((x,), np.mean, confidence_level=LEVEL, n_resamples=9999,
                              method="BCa" if len(x) >= 6 else "percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class Comparison:
    """b - a, for one metric."""
    delta: float
    ci_lo: float          # t-interval
    ci_hi: float
    boot_lo: float        # bootstrap interval (paired: of the per-seed differences)
    boot_hi: float
    p: float
    test: str             # "paired t", "Welch t" or "none (n<2)"
    n: int                # pairs, or the smaller group
    sd: float = math.nan  # of the paired differences, or pooled over both groups
    mdd: float = math.nan  # the smallest true difference these seeds detect (power 0.8, alpha 0.05)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def paired(a: np.ndarray, b: np.ndarray, bounds: Bounds = None) -> Comparison:
    """b - a over matched seeds: a one-sample t-test on the differences, its interval
    cut to `bounds` (the range a difference can take)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(d) < 2:
        return Comparison(float(d.mean()) if len(d) else math.nan, *(math.nan,) * 5, "none (n<2)", len(d))
    lo, hi = t_interval(d, bounds)
    if np.ptp(d) == 0:
        p = 0.0 if d[0] != 0 else 1.0
    else:
        with _quiet():
            p = float(stats.ttest_1samp(d, 0.0).pvalue)
    sd = float(d.std(ddof=1))
    return Comparison(float(d.mean()), lo, hi, *bootstrap_interval(d), p, "paired t", len(d), sd,
                      min_detectable(sd, len(d)))


def welch(a: np.ndarray, b: np.ndarray, bounds: Bounds = None) -> Comparison:
    """b - a for unmatched seeds: Welch's t-test (its interval cut to `bounds`) and a
    two-sample bootstrap."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Comparison(delta, *(math.nan,) * 5, "none (n<2)", min(len(a), len(b)))
    with _quiet():
        test = stats.ttest_ind(b, a, equal_var=False)
        ci = test.confidence_interval(LEVEL)
        boot = stats.bootstrap((b, a), lambda y, x: np.mean(y) - np.mean(x), n_resamples=9999,
                               method="percentile", rng=np.random.default_rng(0))
    lo, hi = clip(float(ci.low), float(ci.high), bounds)
    p = float(test.pvalue) if not math.isnan(test.pvalue) else (0.0 if delta != 0 else 1.0)
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    n = min(len(a), len(b))
    return Comparison(delta, lo, hi, float(boot.confidence_interval.low), float(boot.confidence_interval.high),
                      p, "Welch t", n, sd, min_detectable(sd, n, paired_design=False))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment: controls the chance of any false claim among the
    comparisons (family-wise error) at alpha, for any dependence between them.
    scipy has Benjamini-Hochberg (false_discovery_control) but not Holm."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    order = np.argsort(p[ok])
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[ok][order]).clip(max=1.0)
    vals = np.empty(m)
    vals[order] = adjusted
    out[ok] = vals
    return out


def min_detectable(sd: float, n: int, paired_design: bool = True, alpha: float = ALPHA,
                   power: float = 0.8) -> float:
    """The smallest true difference that n seeds per arm detect with the given power
    (two-sided t-test at alpha): paired uses the sd of the per-seed differences."""
    if n < 2 or math.isnan(sd):
        return math.nan
    df = n - 1 if paired_design else 2 * (n - 1)
    se = sd / math.sqrt(n) if paired_design else sd * math.sqrt(2 / n)
    # noncentral t: the shift at which P(|T| > t_crit) reaches `power`
    t_crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(shift: float) -> float:  # power at this noncentrality, minus the target
        reach = stats.nct.sf(t_crit, df, shift) + stats.nct.cdf(-t_crit, df, shift)
        return float(np.nan_to_num(reach, nan=1.0)) - power  # scipy's nct gives NaN where power is ~1

    return float(optimize.brentq(shortfall, 0.0, 60.0)) * se
