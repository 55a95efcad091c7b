"""The decision rule's error rates and power, measured by simulation with no training:
the numbers in docs/statistics.md. About a minute on 2 cores.

    python scripts/check_statistics.py
"""
import contextlib
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as ss

from ablate import adaptive, designs, stats
from ablate.designs import Design, SeedPolicy
from ablate.metrics import Objective

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_statistics import SIX, Drawn, _drawn

rng = np.random.default_rng(2026)


def global_null(studies: int = 1000) -> None:
    arms = designs.arms(SIX)
    comps = adaptive.comparisons(SIX, arms)
    policy = SeedPolicy(min=3, max=10, halfwidth=0.001)
    false = 0
    for _ in range(studies):
        table = _drawn({a.name: 99.0 for a in arms}, 0.1, 10, rng)
        study = adaptive.seed_rounds(policy, arms, comps, Drawn(table))
        false += any(d.status == "decisive" for d in study.decisions)
    print(f"global null, 6 comparisons, seeds 3..10, {studies} studies: any decisive (= clear) in "
          f"{false / studies:.3f} (Monte Carlo se at 5%: {math.sqrt(0.05 * 0.95 / studies):.3f})")


def racing(rounds: int = 1000) -> None:
    four = Design("g", "greedy_path", [], {f: [f"{f}=1"] for f in "abcd"})
    names = [a.name for a in [designs.arm_of(four, ())] + [designs.arm_of(four, (f,)) for f in "abcd"]]
    drops = 0
    for _ in range(rounds):
        table = pd.DataFrame({x: 99 + rng.normal(0, 0.1, 5) for x in names})

        def run(jobs, table=table):  # the first round only
            if any(len(arm.applied) > 1 for arm, _ in jobs):
                raise StopIteration
            return table, set()
        first = []
        with contextlib.suppress(StopIteration):
            adaptive.greedy_path(four, 5, run, race=True, objective=Objective(), on_round=first.append)
        drops += any(c.dropped_at is not None for c in first[0].candidates)
    print(f"racing, 4 equal candidates, 5 seeds, {rounds} rounds: a candidate dropped in {drops / rounds:.3f}")


def power() -> None:
    rule = stats.Rule(6, 8)
    for n in (3, 5, 10):
        delta = stats.min_detectable(1.0, n, alpha=rule.each)
        p = ss.ttest_1samp(rng.normal(delta, 1.0, (20000, n)), 0.0, axis=1).pvalue
        print(f"a true effect of min_detectable(sd 1, {n} seeds, 6 x 8) = {delta:.2f} sd is clear in "
              f"{(rule.adjust(p) < 0.05).mean():.3f} of 20,000 draws")
    print(f"min_detectable(1, 2) = {stats.min_detectable(1.0, 2):.2f}; "
          f"min_detectable(1, 3, alpha=0.05/6) = {stats.min_detectable(1.0, 3, alpha=0.05 / 6):.2f}")


def bootstrap() -> None:
    for n in (20, 30):
        hits = [lo <= 0 <= hi for lo, hi in (stats.bootstrap_interval(rng.normal(0, 1, n), seed=i) for i in range(400))]
        print(f"bootstrap 95% interval, {n} values: covers in {np.mean(hits):.3f} of 400 draws")


if __name__ == "__main__":
    global_null()
    racing()
    power()
    bootstrap()
