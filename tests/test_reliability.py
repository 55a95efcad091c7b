"""Sweeps that survive faults: resume after kill -9, partial failure, atomic
checkpoints, safe loading, parallel jobs on a fresh store."""
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

import ablate
from ablate import checkpoint, engine
from conftest import run_cli

FAST = ["train.batch_size=64", "progress=false", "data.download=false"]


def finished_runs(db: Path, experiment="ablate"):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=[experiment])
    return df[df["params.seed"].notna()] if "params.seed" in df else df


def final_weights(run_id: str, store: str) -> dict:
    from ablate.run import checkpoint_path
    return torch.load(checkpoint_path(mlflow.MlflowClient(store).get_run(run_id)), weights_only=True)["model"]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_to_the_same_result(tmp_path, tiny_data):
    args = [f"data.root={tiny_data}", *FAST, "train.epochs=12", "step=7"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # kill as soon as epoch 3 is reported
        if line.startswith("epoch 3/12"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    df = finished_runs(tmp_path / "mlflow.db")
    assert list(df["status"]) == ["RUNNING"]  # what kill -9 leaves behind

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Resuming run" in again.stdout
    df = finished_runs(tmp_path / "mlflow.db")
    assert list(df["status"]) == ["FINISHED"]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = df.iloc[0]["run_id"]
    history = mlflow.MlflowClient(store).get_metric_history(run_id, "test_acc")
    assert sorted(h.step for h in history) == list(range(1, 13))

    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    ref = run_cli(args, cwd=ref_dir)
    assert ref.returncode == 0, ref.stderr
    ref_df = finished_runs(ref_dir / "mlflow.db")
    ref_store = f"sqlite:///{ref_dir / 'mlflow.db'}"
    for metric in ("best_test_acc", "final_test_acc", "test_loss", "train_loss"):
        assert df.iloc[0][f"metrics.{metric}"] == ref_df.iloc[0][f"metrics.{metric}"], metric
    resumed = {h.step: h.value for h in mlflow.MlflowClient(store).get_metric_history(run_id, "train_loss")}
    straight = {h.step: h.value for h in mlflow.MlflowClient(ref_store).get_metric_history(
        ref_df.iloc[0]["run_id"], "train_loss")}
    assert resumed == straight
    a, b = final_weights(run_id, store), final_weights(ref_df.iloc[0]["run_id"], ref_store)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_stop_signal_marks_the_run_killed_in_one_line_and_a_rerun_resumes_it(tmp_path, tiny_data, sig, code, name):
    args = [f"data.root={tiny_data}", *FAST, "train.epochs=40"]  # long enough that the signal lands mid-run
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a job started in the background inherits SIGINT ignored, and Python keeps it so
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.startswith("epoch 2/40"):
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-2000:] + err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"ablate: stopped by {name}: run "), err
    assert "is KILLED; rerun the same command to resume it." in err
    assert list(finished_runs(tmp_path / "mlflow.db")["status"]) == ["KILLED"]
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and "Resuming run" in again.stdout
    assert list(finished_runs(tmp_path / "mlflow.db")["status"]) == ["FINISHED"]


def _preempted(signum, frame):  # what submitit's USR2 handler does, after asking SLURM to requeue
    raise SystemExit(-1)


@pytest.mark.parametrize("sig, stop", [(signal.SIGTERM, "Interrupted"), (signal.SIGINT, "KeyboardInterrupt"),
                                       (signal.SIGUSR2, "SystemExit")])
def test_a_stop_signal_during_a_checkpoint_write_still_closes_the_run_killed(overrides, store, monkeypatch,
                                                                             sig, stop):
    """torch.save turns an exception raised inside its writes into a RuntimeError (CI saw
    `unexpected pos 64 vs 0`, and the run closed FAILED, which is never resumed). A signal
    that stops the job waits for the write to end, then stops it as KILLED with a good
    checkpoint."""
    real = torch.save

    class SignalOnWrite:  # the signal arrives while torch.save's zip writer is writing
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, b):
            self.writes += 1
            if self.writes == 2:  # the first comes before the zip writer's own
                os.kill(os.getpid(), sig)
            return self.f.write(b)

        def flush(self):
            return self.f.flush()

    def signalled_save(obj, f, *args, **kwargs):
        return real(obj, SignalOnWrite(f), *args, **kwargs)
    monkeypatch.setattr(torch, "save", signalled_save)
    usr2 = signal.signal(signal.SIGUSR2, _preempted)
    # Ctrl-C's own handler, even when pytest was started with SIGINT ignored (`cmd &` in a
    # script, nohup), where Python installs none and the product rightly lets it be.
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cfg = ablate.compose([*overrides, "train.epochs=3"])
        with pytest.raises(BaseException) as stopped:
            ablate.train(cfg)
    finally:
        signal.signal(signal.SIGUSR2, usr2)
        signal.signal(signal.SIGINT, sigint)
    assert type(stopped.value).__name__ == stop, repr(stopped.value)
    run = mlflow.MlflowClient(store).search_runs(["1"])[0]
    assert run.info.status == "KILLED"
    monkeypatch.setattr(torch, "save", real)
    assert ablate.train(cfg).history[0]["epoch"] == 1  # resumed from that checkpoint
    assert [r.info.status for r in mlflow.MlflowClient(store).search_runs(["1"])] == ["FINISHED"]


@pytest.mark.parametrize("stop, then", [(SystemExit, "continued"), (RuntimeError, "a new run")])
def test_a_run_stopped_before_its_first_checkpoint(overrides, store, monkeypatch, caplog, stop, then):
    """SystemExit is how submitit's preemption handler stops a job. Preempted in epoch 1,
    before any checkpoint, the requeued job continues the same KILLED run from epoch 0,
    so the sweep keeps one run per config. A crash (FAILED) stays as a record."""
    cfg = ablate.compose([*overrides, "train.epochs=3"])
    def stopped(*args, **kwargs):
        raise stop("stopped in epoch 1")
    with monkeypatch.context() as m:
        m.setattr(engine, "fit", stopped)
        with pytest.raises(stop):
            ablate.train(cfg)
    with caplog.at_level("INFO", logger="ablate.job"):
        result = ablate.train(cfg)
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].info.run_id == result.run_id
    if then == "continued":
        assert len(runs) == 1 and "from epoch 0 (it had no checkpoint)" in caplog.text
    else:
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    steps = [h.step for h in client.get_metric_history(result.run_id, "test_acc")]
    assert steps == [1, 2, 3]
    assert len(client.get_metric_history(result.run_id, "param_count")) == 1
    assert finished[0].data.params["param_count"] == str(result.param_count)


@pytest.mark.slow
def test_one_failing_job_does_not_stop_the_sweep(tmp_path, tiny_data):
    out = run_cli(["-m", "train.lr=0.01,0.02,1e9,0.03", f"data.root={tiny_data}", *FAST,
                   "train.epochs=1", "report.auto=false"], cwd=tmp_path)
    assert out.returncode != 0
    df = finished_runs(tmp_path / "mlflow.db")
    assert sorted(df["status"]) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    failed = df[df["status"] == "FAILED"].iloc[0]
    assert failed["params.train.lr"] == "1000000000.0"
    assert "diverged" in failed["tags.ablate.error"]
    assert f"FAILED: {failed['tags.mlflow.runName']} ({failed['run_id']})" in out.stdout + out.stderr


@pytest.mark.slow
def test_parallel_jobs_on_a_fresh_store_lose_nothing(tmp_path, tiny_data):
    out = run_cli(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=4", "seed=range(4)",
                   f"data.root={tiny_data}", *FAST, "train.epochs=2", "report.auto=false"],
                  cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    db = tmp_path / "mlflow.db"
    df = finished_runs(db)
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    for run_id in df["run_id"]:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds"):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [1, 2]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _state(seed=0):
    torch.manual_seed(seed)
    model = ablate.build_model(ablate.compose(["step=7"]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return engine.State(model, opt, None, False, epoch=seed)


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, _state(1))
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(path, _state(2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_checkpoint_round_trip_restores_state_and_rng(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = _state(3)
    torch.manual_seed(42)
    checkpoint.save(path, state)
    expected = torch.rand(3)
    restored = checkpoint.load(path, _state(0))
    assert restored.epoch == 3 and torch.equal(torch.rand(3), expected)
    for a, b in zip(state.model.state_dict().values(), restored.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.load(path, _state())
    assert not (tmp_path / "pwned").exists()
