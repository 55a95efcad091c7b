"""The decision rule under the global null, by simulation (issue 30): 1,000 drawn studies
per case, every arm equal, and the share of studies with any false claim (any clear
comparison) must stay at 5% plus twice its Monte Carlo error. The cases: m = 3, 6 and
10 comparisons (leave-one-out: m factors against one shared baseline, so the contrasts
are correlated), a fixed design and an adaptive one (seeds 3..10 until decisive), with
equal seed spreads and with spreads unequal 4:1 across arms. No training: the values are
drawn, and the real code decides (stats.paired + Rule.judge, adaptive.seed_rounds).

The 1,000-study cases take 6 CPU-minutes, which CI's 30 minutes cannot hold beside the
rest: they carry the `simulation` mark, which the README's test command leaves out.
Run them with `python -m pytest -m simulation -n 3` (3 min on 2 cores);
scripts/check_statistics.py prints the same cases' rates."""
import math

import numpy as np
import pandas as pd
import pytest

from ablate import adaptive, designs, stats
from ablate.designs import Design, SeedPolicy

STUDIES = 1000
LIMIT = 0.05 + 2 * math.sqrt(0.05 * 0.95 / STUDIES)  # 5% plus twice its Monte Carlo se: 0.0638


def loo(m: int) -> Design:
    return Design(f"loo{m}", "leave_one_out", [], {f"f{i}": [f"x{i}=1"] for i in range(m)})


def spreads(design: Design, unequal: bool) -> dict[str, float]:
    """Each arm's seed sd: all 0.1, or 0.1 and 0.4 in turn (4:1), the baseline at 0.1."""
    return {a.name: 0.4 if unequal and i % 2 else 0.1 for i, a in enumerate(designs.arms(design))}


def drawn(design: Design, sd: dict[str, float], seeds: int, rng) -> pd.DataFrame:
    """[seed x arm]: every arm's true value 99, its seeds' noise N(0, sd)."""
    return pd.DataFrame({a: 99.0 + rng.normal(0, s, seeds) for a, s in sd.items()})


def fixed_claims(m: int, unequal: bool, rng) -> float:
    """The share of fixed studies (3..10 seeds, drawn per study) with any clear effect."""
    design = loo(m)
    comps = designs.contrasts(design)
    sd = spreads(design, unequal)
    rule = stats.Rule(comparisons=m)
    false = 0
    for _ in range(STUDIES):
        table = drawn(design, sd, int(rng.integers(3, 11)), rng)
        judged = rule.judge([stats.paired(np.zeros(len(table)), adaptive.contrast_values(c, table).to_numpy(),
                                          rule=rule, detect=False) for c in comps])
        false += any(c.clear for c in judged)
    return false / STUDIES


def adaptive_claims(m: int, unequal: bool, rng) -> float:
    """The share of adaptive studies (seeds 3..10 until decisive) with any decisive
    comparison (each is clear in the report: test_statistics)."""
    design = loo(m)
    arms, comps = designs.arms(design), designs.contrasts(design)
    sd = spreads(design, unequal)
    policy = SeedPolicy(min=3, max=10, halfwidth=1e-6)
    false = 0
    for _ in range(STUDIES):
        table = drawn(design, sd, 10, rng)
        study = adaptive.seed_rounds(policy, arms, comps, lambda jobs, table=table: (table, set()))
        false += any(d.status == "decisive" for d in study.decisions)
    return false / STUDIES


# One class per case group: `--dist loadscope` gives each class its own worker, so the
# adaptive cases (25 to 80 s each) run side by side instead of one after another.
@pytest.mark.slow
@pytest.mark.simulation
class TestFixed:
    @pytest.mark.parametrize("unequal", [False, True], ids=["equal", "unequal 4:1"])
    @pytest.mark.parametrize("m", [3, 6, 10])
    def test_a_fixed_design_makes_a_false_claim_in_at_most_five_percent_of_null_studies(self, m, unequal):
        rate = fixed_claims(m, unequal, np.random.default_rng(100 + m + 50 * unequal))
        assert rate <= LIMIT, rate


def _adaptive_case(m: int, unequal: bool) -> None:
    rate = adaptive_claims(m, unequal, np.random.default_rng(200 + m + 50 * unequal))
    assert rate <= LIMIT, rate


@pytest.mark.slow
@pytest.mark.simulation
class TestAdaptiveFew:
    @pytest.mark.parametrize("unequal", [False, True], ids=["equal", "unequal 4:1"])
    @pytest.mark.parametrize("m", [3, 6])
    def test_an_adaptive_design_makes_a_false_claim_in_at_most_five_percent_of_null_studies(self, m, unequal):
        _adaptive_case(m, unequal)


@pytest.mark.slow
@pytest.mark.simulation
class TestAdaptiveTenEqual:
    def test_an_adaptive_design_of_ten_with_equal_spreads(self):
        _adaptive_case(10, False)


@pytest.mark.slow
@pytest.mark.simulation
class TestAdaptiveTenUnequal:
    def test_an_adaptive_design_of_ten_with_spreads_unequal_4_to_1(self):
        _adaptive_case(10, True)


def test_the_simulation_can_fail():
    """The same simulation finds the error a rule without the looks' adjustment makes:
    judged as if each look were the only one, an adaptive study claims too much."""
    design = loo(6)
    comps = designs.contrasts(design)
    rng = np.random.default_rng(3)
    naive = SeedPolicy(min=3, max=3, halfwidth=1e-6)  # one look's rule ...
    false = 0
    for _ in range(200):
        table = drawn(design, spreads(design, False), 10, rng)
        for n in range(3, 11):  # ... applied at every look of seeds 3..10
            decisions = adaptive.decide(naive, comps, table.iloc[:n], set())
            if any(d.status == "decisive" for d in decisions):
                false += 1
                break
    assert false / 200 > LIMIT
