"""Intervals and tests for a handful of seeds, and the one rule that turns them into
claims. scipy.stats does the work; this module fixes the choices.

The decision rule (`Rule`): a family of m comparisons, each looked at up to L times
(an adaptive study adds seeds between looks; L = max - min + 1), is tested at
alpha / (m L) per comparison and look (Bonferroni). An effect is *clear* when its
t-interval at level 1 - alpha / (m L) excludes 0, which for a t-test is the same as
p m L < alpha: the interval shown is the one that decided. The chance of any false
claim in the family, over every look, is then at most alpha. The adaptive study's
stopping, racing, "detectable" and the report's verdict all use it.

With a smallest effect of interest Δ (`sesoi`), a comparison is *equivalent* (no
effect beyond ±Δ) when its (1 - 2 alpha / (m L)) interval lies inside ±Δ: two one-sided
tests (TOST, Schuirmann 1987) at the same per-comparison level.

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

ALPHA = 0.05
LEVEL = 1 - ALPHA
BOOTSTRAP_MIN = 20  # below ~20 values a bootstrap interval covers far less than it says (0.75 at 3, 0.86 at 6)
Bounds = tuple[float | None, float | None] | None


@contextmanager
def _quiet():
    """Near-equal values on every seed: scipy warns of precision loss and degenerate
    bootstraps; those cases are handled as "no spread" before they matter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        warnings.filterwarnings("ignore", category=stats.DegenerateDataWarning)
        yield


@dataclass(frozen=True)
class Rule:
    """The one decision rule: Bonferroni over `comparisons` (m) x `looks` (L)."""
    comparisons: int = 1
    looks: int = 1
    alpha: float = ALPHA

    @property
    def each(self) -> float:
        """The per-comparison, per-look error rate: alpha / (m L)."""
        return self.alpha / (max(1, self.comparisons) * max(1, self.looks))

    @property
    def level(self) -> float:
        """The confidence level of the interval that decides: 1 - alpha / (m L)."""
        return 1 - self.each

    def adjust(self, p):
        """p-values scaled to the family: min(1, p m L); clear when below alpha."""
        return np.minimum(1.0, np.asarray(p, dtype=float) * max(1, self.comparisons) * max(1, self.looks))

    def percent(self) -> str:
        """The decisive interval's level as a label: `95%`, `99.17%`."""
        return f"{100 * self.level:.4g}%"

    def describe(self) -> str:
        """The rule in one sentence, with the family it controls."""
        if self.comparisons < 1:
            return "Decision rule: none needed, the report has no comparison."
        fam = f"{self.comparisons} comparison{'s' if self.comparisons != 1 else ''}"
        if self.looks > 1:
            fam += f" × {self.looks} looks each (seeds added between looks)"
        return (f"Decision rule: an effect is clear when its {self.percent()} t-interval excludes 0, i.e. "
                f"p × {max(1, self.comparisons) * max(1, self.looks)} < {self.alpha:g} (Bonferroni over {fam}); "
                f"the chance of any false claim among them is at most {self.alpha:g}.")


def clip(lo: float, hi: float, bounds: Bounds) -> tuple[float, float]:
    """An interval cut to the values the quantity can take. The true value lies in
    `bounds` for sure, so cutting keeps the coverage. None, or a None end (an RMSE has
    no upper one), cuts nothing on that side."""
    if bounds is None or math.isnan(lo):
        return lo, hi
    low, high = bounds
    return (lo if low is None else max(lo, low)), (hi if high is None else min(hi, high))


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
    clear under `rule`: its exact two-sided sign-flip p is 2^(1-n), clear when
    2^(1-n) m L < alpha. One comparison: 6; six: 8; six over 8 looks: 11."""
    n = 2
    while float(rule.adjust(2.0 ** (1 - n))) >= rule.alpha:
        n += 1
    return n


@dataclass
class Comparison:
    """b - a, for one metric, judged by one Rule."""
    delta: float
    ci_lo: float          # t-interval at the rule's level (the one that decides); NaN: n<2 or no spread
    ci_hi: float
    p: float              # raw two-sided p
    p_adj: float          # p scaled to the rule's family: clear when < alpha
    clear: bool
    test: str             # "paired t", "Welch t", "sign-flip (no spread)" or "none (n<2)"
    n: int                # pairs, or the smaller group
    sd: float = math.nan  # of the paired differences; Welch: root-mean of the two variances
    mdd: float = math.nan  # estimated smallest true difference the rule finds with power 0.8
    spread: bool = True   # False: every seed gave the same difference
    eq_lo: float = math.nan  # (1 - 2 each) interval, for the equivalence test
    eq_hi: float = math.nan
    equivalent: bool = False  # the eq interval lies inside ±sesoi
    boot_lo: float = math.nan  # bootstrap at the rule's level, from BOOTSTRAP_MIN pairs up
    boot_hi: float = math.nan
    level: float = LEVEL

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _none(delta: float, n: int, rule: Rule) -> Comparison:
    return Comparison(delta, math.nan, math.nan, math.nan, math.nan, False, "none (n<2)", n, level=rule.level)


def _equivalent(lo: float, hi: float, sesoi: float | None) -> bool:
    return sesoi is not None and not math.isnan(lo) and -sesoi < lo and hi < sesoi


def paired(a, b, bounds: Bounds = None, rule: Rule = Rule(), sesoi: float | None = None,
           detect: bool = True, scale: float | None = None) -> Comparison:
    """b - a over matched seeds: a one-sample t-test on the differences at the rule's
    level, its interval cut to `bounds` (the range a difference can take). With no
    spread in the differences the t-test is undefined: an exact sign-flip p instead,
    and no interval; with `sesoi`, it is equivalent when |Δ| < sesoi and the exact
    one-sided sign-flip p (2^-n) is below the rule's level. `detect`: estimate the
    detectable difference (a root search; an adaptive study deciding round by round
    does without). `scale`: the size of the values (default: of a and b), for "no spread"."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n < 2:
        return _none(float(d.mean()) if n else math.nan, n, rule)
    delta = float(d.mean())
    if scale is None:
        scale = float(max(np.abs(a).max(), np.abs(b).max())) if len(a) else 0.0
    if no_spread(d, scale):
        p = sign_flip_p(d)
        p_adj = float(rule.adjust(p))
        # every difference inside ±sesoi: the one-sided sign-flip p of "mean >= sesoi" is 2^-n
        equivalent = sesoi is not None and abs(delta) < sesoi and 0.5 ** n < rule.each
        return Comparison(delta, math.nan, math.nan, p, p_adj, p_adj < rule.alpha, "sign-flip (no spread)", n,
                          0.0, math.nan, False, equivalent=equivalent, level=rule.level)
    # the one-sample t-test and its intervals, from scipy.special's t distribution directly:
    # the same numbers as ttest_1samp and t.interval (tests/test_report.py), 10x faster for
    # an adaptive study that decides every comparison at every look
    sd = float(d.std(ddof=1))
    se, df = sd / math.sqrt(n), n - 1
    p = float(2 * special.stdtr(df, -abs(delta) / se))
    half, eq_half = (float(special.stdtrit(df, 1 - q) * se) for q in (rule.each / 2, rule.each))
    lo, hi = clip(delta - half, delta + half, bounds)
    eq_lo, eq_hi = clip(delta - eq_half, delta + eq_half, bounds)
    p_adj = float(rule.adjust(p))
    return Comparison(delta, lo, hi, p, p_adj, p_adj < rule.alpha, "paired t", n, sd,
                      min_detectable(sd, n, alpha=rule.each) if detect else math.nan, True, eq_lo, eq_hi,
                      _equivalent(eq_lo, eq_hi, sesoi),
                      *bootstrap_interval(d, level=rule.level), level=rule.level)


def welch(a, b, bounds: Bounds = None, rule: Rule = Rule(), sesoi: float | None = None) -> Comparison:
    """b - a for unmatched seeds: Welch's t-test, its interval at the rule's level cut
    to `bounds`."""
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
        ci, eq = test.confidence_interval(rule.level), test.confidence_interval(1 - 2 * rule.each)
    lo, hi = clip(float(ci.low), float(ci.high), bounds)
    eq_lo, eq_hi = clip(float(eq.low), float(eq.high), bounds)
    p = float(test.pvalue)
    p_adj = float(rule.adjust(p))
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return Comparison(delta, lo, hi, p, p_adj, p_adj < rule.alpha, "Welch t", n, sd,
                      min_detectable(sd, n, paired_design=False, alpha=rule.each), True, eq_lo, eq_hi,
                      _equivalent(eq_lo, eq_hi, sesoi), level=rule.level)


def min_detectable(sd: float, n: int, paired_design: bool = True, alpha: float = ALPHA,
                   power: float = 0.8) -> float:
    """An estimate of the smallest true difference that n seeds per arm detect with the
    given power, by a two-sided t-test at `alpha` (pass the rule's per-comparison
    level, Rule.each): paired uses the sd of the per-seed differences. An estimate,
    because `sd` is itself estimated from the seeds."""
    if n < 2 or math.isnan(sd) or sd <= 0:
        return math.nan
    df = n - 1 if paired_design else 2 * (n - 1)
    se = sd / math.sqrt(n) if paired_design else sd * math.sqrt(2 / n)
    t_crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(shift: float) -> float:  # power at this noncentrality, minus the target
        # scipy's noncentral t cdf is NaN far in its lower tail, where the term is < 1e-15: read it as 0
        lower = float(np.nan_to_num(stats.nct.cdf(-t_crit, df, shift), nan=0.0))
        return float(stats.nct.sf(t_crit, df, shift)) + lower - power

    hi = 60.0
    while shortfall(hi) < 0:  # df 1 at a tiny alpha needs a huge shift
        if hi > 1e6:
            return math.inf
        hi *= 4
    return float(optimize.brentq(shortfall, 0.0, hi)) * se


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
