"""Your own training loop: a plain PyTorch script under @ablate.main, tracked, designed,
reported and resumed like ablate's own jobs (examples/own_loop)."""
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from omegaconf import OmegaConf

import ablate
from ablate import schema, study
from ablate.errors import AblateError
from conftest import REPO

EXAMPLE = REPO / "examples" / "own_loop"


def script(args, cwd=EXAMPLE, **kw):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600, **kw)


def child_runs(db):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    return df[df["params.seed"].notna()]


@pytest.mark.slow
def test_the_plain_script_runs_a_leave_one_out_design_with_the_report(tmp_path):
    db = tmp_path / "mlflow.db"
    out = script(["-m", "ablation=loo", "seed=0,1", "epochs=3", f"tracking.uri=sqlite:///{db}",
                  f"hydra.sweep.dir={tmp_path / 'multirun'}"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = child_runs(db)
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"}
    assert set(df["tags.ablate.arm"]) == {"baseline", "dropout", "depth", "cosine"}
    assert set(df["tags.ablate.objective.metric"]) == {"test_acc"} and set(df["tags.ablate.objective.goal"]) == {"max"}
    assert (df["metrics.final_test_acc"] > 20).all() and df["metrics.param_count"].notna().all()
    text = (tmp_path / "multirun" / "report" / "report.md").read_text()
    assert "Objective: final test_acc (%), higher is better" in text and "| dropout" in text


@pytest.mark.slow
def test_kill_9_mid_run_then_a_rerun_resumes_into_the_same_run(tmp_path):
    db = tmp_path / "mlflow.db"
    args = ["epochs=150", f"tracking.uri=sqlite:///{db}", f"hydra.run.dir={tmp_path / 'out'}"]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=EXAMPLE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    deadline, logged = time.time() + 240, 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()]) if db.exists() else []
        if runs:
            logged = len(client.get_metric_history(runs[0].info.run_id, "test_acc"))
            if logged >= 5:
                break
    assert proc.poll() is None and logged >= 5, "the job ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = script(args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Resuming run" in out.stdout + out.stderr
    df = child_runs(db)
    assert len(df) == 1 and df.iloc[0]["status"] == "FINISHED"
    steps = [m.step for m in client.get_metric_history(df.iloc[0]["run_id"], "test_acc")]
    assert sorted(steps) == list(range(1, 151))  # every epoch once


def cfg_for(tmp_path, **objective):
    cfg = OmegaConf.merge(schema._study_node(), {"objective": {"metric": "acc", "goal": "max", **objective},
                                                "tracking": {"uri": f"sqlite:///{tmp_path / 'm.db'}"}, "lr": 0.1})
    del cfg["hydra"]
    return cfg


def test_an_exception_inside_the_function_closes_the_run_failed_with_its_error(tmp_path):
    def boom(cfg, run):
        run.log(1, {"acc": 50.0})
        raise RuntimeError("out of memory, say")
    with pytest.raises(RuntimeError):
        study.run(boom, cfg_for(tmp_path))
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["1"])[0]
    assert run.info.status == "FAILED" and "out of memory, say" in run.data.tags["ablate.error"]


@pytest.mark.parametrize("returned,needle", [
    ({"loss": 1.0}, "the task function returned no 'acc' (it returned 'loss')"),
    ({"acc": float("nan")}, "returned acc=nan, which is not finite"),
    ("0.97", "returned a str; return the objective's value (acc) as a number, or a dict"),
])
def test_a_function_without_its_objective_is_one_line_naming_the_metric(tmp_path, returned, needle):
    with pytest.raises(AblateError) as err:
        study.run(lambda cfg, run: returned, cfg_for(tmp_path))
    assert needle in str(err.value) and "\n" not in str(err.value)
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["1"])[0]
    assert run.info.status == "FAILED"


def test_a_min_objective_and_a_finished_config_skipped(tmp_path):
    def fit(cfg, run):
        for epoch, loss in enumerate([3.0, 1.0, 2.0], 1):
            run.log(epoch, {"loss": loss})
        return {"loss": 2.0}
    cfg = cfg_for(tmp_path, metric="loss", goal="min", select="best")
    assert study.run(fit, cfg) == 1.0  # the lowest epoch, returned to Hydra's sweepers
    m = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["1"])[0].data.metrics
    assert (m["best_epoch"], m["best_loss"], m["final_loss"]) == (2, 1.0, 2.0)
    assert study.run(lambda cfg, run: pytest.fail("trained twice"), cfg) == 1.0


def test_an_objective_without_a_direction_is_refused_before_any_run(tmp_path):
    with pytest.raises(ablate.ConfigError, match="say which way acc is better"):
        study.check_loop_job(cfg_for(tmp_path, goal=None))
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_a_lightning_module_runs_a_design_through_the_run_callback(tmp_path):
    db = tmp_path / "mlflow.db"
    out = script(["-m", "ablation=loo", "seed=0,1", "epochs=2", f"tracking.uri=sqlite:///{db}",
                  f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=REPO / "examples" / "lightning")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = child_runs(db)
    assert len(df) == 8 and set(df["status"]) == {"FINISHED"} and (df["metrics.best_epoch"] >= 1).all()
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    for run_id in df["run_id"]:  # each epoch logged once, through ablate, from Lightning's metrics
        assert sorted(m.step for m in client.get_metric_history(run_id, "test_acc")) == [1, 2]
        assert len(client.get_metric_history(run_id, "train_loss")) == 2
    assert (tmp_path / "multirun" / "report" / "report.md").exists()


def test_lightning_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    """Stopped after epoch 2 of 4 (a SIGTERM-like interruption), the rerun hands Lightning
    its checkpoint: epochs 3 and 4 train, and the run holds epochs 1..4 once each."""
    monkeypatch.syspath_prepend(str(REPO / "examples" / "lightning"))
    import lightning as L
    from lit_study import LitMLP, loaders

    from ablate.lightning import RunCallback
    from ablate.stops import Interrupted
    started = []

    def fit(cfg, run):
        started.append(run.epoch)
        class Stop(L.Callback):
            def on_train_epoch_end(self, trainer, module):
                if trainer.current_epoch + 1 == 2 and len(started) == 1:
                    raise Interrupted("preempted")
        trainer = L.Trainer(max_epochs=4, callbacks=[RunCallback(run), Stop()], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu")
        trainer.fit(LitMLP(), *loaders(64), ckpt_path=RunCallback.resume_from(run))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}
    cfg = cfg_for(tmp_path, metric="test_acc")
    with pytest.raises(Interrupted):
        study.run(fit, cfg)
    study.run(fit, cfg)
    assert started == [0, 2]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.search_runs(["1"])[0]
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_acc")) == [1, 2, 3, 4]
