"""examples/regression: scikit-learn's diabetes set, an MLP of the example's own and its
add-one-in design, run through ablate from the example's folder as its README says,
shortened to a few epochs."""
import math
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
def mean_rmse(tmp_path_factory) -> float:
    """The test split's RMSE when every patient is predicted the training split's mean
    target: the bar any trained model must clear (77.2 on this split)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from regression_study.data import Diabetes
    finally:
        sys.path.remove(str(EXAMPLE))
    train, test = Diabetes("train"), Diabetes("test")
    return float(np.sqrt(np.mean((np.array(test.y) - np.mean(train.y)) ** 2)))


def cli(tmp_path, *args):
    out = run_cli(["--config-dir", "conf", *args, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                   f"hydra.run.dir={tmp_path / 'outputs'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                   "progress=false"], cwd=EXAMPLE, env={"PYTHONPATH": str(EXAMPLE)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_the_diabetes_mlp_is_scored_by_test_rmse_and_beats_predicting_the_mean(tmp_path, mean_rmse):
    cli(tmp_path, "experiment=diabetes", "train.epochs=10")
    df = runs_in(tmp_path / "mlflow.db")
    assert len(df) == 1 and set(df["status"]) == {"FINISHED"}
    run = df.iloc[0]
    assert (run["tags.ablate.objective.metric"], run["tags.ablate.objective.goal"]) == ("rmse", "min")
    assert (run["params.task"], run["params.data.features"], run["params.data.targets"]) == ("regression", "10", "1")
    rmse = run["metrics.final_test_rmse"]
    assert math.isfinite(rmse) and rmse < 0.9 * mean_rmse, (rmse, mean_rmse)  # learnt: an untrained MLP is ~157


@pytest.mark.slow
def test_the_add_one_in_design_runs_every_arm_and_writes_its_report(tmp_path, mean_rmse):
    out = cli(tmp_path, "-m", "ablation=diabetes_aoi", "seed=0,1", "train.epochs=10")
    df = runs_in(tmp_path / "mlflow.db")
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"}
    assert set(df["tags.ablate.arm"]) == {"baseline", "raw_features", "huber", "one_layer"}
    assert set(df["tags.ablate.objective.metric"]) == {"rmse"} and set(df["tags.ablate.objective.goal"]) == {"min"}
    huber = df[df["tags.ablate.arm"] == "huber"]
    assert set(huber["params.task.loss._target_"]) == {"torch.nn.HuberLoss"}
    assert set(df[df["tags.ablate.arm"] == "baseline"]["params.task.loss._target_"]) == {"torch.nn.MSELoss"}
    rmse = df["metrics.final_test_rmse"]
    assert np.isfinite(rmse).all() and (df[df["tags.ablate.arm"] == "baseline"]["metrics.final_test_rmse"]
                                        < 0.9 * mean_rmse).all(), rmse
    report = (tmp_path / "multirun" / "report" / "report.md").read_text()
    assert "RMSE, lower is better" in report and "one_layer" in report
    assert "Objective: final test RMSE" in out.stdout
