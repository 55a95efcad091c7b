"""Intervals and tests for a handful of seeds: each comparison's paired (or Welch) t-test,
its one-sided p's adjusted for an adaptive study's looks, the exact sign-flip p beside
it, equivalence (TOST), arms' intervals, outlying seeds and Shapley values. scipy.stats
does the work; this module fixes the choices. The decision rule that judges a family of
comparisons is ablate.rule's `Rule` (here as stats.Rule, with `clip`).

Ranges are (low, high) in the metric's units, None for an open end; a difference of
two values has its own range (Objective.delta_bounds)."""
from __future__ import annotations

import itertools
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from ablate.errors import ConfigError
from ablate.rule import ALPHA, Bounds, Rule, clip  # stats.Rule and stats.clip, as callers know them

LEVEL = 1 - ALPHA
LONE = Rule()  # a family of one comparison
BOOTSTRAP_MIN = 20  # below ~20 values a bootstrap interval covers far less than it says (0.75 at 3, 0.86 at 6)


@contextmanager
def _quiet():
    """Near-equal values on every seed: scipy warns of precision loss and degenerate
    bootstraps; those cases are handled as "no spread" before they matter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        warnings.filterwarnings("ignore", category=stats.DegenerateDataWarning)
        yield


def no_spread(x, scale: float | None = None) -> bool:
    """All values equal up to float noise, relative to `scale`: the size of the values
    the differences came from (default: of x itself). Accuracies on a 10,000-image test
    set are multiples of 0.01 pp, so equal differences happen for real; 99.47 - 99.45
    and 99.48 - 99.46 differ by 1e-14, which a t-test would read as certainty."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return False
    scale = float(np.abs(x).max()) if scale is None else scale
    return float(np.ptp(x)) <= 1e-9 * scale


def check_sesoi(sesoi, key: str = "sesoi") -> float | None:
    """The smallest effect of interest, checked: None, or a positive finite number.
    Raises ConfigError (one line, naming `key` and the fix)."""
    if sesoi is None:
        return None
    try:
        value = float(sesoi)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={sesoi!r} is invalid: give a positive number in the objective's units, "
                         f"e.g. 0.1 for 0.1 pp of accuracy.") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key}={sesoi!r} is invalid: give a positive, finite size in the objective's units, "
                         f"e.g. 0.1 for 0.1 pp of accuracy.")
    return value


def t_interval(x, bounds: Bounds = None, level: float = LEVEL) -> tuple[float, float]:
    """t-interval of the mean at `level`, cut to `bounds`. NaN with fewer than two
    values, or with no spread (the interval would be a point that claims certainty)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2 or no_spread(x):
        return math.nan, math.nan
    lo, hi = stats.t.interval(level, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    return clip(float(lo), float(hi), bounds)


def bootstrap_interval(x, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap interval of the mean (scipy.stats.bootstrap, BCa), only from
    BOOTSTRAP_MIN values up: below that it covers far less than its level (exactly
    [min, max] of 3 values, 75%), so it is NaN there and never shown."""
    x = np.asarray(x, dtype=float)
    if len(x) < BOOTSTRAP_MIN or no_spread(x):
        return math.nan, math.nan
    with _quiet():
        res = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=9999, method="BCa",
                              rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(x, bounds: Bounds = None) -> dict:
    """One arm's values over seeds, shape (n,), in the metric's units: `mean`, `std`
    (ddof 1), its 95% t-interval `ci_lo`/`ci_hi` cut to `bounds`, the bootstrap
    interval `boot_lo`/`boot_hi` (NaN below BOOTSTRAP_MIN) and whether the values
    `spread` at all. NaN where too few values give one."""
    x = np.asarray(x, dtype=float)
    lo, hi = t_interval(x, bounds)
    blo, bhi = bootstrap_interval(x)
    return {"mean": float(x.mean()) if len(x) else math.nan, "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
            "ci_lo": lo, "ci_hi": hi, "boot_lo": blo, "boot_hi": bhi, "spread": not no_spread(x)}


OUTLYING = 3.5  # robust z beyond which a seed is flagged (Iglewicz & Hoaglin 1993)
OUTLYING_MIN = 5  # finite values it needs


def outlying(x) -> list:
    """The seeds whose value lies far from their arm's others: robust z = |x - median| /
    MAD > 3.5, the MAD scaled to a normal sd (scipy.stats.median_abs_deviation). `x`: a
    Series indexed by seed. From 5 values up (at 3 a MAD is the gap of two close values,
    and ordinary spread reads as an outlier: the README's own 3 seeds did); none where
    the MAD is 0. A diverged run (a NaN) is flagged at any n. Returns the flagged seeds."""
    values = np.asarray(x, dtype=float)
    labels = list(x.index) if hasattr(x, "to_numpy") else list(range(len(values)))  # a Series: its seeds
    bad = ~np.isfinite(values)
    finite = values[~bad]
    if len(finite) >= OUTLYING_MIN:
        mad = stats.median_abs_deviation(finite, scale="normal")
        if mad > 0:
            with np.errstate(invalid="ignore"):
                bad |= np.abs(values - np.median(finite)) / mad > OUTLYING
    return [s for s, b in zip(labels, bad, strict=True) if b]


def sign_flip_p(d) -> float:
    """Exact two-sided permutation p of mean(d) = 0 over all 2^n sign flips of the
    paired differences (scipy.stats.permutation_test). Needs no spread estimate:
    three equal differences give 0.25, whatever their size."""
    d = np.asarray(d, dtype=float)
    if not np.any(d):
        return 1.0
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                 n_resamples=np.inf if len(d) <= 16 else 99_999, rng=np.random.default_rng(0))
    return float(res.pvalue)


def no_spread_seeds(rule: Rule) -> int:
    """The seeds an effect with no spread (the same difference on every seed) needs to be
    clear under `rule`, when it is the family's strongest: its exact one-sided sign-flip p
    is 2^-n, times the looks (Bonferroni: the sign-flip test has no sequential boundary),
    clear at Holm's first step when 2^-n L 2m < alpha. One comparison: 6; six: 8; six over
    8 looks: 11."""
    n = 2
    while 2.0 ** -n * max(1, rule.looks) * 2 * max(1, rule.comparisons) >= rule.alpha:
        n += 1
    return n


@dataclass
class Comparison:
    """b - a, for one metric. `paired`/`welch` give its tests; `Rule.judge` its verdict and
    interval within the family (they call it with a family of one: Holm's first step)."""
    delta: float
    ci_lo: float          # the rule's simultaneous interval, compatible with its verdict; NaN: n<2 or no spread
    ci_hi: float
    p: float              # raw two-sided p (at the last look)
    p_adj: float          # Holm-adjusted p of the estimate's side (over looks too): clear when < alpha
    clear: bool
    test: str             # "paired t", "Welch t", "sign-flip (no spread)" or "none (n<2)"
    n: int                # pairs, or the smaller group
    sd: float = math.nan  # of the paired differences; Welch: root-mean of the two variances
    mdd: float = math.nan  # estimated smallest true difference the rule finds with power 0.8 (at Holm's first step)
    spread: bool = True   # False: every seed gave the same difference
    eq_lo: float = math.nan  # (1 - 2 alpha_1) interval, for the equivalence test
    eq_hi: float = math.nan
    equivalent: bool = False  # the eq interval lies inside ±sesoi
    sign_flip_p: float = math.nan  # the exact two-sided sign-flip p: a robust check beside the t-test's
    level: float = LEVEL
    q_pos: float = math.nan  # one-sided p of b - a <= 0, adjusted for looks; before Holm
    q_neg: float = math.nan  # one-sided p of b - a >= 0
    se: float = math.nan     # of delta, and its degrees of freedom
    df: float = math.nan
    bounds: Bounds = None    # the range of a difference, for the interval
    half: float = math.nan   # half-width at Holm's first step (Bonferroni, over looks too): how precise delta is

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "bounds"}


def _none(delta: float, n: int, rule: Rule) -> Comparison:
    return Comparison(delta, math.nan, math.nan, math.nan, math.nan, False, "none (n<2)", n, level=rule.level)


def _equivalent(lo: float, hi: float, sesoi: float | None) -> bool:
    return sesoi is not None and not math.isnan(lo) and -sesoi < lo and hi < sesoi


def _prefix_min_p(d: np.ndarray, rule: Rule, scale: float) -> tuple[float, float]:
    """The smallest one-sided t-test p's (mean <= 0, mean >= 0) over the looks: the first
    n differences for n = rule.first .. len(d) (the seeds in the order they were added),
    leaving out looks with no spread (no t-test there). One look: the last."""
    n = len(d)
    k = np.arange(1, n + 1)
    centred = d - d.mean()  # shift-free, so the running variance loses no digits
    s, ss = np.cumsum(centred), np.cumsum(centred * centred)
    keep = k >= (max(2, rule.first) if rule.looks > 1 and n >= rule.first else n)
    keep &= (np.maximum.accumulate(d) - np.minimum.accumulate(d)) > 1e-9 * scale
    k, s, ss = k[keep], s[keep], ss[keep]
    if not len(k):
        return 1.0, 1.0
    t = (s / k + d.mean()) / np.sqrt(np.maximum(ss - s * s / k, 0.0) / (k - 1) / k)
    return float(special.stdtr(k - 1, -t).min()), float(special.stdtr(k - 1, t).min())


def paired(a, b, bounds: Bounds = None, rule: Rule = LONE, sesoi: float | None = None,
           detect: bool = True, scale: float | None = None) -> Comparison:
    """b - a over matched seeds, shape (n,) each, in the order the seeds were added: a
    one-sample t-test on the differences, its one-sided p's adjusted for the rule's looks
    (over the first n' differences, n' = rule.first .. n), judged by `rule` as a family
    of one (Holm's first step; pass the family's Comparisons to Rule.judge for the step-
    down). With no spread in the differences the t-test is undefined: the exact sign-
    flip p instead (Bonferroni over looks), and no interval; with `sesoi`, it is
    equivalent when |Δ| < sesoi and the exact one-sided sign-flip p (2^-n) is below
    alpha / (m L). `detect`: estimate the detectable difference (a root search) and the
    exact sign-flip p beside the t-test's (an adaptive study deciding round by round does
    without both). `scale`: the size of the values (default: of a and b), for "no spread"."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n < 2:
        return _none(float(d.mean()) if n else math.nan, n, rule)
    delta = float(d.mean())
    if scale is None:
        scale = float(max(np.abs(a).max(), np.abs(b).max())) if len(a) else 0.0
    spread = not no_spread(d, scale)
    # the exact sign-flip p beside the t-test's, for the report (2^n permutations: ~1 ms, which an
    # adaptive study deciding round by round does without)
    flip = sign_flip_p(d) if detect or not spread else math.nan
    if not spread:
        looks = max(1, rule.looks)
        one = 2.0 ** -n if delta else 1.0  # every difference the same: the one-sided sign-flip p
        q_pos, q_neg = (min(1.0, looks * one), 1.0) if delta > 0 else (1.0, min(1.0, looks * one))
        # every difference inside ±sesoi: the one-sided sign-flip p of "mean >= sesoi" is 2^-n
        bonferroni = rule.alpha / (max(1, rule.comparisons) * looks)
        equivalent = sesoi is not None and abs(delta) < sesoi and 0.5 ** n < bonferroni
        comp = Comparison(delta, math.nan, math.nan, flip, math.nan, False, "sign-flip (no spread)", n, 0.0,
                          math.nan, False, equivalent=equivalent, sign_flip_p=flip, q_pos=q_pos, q_neg=q_neg,
                          se=0.0, df=n - 1, bounds=bounds)
        return rule.judge([comp])[0]
    # the t-test and its intervals from scipy.special's t distribution directly: the same
    # numbers as ttest_1samp (tests/test_report.py), 10x faster for an adaptive study that
    # decides every comparison at every look
    sd = float(d.std(ddof=1))
    se, df = sd / math.sqrt(n), n - 1
    p = float(2 * special.stdtr(df, -abs(delta) / se))
    p_pos, p_neg = _prefix_min_p(d, rule, scale)
    eq_half = float(special.stdtrit(df, 1 - rule.equivalence)) * se
    eq_lo, eq_hi = clip(delta - eq_half, delta + eq_half, bounds)
    comp = Comparison(delta, math.nan, math.nan, p, math.nan, False, "paired t", n, sd,
                      min_detectable(sd, n, alpha=rule.each) if detect else math.nan, True, eq_lo, eq_hi,
                      _equivalent(eq_lo, eq_hi, sesoi), flip, q_pos=rule.sequential(p_pos),
                      q_neg=rule.sequential(p_neg), se=se, df=df, bounds=bounds,
                      half=float(special.stdtrit(df, 1 - rule.each / 2)) * se)
    return rule.judge([comp])[0]


def welch(a, b, bounds: Bounds = None, rule: Rule = LONE, sesoi: float | None = None) -> Comparison:
    """b - a for unmatched seeds: Welch's t-test (one look), judged by `rule` as a family
    of one (pass the family to Rule.judge)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    n = min(len(a), len(b))
    if n < 2:
        return _none(delta, n, rule)
    if no_spread(a) and no_spread(b):
        return Comparison(delta, math.nan, math.nan, math.nan, math.nan, False, "none (no spread in either arm)",
                          n, 0.0, spread=False, level=rule.level)
    with _quiet():
        test = stats.ttest_ind(b, a, equal_var=False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se, df = math.sqrt(va + vb), float(test.df)
    eq_half = float(special.stdtrit(df, 1 - rule.equivalence)) * se
    eq_lo, eq_hi = clip(delta - eq_half, delta + eq_half, bounds)
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    comp = Comparison(delta, math.nan, math.nan, float(test.pvalue), math.nan, False, "Welch t", n, sd,
                      min_detectable(sd, n, paired_design=False, alpha=rule.each), True, eq_lo, eq_hi,
                      _equivalent(eq_lo, eq_hi, sesoi), q_pos=float(special.stdtr(df, -delta / se)),
                      q_neg=float(special.stdtr(df, delta / se)), se=se, df=df, bounds=bounds,
                      half=float(special.stdtrit(df, 1 - rule.each / 2)) * se)
    return rule.judge([comp])[0]


def power(delta: float, sd: float, n: int, paired_design: bool = True, alpha: float = ALPHA) -> float:
    """The chance that a two-sided t-test at `alpha` over n seeds per arm finds a true
    difference `delta` (in the metric's units) with seed noise `sd` (paired: of the
    per-seed differences): the noncentral t's mass beyond the critical values."""
    if n < 2 or math.isnan(sd) or sd <= 0:
        return math.nan
    df = n - 1 if paired_design else 2 * (n - 1)
    se = sd / math.sqrt(n) if paired_design else sd * math.sqrt(2 / n)
    t_crit, shift = stats.t.ppf(1 - alpha / 2, df), abs(delta) / se
    # scipy's noncentral t cdf is NaN far in its lower tail, where the term is < 1e-15: read it as 0
    lower = float(np.nan_to_num(stats.nct.cdf(-t_crit, df, shift), nan=0.0))
    return float(stats.nct.sf(t_crit, df, shift)) + lower


def min_detectable(sd: float, n: int, paired_design: bool = True, alpha: float = ALPHA,
                   power_: float = 0.8) -> float:
    """An estimate of the smallest true difference that n seeds per arm detect with the
    given power, by a two-sided t-test at `alpha` (pass the rule's per-comparison
    level, Rule.each): paired uses the sd of the per-seed differences. An estimate,
    because `sd` is itself estimated from the seeds."""
    if n < 2 or math.isnan(sd) or sd <= 0:
        return math.nan
    se = sd / math.sqrt(n) if paired_design else sd * math.sqrt(2 / n)

    def shortfall(shift: float) -> float:  # power at this noncentrality, minus the target
        return power(shift * se, sd, n, paired_design, alpha) - power_

    hi = 60.0
    while shortfall(hi) < 0:  # df 1 at a tiny alpha needs a huge shift
        if hi > 1e6:
            return math.inf
        hi *= 4
    return float(optimize.brentq(shortfall, 0.0, hi)) * se


def seeds_needed(delta: float, sd: float, alpha: float, power_: float = 0.8, most: int = 1000) -> float:
    """The fewest seeds per arm with which a paired t-test at `alpha` finds a true
    difference `delta` with power `power_`, for per-seed differences of sd `sd`;
    inf beyond `most`."""
    if math.isnan(sd) or sd <= 0 or not delta:
        return math.nan
    n = 2
    while power(delta, sd, n, alpha=alpha) < power_:
        n = n + 1 if n < 64 else int(n * 1.1)
        if n > most:
            return math.inf
    return float(n)


def planned_seeds(delta: float, sd: float, n: int, rule: Rule, power_: float = 0.8,
                  confidence: float = 0.8) -> tuple[float, float, float]:
    """How many seeds a comparison needs to be clear with power `power_` when its true
    effect is `delta`, under `rule` at its strictest step (Holm's first, rule.each: an
    upper bound for every comparison), from the sd of its `n` paired differences so far;
    with the range that sd's `confidence` chi-square interval gives (a spread seen on 3
    seeds may be half or twice the true one). Returns (low, estimate, high) seeds."""
    if n < 2 or math.isnan(sd) or sd <= 0:
        return math.nan, math.nan, math.nan
    df = n - 1
    tail = (1 - confidence) / 2
    lo_sd = sd * math.sqrt(df / stats.chi2.ppf(1 - tail, df))
    hi_sd = sd * math.sqrt(df / stats.chi2.ppf(tail, df))
    return tuple(seeds_needed(delta, s, rule.each, power_) for s in (lo_sd, sd, hi_sd))


def binomial_floor(p: float, n: int) -> float:
    """The test set's own sampling noise of an accuracy p (a fraction) measured on n
    independent examples: sqrt(p (1 - p) / n), as a fraction (Jordan 2024, "On the
    variance of neural network training"). Seed-to-seed spread below it is mostly
    the test set's; above it, the training's."""
    return math.sqrt(p * (1 - p) / n) if n > 0 and 0 <= p <= 1 else math.nan


def shapley(value: dict[frozenset, np.ndarray], players: list[str]) -> dict[str, np.ndarray]:
    """Exact Shapley values of a game given on every coalition: `value[S]` is v(S), an
    array over seeds (the arm with the factors S on). phi_i = sum over S not holding i
    of |S|! (k - |S| - 1)! / k! (v(S + i) - v(S)). Per seed, the players' values add
    up to v(all) - v(empty) (efficiency). Raises KeyError if a coalition is missing."""
    k = len(players)
    out = {}
    for i in players:
        rest = [p for p in players if p != i]
        total = 0.0
        for size in range(k):
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for s in itertools.combinations(rest, size):
                s = frozenset(s)
                total = total + weight * (np.asarray(value[s | {i}], dtype=float) - np.asarray(value[s], dtype=float))
        out[i] = np.asarray(total, dtype=float)
    return out
