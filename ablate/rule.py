"""The one decision rule that turns comparisons into claims (`Rule`); ablate.stats
gives each comparison its tests. The rule judges a family of m comparisons together:

- Each comparison is two one-sided hypotheses (b - a <= 0, b - a >= 0), each with its
  one-sided paired t-test p. In an adaptive study (seeds added between looks n = first
  .. last) that p is adjusted for the looks by the exact null distribution of the
  smallest p over them (a group-sequential, Pocock-type boundary; the t statistic is
  pivotal under the null, so one simulation serves every comparison). The looks are
  nested and correlated, so this costs less than Bonferroni over looks: for 6 comparisons
  and looks 3..10, Holm's first step tests each look at 0.0008 (one-sided), not
  0.05 / (12 x 8) = 0.00052 (`Rule.per_look`; 5.2 looks' worth, not 8).
- Holm's step-down over the 2m hypotheses (Holm 1979) says which are rejected: an effect
  is *clear* when its Holm-adjusted p is below alpha. With several real effects this finds
  far more than Bonferroni (docs/statistics.md), with the same guarantee: the chance of
  any false claim in the family, over every look, is at most alpha.
- Its intervals are simultaneous at 1 - alpha and agree with the verdicts (Strassburger &
  Bretz 2008, Stat. Med. 27:4914): a comparison that is not clear gets the t-interval at
  the level left after the rejections; a clear one is bounded by 0 on the side its sign
  rules out (the claim is the sign), and by that same level on the other.

With a smallest effect of interest Δ (`sesoi`), a comparison is *equivalent* (no
effect beyond ±Δ) when its (1 - 2 alpha_1) interval lies inside ±Δ: two one-sided tests
(TOST, Schuirmann 1987) at alpha_1 = the per-look level spending alpha / m over the looks.

Ranges are (low, high) in the metric's units, None for an open end; a difference of
two values has its own range (Objective.delta_bounds)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

ALPHA = 0.05
# null paths behind the group-sequential boundary: the Monte Carlo se of a level alpha/m is
# sqrt(alpha/m / PATHS), 2.8% of it at alpha/m = 0.0025 (m = 10, one side)
PATHS = 2 ** 19
Bounds = tuple[float | None, float | None] | None


@functools.lru_cache(maxsize=32)
def null_min_p(first: int, last: int) -> np.ndarray:
    """Sorted, shape (PATHS,): the smallest one-sided t-test p (mean <= 0) over the looks
    n = first .. last of one path of i.i.d. normal differences with mean 0. The t
    statistic's law is free of the sd, so these are every null comparison's, exactly up
    to Monte Carlo error (fixed seed: the same numbers on every machine). About 1 s, once per
    process and range of looks (cached)."""
    rng = np.random.default_rng(20261203)
    k = np.arange(first, last + 1)
    out = []
    for _ in range(PATHS // 2 ** 16):
        z = rng.standard_normal((2 ** 16, last))
        s, ss = z.cumsum(axis=1)[:, first - 1:], (z * z).cumsum(axis=1)[:, first - 1:]
        t = (s / k) / np.sqrt((ss - s * s / k) / (k - 1) / k)
        out.append(special.stdtr(k - 1, -t).min(axis=1))
    return np.sort(np.concatenate(out))


@dataclass(frozen=True)
class Rule:
    """The one decision rule: Holm over the 2 `comparisons` one-sided hypotheses, each
    p adjusted for `looks` nested looks at n = `first` .. `first` + `looks` - 1 seeds."""
    comparisons: int = 1
    looks: int = 1
    alpha: float = ALPHA
    first: int = 2  # seeds at the first look (an adaptive study's min; racing's 2)

    @property
    def last(self) -> int:
        return self.first + self.looks - 1

    def sequential(self, p: float) -> float:
        """A one-sided p, the smallest over the looks, made a p over all of them: the
        null chance that the smallest p over n = first..last is at most `p`. `p` itself
        with one look. Raises ValueError for first < 2 with more than one look."""
        if self.looks <= 1 or math.isnan(p):
            return p
        if self.first < 2:
            raise ValueError(f"Rule(first={self.first}): the first look needs 2 seeds for a t-test")
        null = null_min_p(self.first, self.last)
        # Bonferroni's L p bounds it for sure: it decides far out in the tail, where the
        # simulation has no paths (below 1 / PATHS)
        return float(min((np.searchsorted(null, p, side="right") + 1) / (len(null) + 1), self.looks * p))

    def per_look(self, a: float) -> float:
        """The one-sided level to test at each look so that the chance of a rejection at
        any look is `a`: the `a`-quantile of the null smallest p (`a` with one look)."""
        if self.looks <= 1:
            return a
        null = null_min_p(self.first, self.last)
        return max(float(null[max(0, min(len(null) - 1, int(a * len(null)) - 1))]), a / self.looks)

    @property
    def each(self) -> float:
        """The two-sided level per comparison and look of Holm's first step (the most an
        effect needs): 2 per_look(alpha / 2m). alpha / m with one look."""
        return 2 * self.per_look(self.alpha / (2 * max(1, self.comparisons)))

    @property
    def equivalence(self) -> float:
        """The one-sided level of each of the two tests of equivalence: per_look(alpha / m)
        (Bonferroni over the comparisons; TOST's two tests need no share of alpha)."""
        return self.per_look(self.alpha / max(1, self.comparisons))

    @property
    def level(self) -> float:
        """The simultaneous confidence level of the intervals: 1 - alpha."""
        return 1 - self.alpha

    def percent(self) -> str:
        """The intervals' label: `simultaneous 95%`, or `95%` for a lone comparison."""
        return f"{'simultaneous ' if self.comparisons > 1 else ''}{100 * self.level:.4g}%"

    def p_label(self) -> str:
        """The adjusted p's column label: `p (Holm)`, `p (Holm, 8 looks)`; `p` alone."""
        if self.comparisons <= 1 and self.looks <= 1:
            return "p"
        return "p (" + ", ".join((["Holm"] if self.comparisons > 1 else [])
                                 + ([f"{self.looks} looks"] if self.looks > 1 else [])) + ")"

    def judge(self, comps: list) -> list:
        """The family's verdicts and intervals: Holm's step-down over the 2m one-sided
        (look-adjusted) p's of `comps`, which may be fewer than `comparisons` (those not
        given are never rejected, as racing's untested pairs). Returns new Comparisons
        with `p_adj` (the Holm-adjusted p of the estimate's side), `clear` and the
        compatible interval (ci_lo, ci_hi) at the simultaneous level 1 - alpha."""
        m2 = 2 * max(self.comparisons, len(comps), 1)
        sides = [(i, s, q) for i, c in enumerate(comps) for s, q in ((1, c.q_pos), (-1, c.q_neg))
                 if not math.isnan(q)]
        # Holm's adjusted p: the running max of (m2 - k) q_(k) over the sorted q's; the hypotheses
        # not given (n < 2, racing's untested pairs) are p = 1, last. statsmodels' multipletests
        # gives the same (tests/test_statistics.py) but runs gc.collect() on every call: 25 ms
        # with torch loaded, 50x the rest of an adaptive study's decision
        order = sorted(range(len(sides)), key=lambda j: sides[j][2])
        held = np.maximum.accumulate(np.minimum(1.0, (m2 - np.arange(len(order))) *
                                                np.array([sides[j][2] for j in order], dtype=float)))
        adjusted = {sides[j][:2]: float(v) for j, v in zip(order, held, strict=True)}
        rejected = sum(v < self.alpha for v in adjusted.values())
        # one-sided, per look, for what is left; a lone comparison's two sides cannot both be
        # rejected, so its interval is the plain two-sided one, which excludes 0 exactly when clear
        lone = m2 == 2
        rest = self.per_look(self.alpha / (2 if lone else max(1, m2 - rejected)))
        out = []
        for i, c in enumerate(comps):
            pos, neg = adjusted.get((i, 1), math.nan), adjusted.get((i, -1), math.nan)
            p_adj = min(pos, neg) if not (math.isnan(pos) or math.isnan(neg)) else math.nan
            lo = hi = math.nan
            if c.se > 0 and c.df > 0:
                half = float(special.stdtrit(c.df, 1 - rest)) * c.se
                lo, hi = c.delta - half, c.delta + half
                # a rejected side's bound is 0: what the rule claims of it is its sign
                if not lone:
                    lo, hi = (0.0 if pos < self.alpha else lo), (0.0 if neg < self.alpha else hi)
                lo, hi = clip(lo, hi, c.bounds)
            out.append(replace(c, p_adj=p_adj, clear=bool(p_adj < self.alpha), ci_lo=lo, ci_hi=hi,
                               level=self.level))
        return out

    def describe(self) -> str:
        """The rule in one sentence, with the family it controls."""
        if self.comparisons < 1:
            return "Decision rule: none needed, the report has no comparison."
        looks = (f", each p adjusted for its {self.looks} looks at {self.first}..{self.last} seeds (a "
                 f"group-sequential boundary, exact for the t-test)" if self.looks > 1 else "")
        if self.comparisons == 1:
            return (f"Decision rule: the effect is clear when its {self.percent()} t-interval excludes 0 "
                    f"(two-sided p < {self.alpha:g}{looks}); the chance of a false claim is at most {self.alpha:g}.")
        return (f"Decision rule: Holm's step-down over {self.comparisons} comparisons{looks}: an effect is clear "
                f"when its Holm-adjusted p < {self.alpha:g}, and the chance of any false claim among them is at most "
                f"{self.alpha:g}. Its intervals are simultaneous at {100 * self.level:.4g}% and agree with the "
                f"verdicts (Strassburger & Bretz 2008): a clear effect's interval ends at 0 on the side its sign "
                f"rules out.")


def clip(lo: float, hi: float, bounds: Bounds) -> tuple[float, float]:
    """An interval cut to the values the quantity can take. The true value lies in
    `bounds` for sure, so cutting keeps the coverage. None, or a None end (an RMSE has
    no upper one), cuts nothing on that side."""
    if bounds is None or math.isnan(lo):
        return lo, hi
    low, high = bounds
    return (lo if low is None else max(lo, low)), (hi if high is None else min(hi, high))
