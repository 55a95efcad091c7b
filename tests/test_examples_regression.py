"""examples/regression: scikit-learn's diabetes set, an MLP of the example's own and its
add-one-in design, run through ablate from the example's folder as its README says,
shortened to a few epochs."""
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "regression"


def runs_in(db: Path):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    return df[df["params.seed"].notna()] if "params.seed" in df else df


@pytest.fixture(scope="module")
def mean_rmse() -> float:
    """The test split's RMSE when every patient is predicted the training split's mean
    target: the bar any trained model must clear (77.2 on this split)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from regression_study.data import Diabetes
    finally:
        sys.path.remove(str(EXAMPLE))
    train, test = Diabetes("train"), Diabetes("test")
    return float(np.sqrt(np.mean((np.array(test.y) - np.mean(train.y)) ** 2)))


def test_the_add_one_in_design_runs_every_arm_scored_by_test_rmse_and_writes_its_report(tmp_path, mean_rmse):
    """The README's command at 10 epochs and 2 seeds: 4 arms x 2 seeds."""
    out = run_cli(["--config-dir", "conf", "-m", "ablation=diabetes_aoi", "seed=0,1", "train.epochs=10",
                   f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                   "progress=false"], cwd=EXAMPLE, env={"PYTHONPATH": str(EXAMPLE)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs_in(tmp_path / "mlflow.db")
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"}
    arm = df["tags.ablate.arm"]
    assert sorted(arm) == sorted(["baseline", "raw_features", "huber", "one_layer"] * 2)
    assert set(df["tags.ablate.objective.metric"]) == {"rmse"} and set(df["tags.ablate.objective.goal"]) == {"min"}
    assert set(df["params.task"]) == {"regression"} and set(df["params.objective.metric"]) == {"rmse"}
    assert (set(df["params.data.features"]), set(df["params.data.targets"])) == ({"10"}, {"1"})
    assert set(df[arm == "huber"]["params.task.loss._target_"]) == {"torch.nn.HuberLoss"}
    assert set(df[arm != "huber"]["params.task.loss._target_"]) == {"torch.nn.MSELoss"}
    assert set(df[arm == "raw_features"]["params.data.standardize"]) == {"False"}
    assert np.isfinite(df["metrics.final_test_rmse"]).all()
    baseline = df[arm == "baseline"]["metrics.final_test_rmse"]
    assert (baseline < 0.9 * mean_rmse).all(), (list(baseline), mean_rmse)  # learnt: untrained, it is about 157
    report = tmp_path / "multirun" / "report" / "report.md"
    assert "Objective: final test RMSE, lower is better" in report.read_text()
    assert (tmp_path / "multirun" / "report" / "effects.csv").exists()
