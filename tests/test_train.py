"""One job end to end through the Python API, on the tiny IDX data set."""
import dataclasses

import mlflow
import pytest
import torch
from torch import nn

import ablate
from ablate import data, engine, optim, task
from ablate.errors import ConfigError, DataError
from ablate.kernels import ConvBlock
from ablate.model import build_model


def test_a_job_trains_and_logs_everything(overrides, store):
    result = ablate.train(ablate.compose([*overrides, "step=7", "train.epochs=2"]))
    assert result.param_count == 6376 and not result.skipped
    assert 0 <= result.objective <= 100 and result.best_epoch in (1, 2)
    assert result.objective == result.summary["final_test_acc"]  # the default objective: final test accuracy
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    p, m = run.data.params, run.data.metrics
    assert p["norm"] == "bn_before_relu" and p["seed"] == "0" and p["step"] == "7"
    assert p["param_count"] == "6376" and m["param_count"] == 6376
    assert m["best_test_acc"] == result.summary["best_test_acc"] and m["final_test_acc"] == result.objective
    assert run.data.tags["ablate.objective.metric"] == "acc" and run.data.tags["ablate.objective.goal"] == "max"
    history = mlflow.MlflowClient(store).get_metric_history(result.run_id, "test_acc")
    assert sorted(h.step for h in history) == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "lr", "epoch_seconds"):
        assert len(mlflow.MlflowClient(store).get_metric_history(result.run_id, key)) == 2
    assert run.data.tags["ablate.fingerprint"]
    assert "config.yaml" in [a.path for a in mlflow.MlflowClient(store).list_artifacts(result.run_id)]


def test_search_runs_reads_the_records_back(overrides, store):
    ablate.train(ablate.compose([*overrides, "seed=3"]))
    mlflow.set_tracking_uri(store)
    df = mlflow.search_runs(experiment_names=["ablate"], filter_string="params.seed = '3'")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["params.norm"] == "none" and row["metrics.param_count"] == 10368


def test_the_same_seed_gives_identical_metrics(overrides, store):
    a = ablate.train(ablate.compose([*overrides, "step=6", "force=true"]))
    b = ablate.train(ablate.compose([*overrides, "step=6", "force=true"]))
    assert a.run_id != b.run_id
    def results(r):  # everything but the wall-clock time
        return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in r.history]
    assert results(a) == results(b)
    c = ablate.train(ablate.compose([*overrides, "step=6", "seed=1"]))
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_a_finished_config_is_skipped_and_force_reruns_it(overrides, store):
    first = ablate.train(ablate.compose(overrides))
    again = ablate.train(ablate.compose(overrides))
    assert again.skipped and again.run_id == first.run_id and again.objective == first.objective
    forced = ablate.train(ablate.compose([*overrides, "force=true"]))
    assert not forced.skipped and forced.run_id != first.run_id
    changed = ablate.train(ablate.compose([*overrides, "train.lr=0.02"]))
    assert not changed.skipped and changed.run_id not in (first.run_id, forced.run_id)


def test_bad_input_creates_no_run(overrides, store, tiny_data):
    for bad in (["train.lr=-1"], ["data.train_subset=100000"], [f"data.root={tiny_data}/nowhere"]):
        with pytest.raises((ConfigError, DataError)):
            ablate.train(ablate.compose(overrides + bad))
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("ablate")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_missing_data_names_the_root_and_the_fix(overrides, tmp_path):
    with pytest.raises(DataError) as err:
        ablate.train(ablate.compose([*overrides, f"data.root={tmp_path}"]))
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "ABLATE_DATA_DIR" in message


@pytest.mark.parametrize("layout", ["channels_last", "contiguous_format"])
def test_the_fast_engine_trains_like_plain_torch_layers(overrides, layout):
    """Where the maths is the same, the speed tricks change nothing. Two epochs of step 7
    on the tiny data through engine.fit, as built (fused conv blocks, fused SGD) and as
    plain torch (each block an nn.Sequential of its layers; the for-loop SGD), from the
    same seed. In float64: float32's rounding
    differences (1e-7) grow about 3x a step at OneCycle's peak rate on this tiny model,
    so float32 runs drift apart by 1e-3 within 16 steps whatever the maths. Dropout
    draws its positions in memory order, so both runs share a layout."""
    cfg = ablate.compose([*overrides, "step=7", "train.epochs=2"])
    tensors = data.load(data.checked(cfg), torch.device("cpu"))
    tensors = dataclasses.replace(tensors, train=data.Tensors(tensors.train.x.double(), tensors.train.y),
                                  test=data.Tensors(tensors.test.x.double(), tensors.test.y))
    histories = []
    for fast in (True, False):
        engine.seed_everything(0)
        model = build_model(cfg).double().to(memory_format=getattr(torch, layout))
        if not fast:
            for m in model.modules():
                if isinstance(m, ConvBlock):
                    m.__class__ = nn.Sequential
        state = engine.State(model, *optim.build(cfg, model.parameters(), len(tensors.train) // 64))
        if not fast:
            for group in state.opt.param_groups:
                group["fused"], group["foreach"] = False, False
        engine.fit(cfg, tensors, state, task.build(cfg), progress=False)
        histories.append(state.history)
    fast, plain = histories
    assert fast[-1]["train_loss"] < 0.9 * fast[0]["train_loss"]  # it learns
    for a, b in zip(fast, plain, strict=True):
        for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-7), key
