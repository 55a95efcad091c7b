"""The decision rule's error rates and power, measured by simulation with no training:
the numbers in docs/statistics.md. About a minute on 2 cores.

    python scripts/check_statistics.py
"""
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats as ss

from ablate import stats

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_statistics import null_claim_rate, racing_drop_rate

rng = np.random.default_rng(2026)


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
    print(f"global null, 6 comparisons, seeds 3..10, 1000 studies: any decisive (= clear) in "
          f"{null_claim_rate(1000, rng):.3f} (Monte Carlo se at 5%: {math.sqrt(0.05 * 0.95 / 1000):.3f})")
    print(f"racing, 4 equal candidates, 5 seeds, 1000 rounds: a candidate dropped in {racing_drop_rate(1000, rng):.3f}")
    power()
    bootstrap()
