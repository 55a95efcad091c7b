"""Adaptive studies on a fake training function with planted effects and seed noise
(seconds, no training), then once for real through the sweeper, killed and rerun."""
import json
import os
import signal
import subprocess
import sys
import zlib
from dataclasses import asdict

import mlflow
import numpy as np
import pandas as pd
import pytest

from ablate import adaptive, designs, effects, report
from ablate.adaptive import SeedPolicy
from ablate.designs import Design
from ablate.metrics import Objective


class FakeStore:
    """Trains a job by drawing its final accuracy: the planted value of its arm plus
    seed noise, the same for the same (arm, seed) every time. Remembers what it trained,
    and can be told to die after a number of trainings, like a killed sweep."""

    def __init__(self, planted, noise_sd=0.1):
        self.planted, self.noise_sd = planted, noise_sd
        self.results: dict[tuple[str, int], float] = {}
        self.trained: list[tuple[str, int]] = []
        self.die_after = None

    def value(self, arm, seed):
        rng = np.random.default_rng(zlib.crc32(f"{arm.name}/{seed}".encode()))  # stable across processes
        return self.planted(arm) + rng.normal(0, self.noise_sd)

    def __call__(self, jobs):
        for arm, seed in jobs:
            if (arm.name, seed) in self.results:
                continue  # finished before: skipped, as a job skips a FINISHED run
            if self.die_after is not None and len(self.trained) >= self.die_after:
                raise KeyboardInterrupt("killed")
            self.trained.append((arm.name, seed))
            self.results[(arm.name, seed)] = self.value(arm, seed)
        table = pd.Series(self.results).unstack(level=0)  # every stored result: seeds x arms
        return table, set()


LOO = Design("loo", "leave_one_out", ["step=7"], {"clear": ["norm=none"], "close": ["model.dropout=0"]})
# step 7 at 99.0; without "clear" 98.0 (it buys 1 pp); without "close" 98.97 (it buys 0.03 pp)
PLANTED = {"baseline": 99.0, "clear": 98.0, "close": 98.97}


def loo_study(store, policy):
    arms = designs.arms(LOO)
    return adaptive.seed_rounds(policy, arms, designs.contrasts(LOO), store)


def test_seeds_go_to_the_close_comparison_not_the_clear_one():
    store = FakeStore(lambda arm: PLANTED[arm.name])
    study = loo_study(store, SeedPolicy(min=3, max=10, halfwidth=0.05))
    by = {d.comparison: d for d in study.decisions}
    assert by["clear"].status == "decisive" and by["clear"].n <= 4
    assert by["close"].status == "max" and by["close"].n == 10
    assert study.seeds == {"baseline": 10, "clear": by["clear"].n, "close": 10}
    assert sorted(store.trained) == sorted({(a, s) for a, n in study.seeds.items() for s in range(n)})  # once each


def test_the_stopping_rules():
    """precise: an interval narrower than the target stops a comparison whatever it
    says; max: nothing goes past it; until=precise: excluding 0 is not enough."""
    quiet = FakeStore(lambda arm: PLANTED[arm.name], noise_sd=0.001)
    study = loo_study(quiet, SeedPolicy(min=3, max=10, halfwidth=0.05))
    assert {d.status for d in study.decisions} == {"decisive"} and set(study.seeds.values()) == {3}
    study = loo_study(FakeStore(lambda arm: PLANTED[arm.name], noise_sd=0.001),
                      SeedPolicy(min=3, max=10, halfwidth=0.05, until="precise"))
    assert {d.status for d in study.decisions} == {"precise"}
    study = loo_study(FakeStore(lambda arm: PLANTED[arm.name], noise_sd=0.5), SeedPolicy(min=3, max=5))
    assert max(study.seeds.values()) == 5 and {d.status for d in study.decisions} <= {"decisive", "max"}
    assert SeedPolicy.from_config({"min": 4}).max == 4  # min alone: a fixed number of seeds


def test_a_killed_study_run_again_trains_nothing_twice_and_ends_the_same():
    policy = SeedPolicy(min=3, max=10, halfwidth=0.05)
    straight = loo_study(FakeStore(lambda arm: PLANTED[arm.name]), policy)
    for die_after in (5, 12, 17):  # in the first round, in a later one, near the end
        store = FakeStore(lambda arm: PLANTED[arm.name])
        store.die_after = die_after
        with pytest.raises(KeyboardInterrupt):
            loo_study(store, policy)
        store.die_after = None
        again = loo_study(store, policy)  # the same command: the store is all it knows
        assert len(store.trained) == len(set(store.trained)), "a job was trained twice"
        assert again.seeds == straight.seeds and again.record()["decisions"] == straight.record()["decisions"]


class FailingStore(FakeStore):
    """One run fails every time it is tried: (close, seed 3)."""

    def __call__(self, jobs):
        table, _ = super().__call__(jobs)
        if "close" in table and 3 in table.index:
            table.loc[3, "close"] = np.nan
        return table, {("close", 3)} if ("close", 3) in self.results else set()


def test_a_decision_with_a_failed_run_is_reported_on_the_very_seeds_it_used():
    """Issue 30 item 1: with seed 3 of an arm failed, the decision is taken on {0, 1, 2, 4};
    the report re-judged it on the seeds below n, {0, 1, 2}, and printed "n 3" under a
    verdict taken at 4. It re-judges on the recorded ids."""
    policy = SeedPolicy(min=3, max=5)
    store = FailingStore(lambda arm: PLANTED[arm.name], noise_sd=0.5)
    study = loo_study(store, policy)
    close = next(d for d in study.decisions if d.comparison == "close")
    assert close.seeds == [0, 1, 2, 4] and close.n == 4
    rows = [{"run_id": f"{a}-{s}", "status": "FAILED" if (a, s) == ("close", 3) else "FINISHED", "start_time": i,
             "tags.ablate.fingerprint": f"{a}-{s}", "params.seed": str(s),
             "tags.ablate.error": "RuntimeError: boom" if (a, s) == ("close", 3) else None,
             "metrics.final_test_acc": np.nan if (a, s) == ("close", 3) else v,
             "metrics.best_test_acc": np.nan if (a, s) == ("close", 3) else v, "metrics.param_count": 1.0}
            for i, ((a, s), v) in enumerate(store.results.items())]
    spec = {**LOO.spec(), "arms": [a.name for a in designs.arms(LOO)],
            "fingerprints": {f"{a}-{s}": a for a, s in store.results},
            "adaptive": {"policy": asdict(policy), **study.record()}}
    effect = effects.analyse(pd.DataFrame(rows), json.loads(json.dumps(spec))).effects.set_index("effect")
    assert effect.loc["close", "final_test_acc_n"] == 4
    paired = pd.Series(store.results).unstack(level=0).drop(index=3)
    assert effect.loc["close", "final_test_acc_delta"] == pytest.approx(
        (paired["baseline"] - paired["close"]).mean())  # the contribution: baseline - without it


GREEDY = Design("g", "greedy_path", ["step=1"], {"a": ["model=deep"], "b": ["norm=bn_before_relu"],
                                                 "c": ["augmentation=rotate"], "d": ["scheduler=onecycle"]})


def planted_path(arm):
    """Gains: c +3, a +2, b +0.5; d +0.2 alone but +2.5 once a is in. Greedy finds c, a, d, b."""
    on = set(arm.applied)
    return 90 + 3 * ("c" in on) + 2 * ("a" in on) + 0.5 * ("b" in on) + ("d" in on) * (2.5 if "a" in on else 0.2)


@pytest.mark.parametrize("race", [False, True])
def test_the_greedy_path_recovers_the_planted_order(race):
    store = FakeStore(planted_path, noise_sd=0.2)
    found = adaptive.greedy_path(GREEDY, 4, store, race=race)
    assert found.path == ("c", "a", "d", "b")
    first = {c.factor: c for c in found.rounds[0].candidates}
    assert first["c"].gain == pytest.approx(3, abs=0.5) and found.rounds[0].chosen == "c"
    if race:  # clearly worse candidates stop early: fewer jobs than the full rounds
        full = FakeStore(planted_path, noise_sd=0.2)
        adaptive.greedy_path(GREEDY, 4, full, race=False)
        assert len(store.trained) < len(full.trained)
        assert any(c.dropped_at is not None for r in found.rounds for c in r.candidates)


def test_a_killed_greedy_path_resumes_to_the_same_path():
    straight = adaptive.greedy_path(GREEDY, 3, FakeStore(planted_path, 0.2))
    store = FakeStore(planted_path, 0.2)
    store.die_after = 20
    with pytest.raises(KeyboardInterrupt):
        adaptive.greedy_path(GREEDY, 3, store)
    store.die_after = None
    again = adaptive.greedy_path(GREEDY, 3, store)
    assert again.record() == straight.record() and len(store.trained) == len(set(store.trained))


RMSE = Objective("rmse", "min", "final", (0.0, None), "RMSE", "")


def planted_rmse(arm):
    """An RMSE, lower is better: c -30, a -20, b -5; d +10 alone (worse) but -25 once a
    is in. Greedy by the objective finds c, a, d, b; by the largest gain it would take d."""
    on = set(arm.applied)
    return 100 - 30 * ("c" in on) - 20 * ("a" in on) - 5 * ("b" in on) + ("d" in on) * (-25 if "a" in on else 10)


@pytest.mark.parametrize("race", [False, True])
def test_the_greedy_path_takes_the_factor_that_lowers_a_min_objective_most(race):
    store = FakeStore(planted_rmse, noise_sd=2.0)
    found = adaptive.greedy_path(GREEDY, 4, store, race=race, objective=RMSE)
    assert found.path == ("c", "a", "d", "b")
    first = {c.factor: c for c in found.rounds[0].candidates}
    assert first["c"].gain == pytest.approx(-30, abs=4) and first["d"].gain == pytest.approx(10, abs=4)
    if race:  # d raises the RMSE: clearly worse than the leader c, so raced out
        assert first["d"].dropped_at is not None and first["c"].dropped_at is None


def test_the_halfwidth_is_in_the_metrics_own_units_and_the_report_says_so():
    """RMSE-scale values (~150, seed noise 2): a half-width of 5.0 RMSE is reached after
    a few more seeds and decides `precise`; nothing speaks of percentage points."""
    planted = {"baseline": 150.0, "clear": 150.5, "close": 149.0}
    store = FakeStore(lambda arm: planted[arm.name], noise_sd=2.0)
    policy = SeedPolicy.from_config({"min": 3, "max": 30, "until": "precise", "halfwidth": 5.0})
    assert policy.metric is None  # the objective's, once the sweeper knows it
    policy = policy.for_objective(RMSE)
    assert policy.metric == "final_test_rmse"
    study = loo_study(store, policy)
    assert {d.status for d in study.decisions} == {"precise"}
    assert all(3 < d.n < 30 and (d.hi - d.lo) / 2 <= 5.0 for d in study.decisions)
    assert not any("pp" in d.reason for d in study.decisions)
    with pytest.raises(designs.DesignError, match="decide on final_test_rmse"):
        SeedPolicy(metric="final_test_acc").for_objective(RMSE)
    # the report of this study, as the sweeper records it, says the target in the metric's units
    arm_list = designs.arms(LOO)
    runs = pd.DataFrame([{"run_id": f"{a}-{s}", "status": "FINISHED", "start_time": i, "params.seed": str(s),
                          "tags.ablate.fingerprint": f"{a}-{s}", "metrics.final_test_rmse": v,
                          "metrics.best_test_rmse": v, "metrics.param_count": 10.0}
                         for i, ((a, s), v) in enumerate(store.results.items())])
    spec = {**LOO.spec(), "arms": [a.name for a in arm_list], "fingerprints": {f"{a}-{s}": a for a, s in store.results},
            "objective": asdict(RMSE), "adaptive": {"policy": asdict(policy), **study.record()}}
    rep = effects.analyse(runs, json.loads(json.dumps(spec)))
    line = report.adaptive_line(rep)
    assert "±5.0 (in final_test_rmse's own units)" in line and " pp" not in line
    assert report.design_markdown(rep).startswith("Objective: final test RMSE, lower is better.")


def test_greedy_factors_must_not_share_a_key():
    from ablate import config
    clash = Design("g", "greedy_path", ["step=1"], {"x": ["norm=bn_before_relu"], "y": ["norm=bn_after_relu"]})
    with pytest.raises(designs.DesignError, match="both set norm"):
        designs.check_design(clash, lambda o: config.fingerprint(config.compose(o)))


# --- for real, through the sweeper and MLflow ------------------------------------------

ADAPTIVE = ["-m", "hydra/sweeper=ablation", "hydra.sweeper.design=leave_one_out", "hydra.sweeper.name=adaptive",
            'hydra.sweeper.baseline="step=7"', 'hydra.sweeper.factors={bn:"norm=none",rot:"augmentation=none"}',
            "hydra.sweeper.seeds={min:2,max:3,halfwidth:0.01}", "train.epochs=2", "progress=false",
            "data.download=false", "report.auto=false"]


def finished(cwd):
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    df = df[df["tags.mlflow.parentRunId"].notna()]
    return df


@pytest.mark.slow
def test_a_real_adaptive_study_killed_mid_round_resumes_without_repeating_a_run(tmp_path, tiny_data):
    args = [*ADAPTIVE, f"data.root={tiny_data}"]
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "ablate", *args], cwd=straight_dir, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "seeds:" in out.stdout or "decisive" in out.stdout or "max seeds" in out.stdout

    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=killed_dir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = 0
    for line in proc.stdout:  # kill in the second round, in the middle of a job
        started += line.startswith("\t#")
        if started == 7 and line.startswith("epoch 1/2"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    again = subprocess.run([sys.executable, "-m", "ablate", *args], cwd=killed_dir, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    a, b = finished(straight_dir), finished(killed_dir)
    assert set(b["status"]) == {"FINISHED"}
    assert b["tags.ablate.fingerprint"].is_unique, "a configuration was trained twice"
    key = ["tags.ablate.arm", "params.seed"]
    assert sorted(map(tuple, a[key].to_numpy())) == sorted(map(tuple, b[key].to_numpy()))
    merged = a.merge(b, on=key)
    assert (merged["metrics.final_test_acc_x"] == merged["metrics.final_test_acc_y"]).all()
    assert "Resuming run" in again.stdout, again.stdout  # the killed job continues its run
    assert again.stdout.count("\t#") < out.stdout.count("\t#")  # finished jobs were not launched again


def test_a_presets_jobs_compose_with_the_command_lines_seed_policy():
    """`-m ablation=step7_loo 'hydra.sweeper.seeds={...}'`: Hydra applies the hydra.sweeper
    override to every job's config too, so each job must keep the preset (and with it the
    ablation sweeper); with Hydra's basic sweeper the key does not exist and every job died."""
    from hydra import compose, initialize_config_dir

    from ablate import config
    seeds = "hydra.sweeper.seeds={min:2,max:3}"
    with initialize_config_dir(str(config.CONF_DIR), version_base="1.3"):
        sweeper = compose("config", overrides=["ablation=step7_loo", seeds], return_hydra_config=True).hydra.sweeper
    plan = designs.plan(sweeper, ["ablation=step7_loo"])
    assert plan.adaptive and all("ablation=step7_loo" in job for job in plan.jobs)
    plain = config.fingerprint(config.compose([o for o in plan.jobs[0] if not o.startswith("ablation=")]))
    assert config.fingerprint(config.compose([*plan.jobs[0], seeds])) == plain  # the choice changes no result
