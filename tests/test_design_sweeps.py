"""Design sweeps end to end: `python -m ablate -m ablation=...` through the ablation
sweeper and each launcher, skip-finished, tags, the design's report, bad designs."""
import json

import mlflow
import pandas as pd
import pytest

from conftest import run_cli

FAST = ["train.epochs=1", "progress=false", "data.download=false"]
LOO_FACTORS = ["batchnorm", "dropout", "rotation", "onecycle", "gap_head", "batch_64"]


def runs_in(cwd, experiment="ablate"):
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment])


@pytest.mark.slow
def test_the_leave_one_out_preset_runs_every_arm_once_and_a_rerun_trains_nothing(tmp_path, tiny_data):
    args = ["-m", "hydra/launcher=parallel", "ablation=step7_loo", "seed=0,1", f"data.root={tiny_data}", *FAST]
    out = run_cli(args, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs_in(tmp_path)
    parent = df[df["tags.mlflow.parentRunId"].isna()].iloc[0]
    children = df[df["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert len(children) == (1 + 6) * 2 and set(children["status"]) == {"FINISHED"}
    assert set(children["tags.ablate.design"]) == {"step7_loo"}
    assert sorted(children["tags.ablate.arm"]) == sorted(["baseline", *LOO_FACTORS] * 2)
    assert sorted(children["tags.mlflow.runName"])[:2] == ["arm=baseline,seed=0", "arm=baseline,seed=1"]
    assert parent["tags.ablate.design.kind"] == "leave_one_out"
    # each arm changes what its factor says, and only that
    by_arm = children[children["params.seed"] == "0"].set_index("tags.ablate.arm")
    assert by_arm.loc["batchnorm", "params.norm"] == "none"
    assert by_arm.loc["baseline", "params.norm"] == "bn_before_relu"
    assert by_arm.loc["batch_64", "params.train.batch_size"] == "128"
    assert by_arm.loc["gap_head", "params.model.blocks"].endswith("|conv4")
    # the design's report: one contribution per factor
    report = next(tmp_path.glob("multirun/*/*/report"))
    effects = (report / "effects.csv").read_text()
    assert all(f in effects for f in LOO_FACTORS) and (report / "report.png").stat().st_size > 10_000
    assert "Clear (final test accuracy" in (report / "report.md").read_text()
    md = (report / "report.md").read_text()
    assert "Decision rule: Holm's step-down over 6 comparisons" in md and "simultaneous at 95%" in md

    again = run_cli(args, cwd=tmp_path, timeout=900)
    assert again.returncode == 0 and "Skipping 14 of 14 jobs" in again.stdout + again.stderr
    assert len(runs_in(tmp_path).query("`tags.mlflow.parentRunId`.notna()")) == 14  # nothing trained twice


@pytest.mark.slow
def test_an_ad_hoc_factorial_through_submitit_tags_every_level(tmp_path, tiny_data):
    """The README's ad-hoc form: no file, the design on the command line."""
    out = run_cli(["-m", "hydra/launcher=submitit_local", "hydra/sweeper=ablation", "hydra.sweeper.design=factorial",
                   "hydra.sweeper.name=adhoc", 'hydra.sweeper.baseline="step=5 norm=none"',
                   'hydra.sweeper.factors={bn:"norm=bn_before_relu",rot:"augmentation=rotate"}',
                   f"data.root={tiny_data}", *FAST], cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs_in(tmp_path)
    jobs = df[df["tags.mlflow.parentRunId"].notna()].set_index("tags.ablate.arm")
    assert sorted(jobs.index) == ["baseline", "bn", "bn+rot", "rot"]
    assert (jobs.loc["bn+rot", "tags.ablate.level.bn"], jobs.loc["bn+rot", "tags.ablate.level.rot"]) == ("on", "on")
    assert (jobs.loc["rot", "tags.ablate.level.bn"], jobs.loc["rot", "params.augmentation"]) == ("off", "rotate")
    spec_run = df[df["tags.mlflow.parentRunId"].isna()].iloc[0]
    spec = json.loads(mlflow.artifacts.load_text(f"{spec_run['artifact_uri']}/design.json"))
    assert spec["kind"] == "factorial" and sorted(spec["fingerprints"].values()) == sorted(jobs.index)
    # the factorial's Shapley values add up to all on - all off, and the report shows them
    report = next(tmp_path.glob("multirun/*/*/report"))
    shapley = pd.read_csv(report / "shapley.csv")
    acc = jobs["metrics.final_test_acc"]
    assert shapley["shapley"].sum() == pytest.approx(acc["bn+rot"] - acc["baseline"])
    assert "## Shapley values" in (report / "report.md").read_text() and (report / "report.tex").exists()


@pytest.mark.slow
def test_a_diverging_arm_is_reported_as_failed_and_the_rest_still_count(tmp_path, tiny_data):
    out = run_cli(["-m", "hydra/sweeper=ablation", "hydra.sweeper.design=add_one_in", "hydra.sweeper.name=boom",
                   'hydra.sweeper.factors={bn:"norm=bn_before_relu",huge_lr:"train.lr=1e9"}', "seed=0,1",
                   f"data.root={tiny_data}", *FAST], cwd=tmp_path, timeout=600)
    assert out.returncode != 0  # the sweep says it had failures
    assert "2 of 6 jobs did not finish" in out.stdout + out.stderr
    report = next(tmp_path.glob("multirun/*/*/report"))
    md = (report / "report.md").read_text()
    assert "arm huge_lr: 2 of 2 seed(s) failed" in md and "diverged" in md
    effects = {line.split(",")[0] for line in (report / "effects.csv").read_text().splitlines()[1:]}
    assert effects == {"bn", "huge_lr"}


@pytest.mark.parametrize("args, needle", [
    (["ablation=step7_loo", "hydra.sweeper.order=[batchnorm,typo]"], "unknown factor(s) typo"),
    (["hydra/sweeper=ablation", 'hydra.sweeper.baseline="step=7"',
      'hydra.sweeper.factors={noop:"norm=bn_before_relu"}'],
     "factor 'noop' (norm=bn_before_relu) does not change the config of baseline"),
    (["hydra/sweeper=ablation", 'hydra.sweeper.factors={bad:"norm=sideways"}'],
     "arm 'bad' (norm=sideways) does not compose"),
    (["ablation=step7_loo", "norm=none"], "factor 'batchnorm' changes"),
])
def test_a_bad_design_stops_before_any_job_in_one_line(tmp_path, tiny_data, args, needle):
    out = run_cli(["-m", *args, f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, lines
    assert needle in lines[0] and "No job was started" in lines[0], lines[0]
    assert not (tmp_path / "mlflow.db").exists()
