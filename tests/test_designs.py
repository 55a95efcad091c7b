"""Ablation designs as plain functions (arms, jobs, checks) and their effects, computed
on runs with known metric values."""
import ast
import itertools
import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_statistics import compatible

import ablate
from ablate import adaptive, config, designs, effects, report, stats, tracking
from ablate.designs import Design, DesignError
from ablate.metrics import Objective

LOO = Design("loo", "leave_one_out", ["step=7"], {"batchnorm": ["norm=none"], "rotation": ["augmentation=none"]})


def test_each_kind_has_its_arms():
    assert [(a.name, a.overrides) for a in designs.arms(LOO)] == [
        ("baseline", ("step=7",)), ("batchnorm", ("step=7", "norm=none")),
        ("rotation", ("step=7", "augmentation=none"))]
    aoi = Design("aoi", "add_one_in", ["step=1"], {"bn": ["norm=bn_before_relu"]})
    assert [a.applied for a in designs.arms(aoi)] == [(), ("bn",)]
    path = Design("p", "path", ["step=1"], {"a": ["step=2"], "b": ["step=3"], "c": ["step=4"]}, ["a", "c", "b"])
    assert [(a.name, a.overrides) for a in designs.arms(path)] == [
        ("baseline", ("step=1",)), ("a", ("step=2",)), ("a+c", ("step=4",)), ("a+c+b", ("step=3",))]
    fact = Design("f", "factorial", [], {"x": ["seed=1"], "y": ["train.lr=0.1"], "z": ["norm=none"]})
    arms = designs.arms(fact)
    assert len(arms) == 8 and {a.applied for a in arms} == {
        tuple(f for f, on in zip("xyz", bits, strict=True) if on) for bits in itertools.product((0, 1), repeat=3)}
    assert fact.levels(arms[-1]) == {"x": "on", "y": "on", "z": "on"}


def test_jobs_cross_the_arms_with_the_rest_of_the_sweep_and_carry_their_tags():
    jobs = designs.expand(LOO, [["seed=0", "train.epochs=3"], ["seed=1", "train.epochs=3"]])
    assert len(jobs) == 6
    arm, overrides = jobs[3]
    assert arm.name == "batchnorm"
    assert overrides == ['step="7"', "seed=1", "train.epochs=3", "norm=none", "design.name=loo",
                         "design.kind=leave_one_out", "design.arm='batchnorm'"]  # quoted for Hydra's parser


def test_a_design_jobs_run_is_named_by_its_arm_without_the_quotes(monkeypatch):
    _, overrides = designs.expand(LOO, [["seed=1"]])[1]
    monkeypatch.setenv(tracking.ENV_SWEEP_KEYS, "design.arm,seed")
    assert tracking.run_name(overrides) == "arm=batchnorm,seed=1"


def test_the_command_line_may_change_the_baseline_but_not_a_factor():
    jobs = designs.expand(LOO, [["step=6"]])
    assert jobs[0][1][0] == 'step="6"'
    with pytest.raises(DesignError, match="factor 'batchnorm' changes"):
        designs.expand(LOO, [["norm=bn_after_relu"]])


def test_a_design_is_read_from_the_sweeper_config_in_either_form():
    d = designs.from_config({"design": "add_one_in", "baseline": "step=1 seed=2",
                             "factors": {"bn": "norm=bn_before_relu model.dropout=0.05",
                                         "rot": ["augmentation=rotate"]}})
    assert d.baseline == ["step=1", "seed=2"] and d.factors["bn"] == ["norm=bn_before_relu", "model.dropout=0.05"]
    assert d.name == "add_one_in" and d.order == ["bn", "rot"]


@pytest.mark.parametrize("node, needle", [
    ({"design": "zigzag", "factors": {"a": ["seed=1"]}}, "must be one of leave_one_out"),
    ({"design": "path", "factors": {}}, "factors is empty"),
    ({"design": "path", "factors": {"a": ["seed=1"]}, "order": ["a", "b"]}, "unknown factor(s) b"),
    ({"design": "path", "factors": {"a": []}}, "factor 'a' has no overrides"),
    ({"design": "path", "factors": {"a": [3]}}, "give a list of overrides"),
])
def test_a_malformed_design_is_one_clear_error(node, needle):
    with pytest.raises(DesignError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        designs.from_config(node)


def test_a_factor_that_changes_nothing_or_does_not_compose_is_refused():
    same = Design("x", "leave_one_out", ["step=7"], {"noop": ["norm=bn_before_relu"]})
    with pytest.raises(DesignError, match=r"factor 'noop' .* does not change the config of baseline"):
        designs.check_design(same, lambda o: config.fingerprint(config.compose(o)))
    broken = Design("x", "leave_one_out", ["step=7"], {"typo": ["norm=bn_sideways"]})
    with pytest.raises(DesignError, match=r"arm 'typo' .* does not compose"):
        designs.check_design(broken, lambda o: config.fingerprint(config.compose(o)))
    designs.check_design(LOO, lambda o: config.fingerprint(config.compose(o)))  # a good one passes


def test_the_design_node_is_a_tag_not_part_of_the_config():
    plain = ablate.compose(["step=7"])
    tagged = ablate.compose(["step=7", "design.name=loo", "design.arm=baseline"])
    assert config.fingerprint(plain) == config.fingerprint(tagged)
    assert not any(k.startswith("design") for k in config.flatten(tagged))


# --- effects on runs with known values ------------------------------------------------

def runs_frame(design: Design, value, seeds=(0, 1, 2), failed=(), objective=None) -> tuple[pd.DataFrame, dict]:
    """A runs DataFrame as mlflow.search_runs gives it, one run per arm and seed, with
    final (and best = final + 0.1) value of the objective's metric (default: accuracy,
    untagged as before objectives) from value(arm, seed); and the spec."""
    m = objective.metric if objective else "acc"
    tags = {f"tags.{k}": v for k, v in objective.tags().items()} if objective else {}
    rows, arm_of = [], {}
    for arm in designs.arms(design):
        for seed in seeds:
            fp = f"{arm.name}-{seed}"
            arm_of[fp] = arm.name
            bad = (arm.name, seed) in failed
            acc = np.nan if bad else value(arm, seed)
            rows.append({"run_id": fp, "status": "FAILED" if bad else "FINISHED", "start_time": len(rows),
                         "tags.ablate.fingerprint": fp, "params.seed": str(seed),
                         "tags.ablate.error": "FloatingPointError: training diverged" if bad else None,
                         f"metrics.final_test_{m}": acc, f"metrics.best_test_{m}": acc + 0.1,
                         "metrics.param_count": 100.0, **tags})
    spec = {**design.spec(), "arms": [a.name for a in designs.arms(design)], "fingerprints": arm_of}
    return pd.DataFrame(rows), json.loads(json.dumps(spec))


NOISE = {(a, s): v for (a, s), v in zip(itertools.product(["baseline", "batchnorm", "rotation"], range(3)),
                                         [0.0, 0.04, -0.03, 0.02, -0.05, 0.01, -0.02, 0.03, 0.05], strict=True)}


def test_leave_one_out_contributions_are_the_paired_differences_with_scipys_intervals():
    truth = {"baseline": 99.4, "batchnorm": 98.9, "rotation": 99.35}
    runs, spec = runs_frame(LOO, lambda arm, s: truth[arm.name] + NOISE[(arm.name, s)])
    rep = effects.analyse(runs, spec)
    e = rep.effects.set_index("effect")
    for f in ("batchnorm", "rotation"):
        base = np.array([truth["baseline"] + NOISE[("baseline", s)] for s in range(3)])
        without = np.array([truth[f] + NOISE[(f, s)] for s in range(3)])
        row = e.loc[f]
        assert row["final_test_acc_delta"] == pytest.approx(np.mean(base - without))  # baseline - without
        # the rule's interval: Holm's, compatible with its verdicts (batchnorm is clear, rotation not)
        clear = [True, False]
        sign = int(np.sign(row["final_test_acc_delta"])) if f == "batchnorm" else 0
        ci = compatible(without, base, 2, clear, sign)
        assert (row["final_test_acc_ci_lo"], row["final_test_acc_ci_hi"]) == pytest.approx(ci)
        assert row["final_test_acc_p"] == pytest.approx(scipy_stats.ttest_rel(base, without).pvalue)
        # the smaller p pays 2 (the first of 4 one-sided hypotheses), the larger at most 1.5
        factor = 2 if f == "batchnorm" else 1.5
        assert row["final_test_acc_p_adj"] == pytest.approx(min(1, factor * row["final_test_acc_p"]))
        assert row["final_test_acc_clear"] == (f == "batchnorm")
    assert rep.rule == stats.Rule(comparisons=2, looks=1)
    assert e.loc["batchnorm", "final_test_acc_clear"] and not e.loc["rotation", "final_test_acc_clear"]


def test_add_one_in_gains_are_with_minus_baseline():
    aoi = Design("aoi", "add_one_in", ["step=1"], {"bn": ["norm=bn_before_relu"]})
    runs, spec = runs_frame(aoi, lambda arm, s: 99.0 + (0.3 if arm.applied else 0) + 0.01 * s * (arm.name == "bn"))
    e = effects.analyse(runs, spec).effects.iloc[0]
    assert e["effect"] == "bn" and e["final_test_acc_delta"] == pytest.approx(0.31)
    assert e["what"] == "with bn - baseline"


def planted(interaction: float):
    """A 2^3 factorial: final acc = 90 + 2a + 1b + 0c + interaction * a * b + seed noise."""
    rng = np.random.default_rng(7)
    noise = {(cell, s): rng.normal(0, 0.05) for cell in range(8) for s in range(5)}
    fact = Design("f", "factorial", [], {"a": ["x=1"], "b": ["y=1"], "c": ["z=1"]})
    index = {a.name: i for i, a in enumerate(designs.arms(fact))}

    def value(arm, seed):
        on = {f: f in arm.applied for f in "abc"}
        return 90 + 2 * on["a"] + on["b"] + interaction * on["a"] * on["b"] + noise[(index[arm.name], seed)]

    return fact, value


@pytest.mark.parametrize("interaction", [1.5, 0.0])
def test_a_factorial_finds_a_planted_interaction_and_none_where_there_is_none(interaction):
    fact, value = planted(interaction)
    runs, spec = runs_frame(fact, value, seeds=range(5))
    e = effects.analyse(runs, spec).effects.set_index("effect")
    assert e.loc["a", "final_test_acc_delta"] == pytest.approx(2 + interaction / 2, abs=0.06)
    assert e.loc["b", "final_test_acc_delta"] == pytest.approx(1 + interaction / 2, abs=0.06)
    assert e.loc["a x b", "final_test_acc_delta"] == pytest.approx(interaction / 2, abs=0.06)
    clear = set(e.index[e["final_test_acc_clear"]])
    assert clear == ({"a", "b", "a x b"} if interaction else {"a", "b"})
    # by hand, for one seed: the a x b contrast is half the change of a's effect across b
    cells = {a.name: value(a, 0) for a in designs.arms(fact)}
    by_hand = np.mean([(cells[f"a+b{c}"] - cells[f"b{c}"]) - (cells[f"a{c}"] - cells["baseline" if not c else c[1:]])
                       for c in ("", "+c")]) / 2
    per_seed = runs_frame(fact, value, seeds=[0])
    assert effects.analyse(*per_seed).effects.set_index("effect").loc["a x b", "final_test_acc_delta"] == \
        pytest.approx(by_hand)


def test_a_failed_arm_is_part_of_the_answer():
    runs, spec = runs_frame(LOO, lambda arm, s: 99.0 + NOISE[(arm.name, s)], failed={("batchnorm", 0), ("batchnorm", 1),
                                                                                       ("batchnorm", 2)})
    rep = effects.analyse(runs, spec)
    arm = rep.arms.set_index("arm").loc["batchnorm"]
    assert (arm["finished"], arm["failed"]) == (0, 3) and "diverged" in arm["error"]
    e = rep.effects.set_index("effect")
    assert "3 of 3 seed(s) failed" in e.loc["batchnorm", "status"]
    assert np.isnan(e.loc["batchnorm", "final_test_acc_delta"])
    assert e.loc["rotation", "status"] == "ok" and not np.isnan(e.loc["rotation", "final_test_acc_delta"])
    assert any("batchnorm: 3 of 3" in n for n in rep.notes)


def test_intervals_respect_the_range_of_the_metric_and_only_where_it_has_one():
    lo, hi = stats.t_interval([99.9, 99.2, 100.0], Objective().bounds)
    assert hi == 100.0 and lo > 98
    assert np.isnan(stats.bootstrap_interval([39.0, 45.0, 50.0])[0])  # too few values to be honest
    many = np.random.default_rng(0).normal(45, 3, 25)
    blo, bhi = stats.bootstrap_interval(many)
    assert many.min() <= blo <= bhi <= many.max()
    free = stats.t_interval([0.1, 0.9, 0.2])
    assert stats.clip(*free, (0.0, None)) == (0.0, free[1]) and free[0] < 0  # an RMSE: cut below, open above
    assert stats.clip(-3.0, 5.0, (None, 1.0)) == (-3.0, 1.0)  # an R²
    assert stats.clip(-300.0, 300.0, None) == (-300.0, 300.0)


RMSE = Objective("rmse", "min", "final", (0.0, None), "RMSE", "")


def test_a_regression_design_reports_rmse_lower_is_better_with_intervals_not_cut_to_accuracy():
    """Leave-one-out on RMSE (50..200): without batchnorm the RMSE goes from ~60 to ~190,
    so its contribution (baseline - without) is about -130, an improvement; without
    rotation it drops to ~50, so rotation's +10 is a worsening. Intervals in RMSE, uncut."""
    truth = {"baseline": 60.0, "batchnorm": 190.0, "rotation": 50.0}
    value = lambda arm, s: truth[arm.name] + 20 * NOISE[(arm.name, s)]  # noqa: E731  seed noise of about 1
    runs, spec = runs_frame(LOO, value, objective=RMSE)
    rep = effects.analyse(runs, spec)  # the objective from the runs' tags
    assert rep.objective == RMSE
    e = rep.effects.set_index("effect")
    base = np.array([value(designs.arms(LOO)[0], s) for s in range(3)])
    without = np.array([truth["batchnorm"] + 20 * NOISE[("batchnorm", s)] for s in range(3)])
    ci = compatible(without, base, 2, [True, True], sign=-1)  # both clear: bounded at 0 above
    bn = e.loc["batchnorm"]
    assert bn["final_test_rmse_delta"] == pytest.approx(np.mean(base - without)) and bn["final_test_rmse_delta"] < -100
    assert (bn["final_test_rmse_ci_lo"], bn["final_test_rmse_ci_hi"]) == pytest.approx(ci) and ci[0] < -100
    assert bn["final_test_rmse_clear"] and bn["final_test_rmse_better"]
    assert e.loc["rotation", "final_test_rmse_clear"] and not e.loc["rotation", "final_test_rmse_better"]
    arm = rep.arms.set_index("arm").loc["batchnorm"]
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=without.mean(), scale=scipy_stats.sem(without))
    assert (arm["final_test_rmse_ci_lo"], arm["final_test_rmse_ci_hi"]) == pytest.approx((lo, hi)) and hi > 100
    md = report.design_markdown(rep)
    assert md.startswith("Objective: final test RMSE, lower is better. A negative Δ is an improvement.")
    verdict = report.verdict(rep)
    assert "final test RMSE, lower is better" in verdict and " pp" not in md and "accuracy" not in md
    assert re.search(r"batchnorm \(-1[23]\d\.\d+, improves\)", verdict), verdict
    assert re.search(r"rotation \(\+\d+\.\d+, worsens\)", verdict), verdict
    # a design.json's objective (as the sweep records it) is what the report reads
    untagged = runs.drop(columns=[c for c in runs if c.startswith("tags.ablate.objective")])
    again = effects.analyse(untagged, {**spec, "objective": json.loads(json.dumps(asdict(RMSE)))})
    assert again.objective == RMSE
    assert again.effects["final_test_rmse_delta"].tolist() == rep.effects["final_test_rmse_delta"].tolist()


def test_designs_never_imports_adaptive():
    """adaptive imports designs; a plan holds a SeedPolicy, which therefore lives in designs."""
    tree = ast.parse(Path(designs.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "ablate.adaptive" not in imported
    assert adaptive.SeedPolicy is designs.SeedPolicy


def test_the_rule_is_holm_with_a_group_sequential_boundary_over_looks():
    rule = stats.Rule(comparisons=6, looks=8, first=3)
    # the boundary spends exactly its level over the 8 looks: fresh null paths (another seed
    # than the rule's own) cross it at the rate asked for, and it costs less than Bonferroni
    z = np.random.default_rng(7).standard_normal((200_000, 10))
    k = np.arange(3, 11)
    s, ss = z.cumsum(1)[:, 2:], (z * z).cumsum(1)[:, 2:]
    p_min = scipy_stats.t.sf((s / k) / np.sqrt((ss - s * s / k) / (k - 1) / k), k - 1).min(1)
    for a in (0.05 / 12, 0.05 / 2):
        crossed = (p_min < rule.per_look(a)).mean()
        assert crossed == pytest.approx(a, abs=3 * np.sqrt(a / 200_000))
        assert a / 8 < rule.per_look(a) < a / 2
    assert rule.each == pytest.approx(2 * rule.per_look(0.05 / 12))
    assert 0.05 / 48 < rule.each < 0.05 / 12
    # Holm's step-down over the 2m one-sided p's: 12 here; three given, the rest never rejected
    qs = [0.0001, 0.004, 0.3]
    comps = [stats.Comparison(float(-scipy_stats.t.ppf(q, 2)) * 0.1, 0, 0, 2 * q, 0, False, "paired t", 3, q_pos=q,
                              q_neg=1 - q, se=0.1, df=2) for q in qs]  # delta = the t that gives q, times se
    judged = stats.Rule(comparisons=6).judge(comps)
    assert [c.p_adj for c in judged] == pytest.approx([12 * 0.0001, 11 * 0.004, 1.0])
    assert [c.clear for c in judged] == [True, True, False]
    assert judged[0].ci_lo == 0 and judged[2].ci_lo < 0 < judged[2].ci_hi
    assert "Holm's step-down over 6 comparisons, each p adjusted for its 8 looks at 3..10 seeds" in rule.describe()


def test_the_smallest_detectable_difference_shrinks_with_seeds():
    mdd = [stats.min_detectable(1.0, n) for n in (3, 5, 10, 30)]
    assert mdd == sorted(mdd, reverse=True) and mdd[2] == pytest.approx(0.996, abs=0.01)


def test_a_smallest_effect_of_interest_given_when_reporting_is_said_to_be_post_hoc():
    """Issue 30 item 9: a sesoi chosen after seeing the results keeps its error rate but
    not its meaning; the report says so, and says nothing when the study declared it."""
    truth = {"baseline": 99.4, "batchnorm": 98.9, "rotation": 99.35}
    runs, spec = runs_frame(LOO, lambda arm, s: truth[arm.name] + NOISE[(arm.name, s)])
    said = lambda rep: [n for n in rep.notes if "was given when reporting" in n]  # noqa: E731
    assert said(effects.analyse(runs, spec, sesoi=0.1)) == [
        "the smallest effect of interest ±0.1 was given when reporting, after the results were seen (the study "
        "declared none before its runs): the equivalence calls keep their error rate, but ±0.1 is not a margin "
        "fixed in advance"]
    declared = {**spec, "sesoi": 0.1}
    assert not said(effects.analyse(runs, declared)) and not said(effects.analyse(runs, declared, sesoi=0.1))
    assert "declared ±0.1 before its runs" in said(effects.analyse(runs, declared, sesoi=0.2))[0]


def test_a_row_with_no_spread_says_how_many_seeds_it_would_need_to_be_clear():
    """Issue 30 item 5: [0.05, 0.05, 0.05] can never be clear at 3 seeds (sign-flip p 0.25),
    while a row with some spread can; the report says so where it happens."""
    base = {s: 99.4 + NOISE[("baseline", s)] for s in range(3)}
    runs, spec = runs_frame(LOO, lambda arm, s: base[s] - {"baseline": 0, "batchnorm": 0.5, "rotation": 0.3}[arm.name]
                            - (0.01 * s if arm.name == "rotation" else 0))
    rep = effects.analyse(runs, spec)
    e = rep.effects.set_index("effect")
    assert e.loc["batchnorm", "final_test_acc_test"] == "sign-flip (no spread)" and not e.loc["batchnorm",
                                                                                              "final_test_acc_clear"]
    (note,) = [n for n in rep.notes if "no spread" in n]
    assert note.startswith("batchnorm: the same difference on each of its 3 seeds") and "p is at least" in note
    assert "fewer than 7 seeds" in note  # 2 comparisons: 2^(1-n) x 2 < 0.05 from n = 7
    assert e.loc["rotation", "final_test_acc_test"] == "paired t"
    assert [stats.no_spread_seeds(stats.Rule(m, L)) for m, L in ((1, 1), (6, 1), (6, 8))] == [6, 8, 11]
