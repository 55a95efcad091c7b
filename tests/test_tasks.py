"""Any task: regression and sequence data through the one engine, a metric's direction
deciding the best epoch, data that does not fit the task refused in one line, and the
tabular and digits (macro-F1, label smoothing) examples as designs."""
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import ablate
from ablate.errors import ConfigError
from ablate.job import check_job
from conftest import REPO, run_cli


class Linear(Dataset):
    """y = x @ w + noise, 8 features in very different scales (standardisation matters)."""

    def __init__(self, split: str, n: int = 256, outputs: int = 1):
        rng = np.random.default_rng(0 if split == "train" else 1)
        scale = np.array([1, 10, 100, 1000, 1, 1, 1, 1], dtype=float)
        x = rng.normal(size=(n, 8)) * scale
        w = np.random.default_rng(9).normal(size=(8, outputs)) / scale[:, None]
        y = x @ w * 50 + 100 + rng.normal(size=(n, outputs))
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], (float(self.y[i, 0]) if self.y.shape[1] == 1 else self.y[i])


class Tokens(Dataset):
    """A repeating pattern 0 1 2 ... 6 as (x, y) windows, y = x shifted by one."""

    def __init__(self, split: str, seq_len: int = 12):
        text = torch.arange(700) % 7
        start = 0 if split == "train" else 560
        stop = 560 if split == "train" else 700
        self.windows = [text[i:i + seq_len + 1] for i in range(start, stop - seq_len - 1, 3)]

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        w = self.windows[i]
        return w[:-1].long(), w[1:].long()


def mlp(features: int, outputs: int, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


def mlp_flat(features: int, hidden: int = 32) -> nn.Module:
    """One value per sample as [B]: `nn.Linear(h, 1)` then `.squeeze(-1)`, the common way."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Flatten(0))


class TinyLM(nn.Module):
    def __init__(self, vocab_size: int, width: int = 16):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab_size, width), nn.Linear(width, vocab_size)

    def forward(self, x):  # [N, T] -> [N, T, vocab]
        return self.head(torch.relu(self.embed(x)))


@pytest.fixture
def conf(tmp_path) -> Path:
    """A user's conf/: data options with split nodes, and two `_target_` models."""
    root = tmp_path / "conf"
    for name, cls in (("linear", "Linear"), ("tokens", "Tokens")):
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{name}.yaml").write_text("".join(
            f"{s}:\n  _target_: test_tasks.{cls}\n  split: {s}\n" for s in ("train", "test")))
    (root / "model").mkdir()
    (root / "model" / "mlp.yaml").write_text("_target_: test_tasks.mlp\nfeatures: ${data.features}\n"
                                             "outputs: ${data.targets}\n")
    (root / "model" / "mlp_flat.yaml").write_text("_target_: test_tasks.mlp_flat\nfeatures: ${data.features}\n")
    (root / "model" / "lm.yaml").write_text("_target_: test_tasks.TinyLM\nvocab_size: ${data.vocab_size}\n")
    return root


def regression(store, *extra) -> list[str]:
    return ["task=regression", "data=linear", "model=mlp", "optimizer=adam", "train.lr=0.01",
            "train.batch_size=32", "train.epochs=4", f"tracking.uri={store}", "progress=false", *extra]


def test_a_regression_model_may_give_one_value_per_sample_as_b_or_b_1(store, conf):
    """[B] and [B, 1] both fit a scalar target, matched to its shape, never broadcast
    (an MSE of [B] against [B, 1] would average over B x B pairs)."""
    flat = ablate.train(ablate.compose([*regression(store), "model=mlp_flat"], config_dir=conf))
    column = ablate.train(ablate.compose(regression(store), config_dir=conf))
    assert flat.history[-1]["test_rmse"] < flat.history[0]["test_rmse"]  # it learns, as the [B, 1] model does
    from ablate.task import Task
    task = Task("regression", torch.nn.functional.mse_loss, {}, None)
    out, y = task.flat(torch.zeros(4), torch.ones(4, 1))
    assert out.shape == y.shape == (4, 1) and task.loss_fn(*task.flat(torch.zeros(4), torch.ones(4, 1))).item() == 1.0
    assert column.run_id != flat.run_id


def test_a_min_objective_picks_the_lowest_epoch_as_best(store, conf):
    result = ablate.train(ablate.compose(regression(store), config_dir=conf))
    rmse = [h["test_rmse"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmin(rmse)) and result.summary["best_test_rmse"] == min(rmse)
    assert result.summary["final_test_rmse"] == rmse[-1] == result.objective  # select: final
    assert rmse[-1] < rmse[0]  # it learns
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    tags, params = run.data.tags, run.data.params
    assert (tags["ablate.objective.metric"], tags["ablate.objective.goal"]) == ("rmse", "min")
    assert tags["ablate.objective.bounds"] == "0.0," and params["objective.metric"] == "rmse"
    assert params["data.features"] == "8" and params["data.targets"] == "1" and params["task.loss._target_"]
    best = ablate.train(ablate.compose(regression(store, "objective.select=best"), config_dir=conf))
    assert best.objective == min(h["test_rmse"] for h in best.history)


def test_a_vector_target_and_huber_loss(store, conf):
    result = ablate.train(ablate.compose(regression(
        store, "task.loss._target_=torch.nn.HuberLoss", "+task.loss.delta=5.0", "objective.metric=mae",
        "train.epochs=2", "+data.train.outputs=3", "+data.test.outputs=3"), config_dir=conf))
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    assert run.data.params["data.targets"] == "3" and run.data.tags["ablate.objective.metric"] == "mae"
    assert np.isfinite(result.objective)


def test_a_sequence_task_learns_a_pattern_in_bits_per_token(store, conf):
    result = ablate.train(ablate.compose([
        "task=sequence", "data=tokens", "model=lm", "optimizer=adam", "train.lr=0.05", "train.epochs=3",
        "train.batch_size=16", f"tracking.uri={store}", "progress=false"], config_dir=conf))
    bpc = [h["test_bpc"] for h in result.history]
    assert bpc[0] < np.log2(7) + 0.5 and bpc[-1] < 0.5  # the pattern is deterministic: near 0 bits
    assert result.history[-1]["test_acc"] > 90 and result.objective == bpc[-1]


@pytest.mark.parametrize("extra,needle", [
    (["task=classification"], "task=classification needs class targets, but data=linear gives float targets. "
                              "Choose `task=regression`"),
    (["augmentation=rotate"], "augmentation=rotate (rotate) transforms images, and data=linear gives features"),
    (["+data.mean=0.5"], "data.mean applies to images"),
    (["objective.metric=acc"], "objective.metric='acc' is not one of task=regression's metrics (rmse, mae, r2)"),
    (["+task.metrics.f1={}"], "task.metrics.f1: macro F1 is a metric of classification tasks, not of "
                              "task=regression"),
    (["+task.metrics.mse={_target_: torchmetrics.regression.MeanSquaredError, goal: max}"],
     "task.metrics.mse.goal=max: mse is better when lower"),
    (["+task.metrics.r={_target_: torchmetrics.regression.PearsonCorrCoef}"],
     "task.metrics.r: torchmetrics.regression.PearsonCorrCoef does not say which way is better"),
    (["+model.hidden_sizes=[4]"], "model=mlp: cannot build test_tasks.mlp: "),
    (["data.vocab_size=50"], "data.vocab_size=50 does not apply: data=linear gives features inputs and float targets"),
    (["data.num_classes=3"], "data.num_classes=3 does not apply"),
    (["task.ignore_index=0"], "task.ignore_index=0 does not apply to task=regression"),
    (["norm=bn_before_relu"], "norm=bn_before_relu changes nothing: model=mlp does not read it"),
    (["+task.metrics.acc2={_target_: torchmetrics.classification.MulticlassAccuracy, num_classes: 3}"],
     "task.metrics.acc2 (MulticlassAccuracy) does not take task=regression's outputs (2, 1)"),
    (["task.loss._target_=torch.nn.NLLLoss"], "task.loss (torch.nn.NLLLoss) does not take task=regression's outputs"),
])
def test_data_that_does_not_fit_the_task_is_one_line(store, conf, extra, needle):
    with pytest.raises(ConfigError) as err:
        check_job(ablate.compose(regression(store, *extra), config_dir=conf))
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_torchmetrics_class_is_unbounded_unless_told():
    """MatthewsCorrCoef's plot hint says 0..1; MCC reaches -1. Only declared bounds cut."""
    from ablate import metrics
    node = {"_target_": "torchmetrics.classification.MulticlassMatthewsCorrCoef", "num_classes": 3}
    assert metrics.build("mcc", node, "classification", 3, None, None).bounds == (None, None)
    told = metrics.build("mcc", {**node, "bounds": [-1, 1]}, "classification", 3, None, None)
    assert told.bounds == (-1.0, 1.0) and told.goal == "max"


def test_a_block_list_model_on_features_says_to_name_a_model(store, conf):
    cfg = ablate.compose(["task=regression", "data=linear", f"tracking.uri={store}"], config_dir=conf)
    with pytest.raises(ConfigError, match="block list of conv layers, which takes images"):
        check_job(cfg)


def runs(db: Path):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    return df[df["params.seed"].notna()]


@pytest.mark.slow
def test_the_tabular_example_runs_its_leave_one_out_design(tmp_path):
    db = tmp_path / "mlflow.db"
    out = run_cli(["--config-dir", "conf", "-m", "ablation=mlp_loo", "seed=0,1", "train.epochs=3",
                   f"tracking.uri=sqlite:///{db}", f"hydra.sweep.dir={tmp_path / 'multirun'}", "progress=false"],
                  cwd=REPO / "examples" / "tabular", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs(db)
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"}
    assert set(df["params.data.features"]) == {"30"} and set(df["params.data.num_classes"]) == {"2"}
    assert set(df["tags.ablate.arm"]) == {"baseline", "standardize", "batchnorm", "dropout"}
    assert (df["metrics.final_test_f1"] > 50).all()  # macro F1 logged beside the objective
    assert set(df["tags.ablate.objective.chosen_on"]) == {"val"} and df["metrics.final_val_acc"].notna().all()
    text = (tmp_path / "multirun" / "report" / "report.md").read_text()
    assert "best test accuracy (%), higher is better" in text


@pytest.mark.slow
def test_the_digits_example_ablates_label_smoothing_by_macro_f1(tmp_path):
    db = tmp_path / "mlflow.db"
    out = run_cli(["--config-dir", "conf", "-m", "ablation=smoothing", "seed=0,1", "train.epochs=2",
                   f"tracking.uri=sqlite:///{db}", f"hydra.sweep.dir={tmp_path / 'multirun'}", "progress=false"],
                  cwd=REPO / "examples" / "digits", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs(db)
    assert len(df) == 6 and set(df["tags.ablate.objective.metric"]) == {"f1"}
    smoothing = df.groupby("tags.ablate.arm")["params.task.loss.label_smoothing"].first()
    assert (smoothing["baseline"], smoothing["label_smoothing"]) == ("0.1", "0.0")
    text = (tmp_path / "multirun" / "report" / "report.md").read_text()
    assert "final test macro F1 (%), higher is better" in text
