"""The report's numbers, on MLflow runs with known metric values."""
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_statistics import compatible

from ablate import report, tracking
from ablate.metrics import Objective

# step -> (param_count, norm, dropout, best acc per seed 0..2, final acc per seed)
STUDY = {
    1: (10368, "none", "0.0", [99.00, 99.10, 98.95], [98.90, 99.00, 98.80]),
    2: (9648, "none", "0.0", [99.05, 99.00, 99.10], [99.00, 98.95, 99.00]),
    3: (9792, "bn_before_relu", "0.05", [99.40, 99.35, 99.30], [99.30, 99.30, 99.20]),
}


def log_run(uri, step, seed, params_count, norm, dropout, best, final, status="FINISHED", extra=None,
            objective=None):
    """A run as a job leaves it; `objective`: its tags and metric (none: an accuracy run
    from before objectives were tagged)."""
    client = mlflow.MlflowClient(uri)
    exp = tracking.ensure_experiment(uri, "ablate")
    run = client.create_run(exp, run_name=f"step={step},seed={seed}",
                            tags={tracking.FINGERPRINT: f"{step}-{seed}-{dropout}-{norm}",
                                  **(objective.tags() if objective else {})})
    rid = run.info.run_id
    params = {"seed": seed, "step": step, "norm": norm, "model.dropout": dropout,
              "tracking.uri": uri, "param_count": params_count, **(extra or {})}
    for k, v in params.items():
        client.log_param(rid, k, v)
    m = objective.metric if objective else "acc"
    for k, v in {"param_count": params_count, f"best_test_{m}": best, f"final_test_{m}": final,
                 "best_epoch": 10}.items():
        if v is not None:
            client.log_metric(rid, k, v)
    client.set_terminated(rid, status)
    return rid


@pytest.fixture
def study(store):
    for step, (count, norm, dropout, best, final) in STUDY.items():
        for seed in range(3):
            log_run(store, step, seed, count, norm, dropout, best[seed], final[seed])
    return store


def test_summary_means_stds_and_cis(study):
    runs, notes = report.load_runs(study, "ablate")
    rep = report.build(runs, notes)
    assert set(rep.keys) == {"step", "norm", "model.dropout"}
    s = rep.summary.set_index("config")
    assert list(s.index) == ["step=1", "step=2", "step=3"]
    for step, (count, _, _, best, final) in STUDY.items():
        row = s.loc[f"step={step}"]
        assert row["n"] == 3 and row["param_count"] == count
        assert row["best_test_acc_mean"] == pytest.approx(np.mean(best))
        assert row["best_test_acc_std"] == pytest.approx(np.std(best, ddof=1))
        lo, hi = stats.t.interval(0.95, 2, loc=np.mean(final), scale=stats.sem(final))
        assert (row["final_test_acc_ci_lo"], row["final_test_acc_ci_hi"]) == pytest.approx((lo, hi))


def test_deltas_are_paired_by_seed_with_scipys_ci(study):
    rep = report.build(*report.load_runs(study, "ablate"))
    d = rep.deltas.set_index(["from", "to"])
    row = d.loc[("step=2", "step=3")]
    a, b = STUDY[2][3], STUDY[3][3]
    # the rule's interval: Holm over every comparison of the table, compatible with its verdicts
    clear = list(rep.deltas["best_test_acc_clear"])
    assert rep.rule.comparisons == len(rep.deltas) and rep.rule.level == pytest.approx(0.95)
    sign = int(np.sign(row["best_test_acc_delta"])) if row["best_test_acc_clear"] else 0
    ci = compatible(a, b, len(rep.deltas), clear, sign)
    assert row["vs"] == "previous" and row["best_test_acc_test"] == "paired t"
    assert row["best_test_acc_delta"] == pytest.approx(np.mean(b) - np.mean(a))
    assert (row["best_test_acc_ci_lo"], row["best_test_acc_ci_hi"]) == pytest.approx(ci)
    assert row["delta_params"] == 144
    assert row["changed"] == "model.dropout: 0.0→0.05; norm: none→bn_before_relu"
    first = d.loc[("step=1", "step=3")]
    assert first["vs"] == "first" and first["delta_params"] == 9792 - 10368


def test_different_seeds_fall_back_to_welch(store):
    for seed, acc in zip((0, 1, 2), (99.0, 99.1, 99.2), strict=True):
        log_run(store, 1, seed, 100, "none", "0.0", acc, acc)
    for seed, acc in zip((3, 4), (99.3, 99.5), strict=True):
        log_run(store, 2, seed, 120, "none", "0.0", acc, acc)
    rep = report.build(*report.load_runs(store, "ablate"))
    row = rep.deltas.iloc[0]
    ci = stats.ttest_ind([99.3, 99.5], [99.0, 99.1, 99.2], equal_var=False).confidence_interval(0.95)
    assert row["best_test_acc_test"] == "Welch t"  # fewer than two shared seeds
    assert (row["best_test_acc_ci_lo"], row["best_test_acc_ci_hi"]) == pytest.approx((ci.low, ci.high))


def test_unordered_sweep_compares_with_a_chosen_baseline(store):
    for seed in range(2):
        for norm, acc in (("bn_after_relu", 99.2), ("bn_before_relu", 99.4), ("none", 99.0)):
            log_run(store, 3, seed, 9792, norm, "0.05", acc + seed / 100, acc)
    rep = report.build(*report.load_runs(store, "ablate"), baseline="norm=none")
    assert set(rep.deltas["from"]) == {"norm=none"} and set(rep.deltas["vs"]) == {"baseline"}
    d = rep.deltas.set_index("to")
    assert d.loc["norm=bn_before_relu", "best_test_acc_delta"] == pytest.approx(0.4)
    with pytest.raises(report.ReportError, match="choose one of"):
        report.build(*report.load_runs(store, "ablate"), baseline="norm=layer")


def test_problems_are_counted_and_said(store):
    log_run(store, 1, 0, 100, "none", "0.0", 99.0, 99.0)
    log_run(store, 1, 1, 100, "none", "0.0", 99.2, 99.1)
    log_run(store, 2, 0, 120, "none", "0.0", 99.1, 99.1)
    log_run(store, 2, 1, 130, "none", "0.0", 99.3, 99.2)  # mixed param counts
    log_run(store, 3, 0, 100, "none", "0.0", 99.5, 99.5, status="FAILED")
    log_run(store, 3, 1, 100, "none", "0.0", 99.5, 99.5, status="RUNNING")
    log_run(store, 4, 0, 100, "none", "0.0", None, None)  # no metrics
    rep = report.build(*report.load_runs(store, "ablate"))
    text = "\n".join(rep.notes)
    assert "left out FAILED run" in text and "left out RUNNING run" in text
    assert "has no final_test_acc" in text and "disagree on param_count" in text  # the objective's column
    assert list(rep.summary["config"]) == ["step=1", "step=2"]


def test_a_single_seed_has_no_ci_and_the_table_says_so(store):
    log_run(store, 1, 0, 100, "none", "0.0", 99.0, 99.0)
    log_run(store, 2, 0, 100, "none", "0.0", 99.2, 99.0)
    rep = report.build(*report.load_runs(store, "ablate"))
    assert math.isnan(rep.summary.iloc[0]["best_test_acc_ci_lo"])
    assert "n<2" in report.markdown(rep) and "a single seed" in report.markdown(rep)


def test_nothing_to_report_is_an_error_with_a_reason(store, tmp_path):
    with pytest.raises(report.ReportError, match="No experiment 'nope'"):
        report.load_runs(store, "nope")
    log_run(store, 1, 0, 100, "none", "0.0", 99.0, 99.0, status="FAILED")
    with pytest.raises(report.ReportError, match="No finished runs"):
        report.load_runs(store, "ablate")
    with pytest.raises(report.ReportError, match="No runs in sweep"):
        report.load_runs(store, "ablate", sweep_id="abc")
    assert report.main(["--tracking-uri", store, "--experiment", "nope", "--out", str(tmp_path)]) == 2


def test_the_report_and_the_ui_refuse_a_store_that_is_not_there_and_create_none(tmp_path, capsys):
    from ablate import ui
    missing = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert report.main(["--tracking-uri", missing, "--out", str(tmp_path / "r")]) == 2
    assert ui.main(["--tracking-uri", missing, "--no-serve"]) == 2
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and all(f"no MLflow store at {missing}" in line for line in said), said
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_writes_every_output(study, tmp_path, capsys):
    assert report.main(["--tracking-uri", study, "--out", str(tmp_path / "r")]) == 0
    for name in ("summary.csv", "deltas.csv", "runs.csv", "report.md", "report.html", "report.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| step=3 |" in md and "norm: none→bn_before_relu" in md
    assert pd.read_csv(tmp_path / "r" / "summary.csv")["n"].tolist() == [3, 3, 3]
    assert "step=2" in capsys.readouterr().out


def test_changed_keeps_shared_details_and_drops_option_specific_ones():
    a = {"model": "base", "model.dropout": "0.0", "scheduler": "none", "seed": "0"}
    b = {"model": "narrow", "model.dropout": "0.05", "scheduler": "onecycle",
         "scheduler.pct_start": "0.3", "seed": "1"}
    assert report.changed(a, b) == ("model: base→narrow; model.dropout: 0.0→0.05; "
                                    "scheduler: none→onecycle")
    sgd = {"optimizer": "sgd", "optimizer._target_": "torch.optim.SGD", "optimizer.weight_decay": "0.0"}
    adam = {"optimizer": "adam", "optimizer._target_": "torch.optim.Adam", "optimizer.weight_decay": "0.01"}
    assert report.changed(sgd, adam) == "optimizer: sgd→adam; optimizer.weight_decay: 0.0→0.01"  # the class: implied


def test_equal_deltas_on_every_seed_are_no_spread_with_an_exact_sign_flip_p_without_warnings():
    """Issue 21 item 8: the same Δ on every seed is not certainty. A t-test read
    [99.45, 99.45, 99.46] -> [99.47, 99.47, 99.48] (float noise 1e-14) as p 5.6e-26."""
    import warnings

    import pandas as pd

    from ablate.report import compare
    a = pd.DataFrame({"seed": [0, 1, 2], "acc": [99.45, 99.45, 99.46]})
    b = pd.DataFrame({"seed": [0, 1, 2], "acc": [99.47, 99.47, 99.48]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's precision-loss warning would fail here
        out = compare(a, b, "acc")
    assert out["test"] == "sign-flip (no spread)" and not out["spread"]
    assert out["delta"] == pytest.approx(0.02)
    assert out["p"] == pytest.approx(0.25) and not out["clear"]  # 2 of the 8 sign patterns are as extreme
    assert math.isnan(out["ci_lo"]) and math.isnan(out["ci_hi"])  # no zero-width interval


def test_a_key_that_echoes_another_does_not_name_configurations():
    """A user model's `norm: ${norm.name}` argument varies exactly with `norm`: the
    labels say norm=..., once; a key that splits the runs differently stays."""
    df = pd.DataFrame({"norm": ["none", "none", "bn", "bn"], "model.norm": ["none", "none", "bn", "bn"],
                       "seed": [0, 1, 0, 1], "width": ["8", "16", "8", "16"]})
    assert report.label_keys(df, ["model.norm", "norm", "width"], None) == ["norm", "width"]


RMSE = Objective("rmse", "min", "final", (0.0, None), "RMSE", "")


def test_a_min_objective_calls_a_decrease_an_improvement_and_its_intervals_are_not_cut(store, tmp_path):
    """Regression runs scored by final test RMSE (lower is better, no upper bound): step 2
    lowers it clearly, step 3 raises it clearly. Nothing is cut to [0, 100] or ±100."""
    final = {1: [120.0, 131.0, 125.0], 2: [60.0, 70.5, 66.0], 3: [190.0, 199.0, 196.5]}
    for step, values in final.items():
        for seed, v in enumerate(values):
            log_run(store, step, seed, 100, "none", "0.0", v - 1.0, v, objective=RMSE)
    runs, notes = report.load_runs(store, "ablate")
    assert len(runs) == 9 and not notes  # none left out for lacking best_test_acc
    rep = report.build(runs, notes)
    assert rep.objective == RMSE
    s = rep.summary.set_index("config").loc["step=1"]
    ci = stats.t.interval(0.95, 2, loc=np.mean(final[1]), scale=stats.sem(final[1]))
    assert (s["final_test_rmse_ci_lo"], s["final_test_rmse_ci_hi"]) == pytest.approx(ci)  # above 100, uncut
    d = rep.deltas.set_index(["from", "to"])
    down, up = d.loc[("step=1", "step=2")], d.loc[("step=2", "step=3")]
    assert down["final_test_rmse_delta"] < 0 and down["final_test_rmse_clear"] and down["final_test_rmse_better"]
    assert up["final_test_rmse_delta"] > 0 and up["final_test_rmse_clear"] and not up["final_test_rmse_better"]
    ci = compatible(final[2], final[3], len(rep.deltas), list(rep.deltas["final_test_rmse_clear"]), sign=1)
    assert (up["final_test_rmse_ci_lo"], up["final_test_rmse_ci_hi"]) == pytest.approx(ci) and ci[1] > 100
    shown = report.delta_table(rep).set_index(["from", "to"])
    assert (shown["verdict"][("step=1", "step=2")], shown["verdict"][("step=2", "step=3")]) == ("improves", "worsens")
    assert shown["sign-flip p"][("step=1", "step=2")] == "0.250"  # beside the t-test's, as the footnote says
    md = report.markdown(rep)
    assert md.startswith("Objective: final test RMSE, lower is better. A negative Δ is an improvement.")
    assert "final test RMSE (mean ± std)" in md and "accuracy" not in md and " pp" not in md
    paths = report.write(rep, tmp_path / "r")
    assert "lower is better" in paths["html"].read_text() and paths["png"].stat().st_size > 0


def test_the_report_says_once_which_split_made_the_choices(study):
    """Issue 29: with no validation split every report says, once, that the test set made
    the choices (so the numbers are optimistic); with one, that validation did."""
    import dataclasses
    runs, notes = report.load_runs(study, "ablate")
    md = report.markdown(report.build(runs, notes))
    assert md.count("No validation split: every choice") == 1 and "made on the validation split" not in md
    on_val = dataclasses.replace(Objective.from_runs(runs), chosen_on="val")
    md = report.markdown(report.build(runs, notes, objective=on_val))
    assert md.count("was made on the validation split (data.val)") == 1 and "No validation split" not in md
