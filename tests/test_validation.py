"""Choose on validation, report on test: a held-out validation split picks the best
epoch, steps the plateau scheduler, stops early and decides the designs; the test
split only reports."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

import ablate
from ablate import data, designs, engine, job, task
from ablate.adaptive import SeedPolicy, StoreRunner, greedy_path
from ablate.designs import Design
from ablate.errors import ConfigError
from ablate.metrics import Objective
from ablate.run import summary
from conftest import run_cli

FAST = ["train.batch_size=64", "progress=false", "data.download=false"]


def test_the_validation_split_is_one_fixed_stratified_draw_held_out_of_training(overrides):
    a = data.splits(data.checked(ablate.compose([*overrides, "data.val=64", "seed=0"])))
    b = data.splits(data.checked(ablate.compose([*overrides, "data.val=64", "seed=7"])))
    assert (len(a.train), len(a.val), len(a.test)) == (448, 64, 128)
    assert torch.equal(a.val.inputs, b.val.inputs) and a.val.drawn == b.val.drawn  # not the run's seed
    whole = data.splits(data.checked(ablate.compose(overrides)))
    rows = {bytes(x.numpy()) for x in whole.train.inputs}
    assert all(bytes(x.numpy()) in rows for x in a.val.inputs)  # out of the training split ...
    assert not {bytes(x.numpy()) for x in a.val.inputs} & {bytes(x.numpy()) for x in a.train.inputs}  # ... not in it
    share = torch.bincount(a.val.targets, minlength=10) / 64
    assert torch.allclose(share, torch.bincount(whole.train.targets, minlength=10) / 512, atol=1 / 64 + 1e-6)
    frac = data.splits(data.checked(ablate.compose([*overrides, "data.val=0.25"])))
    assert len(frac.val) == 128 and "stratified" in frac.val.drawn


def test_a_run_with_a_validation_split_chooses_its_best_epoch_on_it(overrides):
    """The issue's command on the tiny data: val_acc and test_acc every epoch; best_epoch
    is val_acc's argmax and best_test_acc is test_acc at that epoch."""
    cfg = ablate.compose([*overrides, "data.val=128", "train.epochs=4", "objective.select=best", "step=7"])
    result = ablate.train(cfg)
    h = result.history
    assert all({"val_acc", "val_loss", "test_acc", "test_loss"} <= set(e) for e in h) and len(h) == 4
    val = [e["val_acc"] for e in h]
    best = val.index(max(val))
    assert result.best_epoch == h[best]["epoch"]
    assert result.summary["best_test_acc"] == h[best]["test_acc"] == result.objective
    assert result.summary["best_val_acc"] == max(val)
    run = mlflow.MlflowClient(cfg.tracking.uri).get_run(result.run_id)
    assert run.data.tags["ablate.objective.chosen_on"] == "val"
    assert "stratified" in run.data.params["data.val_draw"]
    assert [m.step for m in mlflow.MlflowClient(cfg.tracking.uri).get_metric_history(result.run_id, "val_acc")] == \
        [1, 2, 3, 4]


def test_summary_picks_every_best_value_at_the_epoch_validation_chose():
    """Validation and test rank the epochs differently: best_* follow validation."""
    history = [{"epoch": 1, "val_acc": 80.0, "test_acc": 90.0, "val_loss": 0.5, "test_loss": 0.2},
               {"epoch": 2, "val_acc": 85.0, "test_acc": 84.0, "val_loss": 0.4, "test_loss": 0.6},
               {"epoch": 3, "val_acc": 82.0, "test_acc": 88.0, "val_loss": 0.45, "test_loss": 0.3}]
    o = Objective(select="best", chosen_on="val")
    out = summary(history, o, {"val_acc": "max", "test_acc": "max"})
    assert out["best_epoch"] == 2 and out["best_test_acc"] == 84.0 and out["best_val_acc"] == 85.0
    assert out["final_test_acc"] == 88.0
    without = summary([{k: v for k, v in e.items() if not k.startswith("val")} for e in history], Objective(),
                      {"test_acc": "max"})
    assert without["best_epoch"] == 1 and without["best_test_acc"] == 90.0  # chosen on test: optimistic
    # a user's loop that logs val_acc beside test_acc gets the same choice
    user = Objective(metric="test_acc", split="none", select="best")
    out = summary(history, user, {"test_acc": "max", "val_acc": "max"}, returned={"test_acc": 88.0})
    assert out["best_epoch"] == 2 and out["best_test_acc"] == 84.0 and out["final_test_acc"] == 88.0


def _scripted(monkeypatch, values: dict[str, list[float]]):
    """engine.evaluate replaced by a script: epoch e's `<prefix>_<key>` is values[...][e-1]."""
    calls = {"val": 0, "test": 0}

    def fake(model, split, the_task, batch_size, prefix="test"):
        i = calls[prefix]
        calls[prefix] += 1
        return {"loss": values[f"{prefix}_loss"][i], f"{prefix}_acc": values[f"{prefix}_acc"][i]}
    monkeypatch.setattr(engine, "evaluate", fake)


def _fit(cfg):
    data.checked(cfg)
    the_task = task.build(cfg)
    state = job._fresh_state(cfg, data.load(cfg, torch.device("cpu")), torch.device("cpu"))
    return engine.fit(cfg, data.load(cfg, torch.device("cpu")), state, the_task, progress=False)


def test_the_plateau_scheduler_steps_on_the_validation_loss(overrides, monkeypatch):
    """The validation loss never improves after epoch 1 while the test loss falls every
    epoch: with patience 0 the rate is cut after every epoch, which stepping on the test
    loss would never do."""
    n = 4
    _scripted(monkeypatch, {"val_loss": [1.0] * n, "val_acc": [50.0] * n,
                            "test_loss": [1.0 - 0.1 * e for e in range(n)], "test_acc": [50.0] * n})
    cfg = ablate.compose([*overrides, "data.val=64", f"train.epochs={n}", "scheduler=plateau",
                          "scheduler.patience=0", "scheduler.factor=0.5", "train.lr=0.08"])
    lrs = [h["lr"] for h in _fit(cfg).history]
    assert lrs == pytest.approx([0.08, 0.08, 0.04, 0.02])
    # without a validation split the same run steps on the falling test loss: never cut
    cfg = ablate.compose([*overrides, f"train.epochs={n}", "scheduler=plateau", "scheduler.patience=0",
                          "scheduler.factor=0.5", "train.lr=0.08"])
    _scripted(monkeypatch, {"test_loss": [1.0 - 0.1 * e for e in range(n)], "test_acc": [50.0] * n})
    assert [h["lr"] for h in _fit(cfg).history] == pytest.approx([0.08] * n)


def test_early_stopping_ends_patience_epochs_after_the_best(overrides, monkeypatch):
    val = [50.0, 60.0, 70.0, 69.0, 71.0, 70.5, 70.9, 70.0, 99.0, 99.0]
    n = len(val)
    _scripted(monkeypatch, {"val_loss": [1.0] * n, "val_acc": val, "test_loss": [1.0] * n, "test_acc": [40.0] * n})
    cfg = ablate.compose([*overrides, "data.val=64", f"train.epochs={n}", "train.early_stopping.patience=3"])
    state = _fit(cfg)
    assert state.best_epoch == 5 and state.stopped_epoch == 8 == state.epoch == len(state.history)
    # min_delta: 71 beats 70 by only 1, so with min_delta 1.5 the reference stays epoch 3
    _scripted(monkeypatch, {"val_loss": [1.0] * n, "val_acc": val, "test_loss": [1.0] * n, "test_acc": [40.0] * n})
    cfg = ablate.compose([*overrides, "data.val=64", f"train.epochs={n}", "train.early_stopping.patience=3",
                          "train.early_stopping.min_delta=1.5"])
    assert _fit(cfg).stopped_epoch == 6


@pytest.mark.slow
def test_early_stopping_killed_and_rerun_stops_at_the_same_epoch_with_the_same_values(tmp_path, tiny_data):
    args = [f"data.root={tiny_data}", *FAST, "train.epochs=25", "step=7", "data.val=128",
            "train.early_stopping.patience=2", "train.lr=0.05", "seed=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    assert run_cli(args, cwd=ref_dir).returncode == 0
    ref = _only_run(ref_dir)
    stopped = int(ref.data.metrics["stopped_epoch"])
    assert stopped < 25, "the reference never stopped early: the test needs a run that does"
    assert stopped == int(ref.data.metrics["best_epoch"]) + 2

    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # kill once epoch 2 is reported: the patience counter is in the checkpoint
        if line.startswith("epoch 2/25"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and "Resuming run" in again.stdout, again.stderr
    run = _only_run(tmp_path)
    assert run.data.metrics["stopped_epoch"] == stopped
    for key in ("best_epoch", "best_test_acc", "final_test_acc", "final_val_acc"):
        assert run.data.metrics[key] == ref.data.metrics[key], key
    steps = [m.step for m in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
             .get_metric_history(run.info.run_id, "val_acc")]
    assert steps == list(range(1, stopped + 1))  # every epoch once


def _only_run(folder):
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    return runs[0]


def test_the_greedy_path_decides_on_validation_and_not_on_test(tmp_path):
    """Stored runs whose validation ranks b first and test ranks a first: the path a
    validation split decides takes b; the same runs judged on test would take a."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ablate")
    val = {"baseline": 90.0, "a": 91.0, "b": 93.0, "a+b": 94.0}
    test = {"baseline": 90.0, "a": 93.0, "b": 91.0, "a+b": 94.0}
    rng = np.random.default_rng(0)
    for arm in val:
        for seed in range(3):
            run = client.create_run(exp, tags={"ablate.fingerprint": f"{arm}/{seed}"})
            noise = float(rng.normal(0, 0.05))
            client.log_metric(run.info.run_id, "final_val_acc", val[arm] + noise)
            client.log_metric(run.info.run_id, "final_test_acc", test[arm] + noise)
            client.set_terminated(run.info.run_id)
    design = Design("g", "greedy_path", ["step=1"], {"a": ["model=deep"], "b": ["norm=bn_before_relu"]})

    def launch(jobs):
        raise AssertionError(f"every job is stored; launched {jobs}")

    def path(objective):
        metric = SeedPolicy().for_objective(objective).metric
        runner = StoreRunner(lambda arm, seed: ([], f"{'+'.join(sorted(arm.applied)) or 'baseline'}/{seed}"), launch,
                             uri, "ablate", metric)
        return metric, greedy_path(design, 3, runner, objective=objective).path

    assert path(Objective(chosen_on="val")) == ("final_val_acc", ("b", "a"))
    assert path(Objective()) == ("final_test_acc", ("a", "b"))
    assert designs.SeedPolicy is SeedPolicy


@pytest.mark.parametrize("bad, says", [
    (["data.val=0"], "data.val=0 is invalid"),
    (["data.val=1.0"], "data.val=1.0 is invalid"),
    (["data.val=512"], "holds out 512 of the 512 training items"),
    (["data.val=100", "data.train_subset=500"], "has only 412 images once data.val=100 is held out"),
    (["train.early_stopping.patience=2"], "needs a validation split"),
    (["data.val=0.1", "train.early_stopping.patience=0"], "train.early_stopping.patience=0 is invalid"),
])
def test_bad_validation_input_is_one_line_before_any_run(overrides, bad, says, tmp_path):
    with pytest.raises(ConfigError, match=says):
        job.check_job(ablate.compose([*overrides, *bad]))


@pytest.mark.slow
def test_bad_validation_input_from_the_command_line_exits_2_and_makes_no_run(tmp_path, tiny_data):
    for bad in (["data.val=0"], ["data.val=1.0"], ["data.val=9999"], ["train.early_stopping.patience=2"]):
        out = run_cli([f"data.root={tiny_data}", *FAST, *bad], cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    if (tmp_path / "mlflow.db").exists():
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_users_loop_that_logs_validation_chooses_on_it(tmp_path):
    """objective.select=best on test_acc, with val_acc logged beside: the epoch is
    val_acc's best and best_test_acc is test_acc there, as in ablate's own engine."""
    from test_own_loop import cfg_for

    from ablate import study

    def fit(cfg, run):
        for epoch, (v, t) in enumerate([(80.0, 90.0), (85.0, 84.0), (82.0, 88.0)], 1):
            run.log(epoch, {"val_acc": v, "test_acc": t})
        return {"test_acc": 88.0}
    assert study.run(fit, cfg_for(tmp_path, metric="test_acc", goal="max", select="best")) == 84.0
    m = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["1"])[0].data.metrics
    assert (m["best_epoch"], m["best_test_acc"], m["best_val_acc"], m["final_test_acc"]) == (2, 84.0, 85.0, 88.0)


def test_a_data_option_may_give_its_own_validation_node(tmp_path, monkeypatch):
    """`data.val` as a node with `_target_`, beside train and test: built as it says (not
    held out of train), checked like them, and its metrics logged per epoch."""
    tabular = Path(__file__).resolve().parent.parent / "examples" / "tabular"
    monkeypatch.syspath_prepend(str(tabular))
    from tabular_study.data import SklearnSplit
    node = "data.val={_target_:tabular_study.data.SklearnSplit,name:breast_cancer,split:test,test_fraction:0.1}"
    cfg = ablate.compose(["experiment=breast_cancer", node, "train.epochs=2", "progress=false",
                          f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"], config_dir=tabular / "conf")
    s = data.splits(data.checked(cfg))
    assert (len(s.train), len(s.val), len(s.test)) == (427, len(SklearnSplit("breast_cancer", "test", 0.1)), 142)
    result = ablate.train(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    assert [m.step for m in client.get_metric_history(result.run_id, "val_acc")] == [1, 2]
    assert client.get_run(result.run_id).data.tags["ablate.objective.chosen_on"] == "val"
    with pytest.raises(ablate.ConfigError, match=r"data\.val is a node without _target_"):
        data.checked(ablate.compose(["experiment=breast_cancer", "data.val={name:x}"], config_dir=tabular / "conf"))
