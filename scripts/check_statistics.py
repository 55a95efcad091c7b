"""The decision rule's error rates and power, measured by simulation with no training:
the numbers in docs/statistics.md. About five minutes on 2 cores.

    python scripts/check_statistics.py
"""
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as ss

from ablate import adaptive, designs, stats
from ablate.designs import Design, SeedPolicy

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_statistics import racing_drop_rate

rng = np.random.default_rng(2026)


def power() -> None:
    rule = stats.Rule(6, 8, first=3)
    for n in (3, 5, 10):
        delta = stats.min_detectable(1.0, n, alpha=rule.each)
        clear = [stats.paired(np.zeros(n), row, rule=rule, detect=False).clear
                 for row in rng.normal(delta, 1.0, (20000, n))]
        print(f"a true effect of min_detectable(sd 1, {n} seeds, 6 comparisons, looks 3..10) = {delta:.2f} sd is "
              f"clear at Holm's first step in {np.mean(clear):.3f} of 20,000 draws")
    print(f"min_detectable(1, 2) = {stats.min_detectable(1.0, 2):.2f}; "
          f"min_detectable(1, 3, alpha=0.05/6) = {stats.min_detectable(1.0, 3, alpha=0.05 / 6):.2f}")


def _old_clear(d: np.ndarray, m: int, first: int, last: int) -> np.ndarray:
    """The rule before issue 30, per comparison: two-sided paired p x m x L < alpha at any
    look n = first..last (Bonferroni over comparisons and looks); one look: p x m < alpha.
    `d`: [study, seed] paired differences. Returns [study] bools."""
    looks = last - first + 1
    hit = np.zeros(len(d), dtype=bool)
    for n in range(first, last + 1):
        p = ss.ttest_1samp(d[:, :n], 0.0, axis=1).pvalue
        hit |= p * m * looks < 0.05
    return hit


def compare_rules(real: int, studies: int = 1000, delta: float = 3.0, fixed_seeds: int = 5) -> dict:
    """6 factors left out of a baseline, `real` of them worth `delta` seed sds each (every
    arm's seeds have sd 1): the share of real effects found, the share of studies that find
    all of them, and of those with any false claim; today's rule (stats.Rule: Holm, a
    group-sequential boundary over looks) against the old one (Bonferroni over both), on
    the same drawn values. Fixed: `fixed_seeds` seeds; adaptive: seeds 3..10 until decisive."""
    design = Design("six", "leave_one_out", [], {f"f{i}": [f"x{i}=1"] for i in range(6)})
    arms, comps = designs.arms(design), designs.contrasts(design)
    truth = {"baseline": 0.0, **{f"f{i}": -delta if i < real else 0.0 for i in range(6)}}
    out = {}
    for kind, (first, last) in {"fixed": (fixed_seeds, fixed_seeds), "adaptive": (3, 10)}.items():
        found = {"today": [], "old": []}
        false = {"today": [], "old": []}
        for _ in range(studies):
            table = pd.DataFrame({a: v + rng.normal(0, 1.0, last) for a, v in truth.items()})
            if kind == "fixed":
                rule = stats.Rule(6)
                clear = [c.clear for c in rule.judge([stats.paired(np.zeros(last), adaptive.contrast_values(
                    c, table).to_numpy(), rule=rule, detect=False) for c in comps])]
            else:
                study = adaptive.seed_rounds(SeedPolicy(min=3, max=10, halfwidth=1e-6), arms, comps,
                                             lambda jobs, table=table: (table, set()))
                clear = [d.status == "decisive" for d in study.decisions]
            d = np.stack([adaptive.contrast_values(c, table).to_numpy() for c in comps], axis=0)
            old = _old_clear(d, 6, first, last)
            for rule_name, hits in (("today", np.array(clear)), ("old", old)):
                found[rule_name].append(hits[:real])
                false[rule_name].append(hits[real:].any())
        for rule_name in found:
            f = np.array(found[rule_name])
            out[kind, rule_name] = (f.mean() if real else math.nan, f.all(axis=1).mean() if real else math.nan,
                                    np.mean(false[rule_name]))
    return out


def power_table() -> None:
    print("6 factors, k of them real (3 seed sds each); fixed: 5 seeds; adaptive: 3..10 until decisive; "
          "1,000 studies each, the same draws for both rules")
    print("| real effects | design | found (today / old) | all found (today / old) | any false claim (today / old) |")
    print("|---|---|---|---|---|")
    for real in (1, 3, 6):
        res = compare_rules(real)
        for kind in ("fixed", "adaptive"):
            t, o = res[kind, "today"], res[kind, "old"]
            false = "–" if real == 6 else f"{t[2]:.1%} / {o[2]:.1%}"
            print(f"| {real} of 6 | {kind} | {t[0]:.1%} / {o[0]:.1%} | {t[1]:.1%} / {o[1]:.1%} | {false} |")


def bootstrap() -> None:
    for n in (20, 30):
        hits = [lo <= 0 <= hi for lo, hi in (stats.bootstrap_interval(rng.normal(0, 1, n), seed=i) for i in range(400))]
        print(f"bootstrap 95% interval, {n} values: covers in {np.mean(hits):.3f} of 400 draws")


def null_table() -> None:
    """tests/test_rule_simulation.py's cases, with their rates."""
    from test_rule_simulation import adaptive_claims, fixed_claims
    print("| m | design | equal spreads | unequal 4:1 |")
    print("|---|---|---|---|")
    for m in (3, 6, 10):
        for kind, fn in (("fixed (3..10 seeds)", fixed_claims), ("adaptive (3..10)", adaptive_claims)):
            rates = [fn(m, unequal, np.random.default_rng(7 + m + 50 * unequal)) for unequal in (False, True)]
            print(f"| {m} | {kind} | {rates[0]:.1%} | {rates[1]:.1%} |")


if __name__ == "__main__":
    print(f"global null, any false claim in 1,000 studies per case (Monte Carlo se at 5%: "
          f"{math.sqrt(0.05 * 0.95 / 1000):.1%}):")
    null_table()
    print(f"racing, 4 equal candidates, 5 seeds, 1000 rounds: a candidate dropped in {racing_drop_rate(1000, rng):.3f}")
    power()
    power_table()
    bootstrap()
