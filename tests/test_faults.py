"""Faults, by what they hit: the store (down, wrong, an outage mid-run, two trainers of
one config), interrupted sweeps (kill -9, signals, checkpoints, parallel jobs), and
nothing silent (every fault a right result or one line with the fix). Each with the
issue's input and another of the same kind. Issue 31's cases are in test_nothing_lost.py."""
import logging
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch

import ablate
from ablate import checkpoint, designs, engine, owners, source, tracking
from ablate.errors import ConfigError, DataError
from conftest import preempt_after, run_cli, start_server, stop

# --------------------------------------------------------------------------------------
# The store: down or wrong, an outage during training (a real mlflow server stopped and
# restarted mid-run), and one trainer per configuration


FAST = ["train.batch_size=64", "progress=false", "data.download=false"]


def one_line(out):
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["tracking.uri=http://127.0.0.1:9"], "tracking.uri=http://127.0.0.1:9: no MLflow server answered"),
    (["tracking.uri=notascheme://x"], "MLflow has no tracking store for the scheme 'notascheme'"),
    (["tracking.experiment=''"], "tracking.experiment='' is invalid: must be a non-empty name"),
    (["-m", "seed=0,1", "tracking.uri=http://127.0.0.1:9"], "no MLflow server answered"),
])
def test_a_store_that_cannot_be_used_is_one_line_in_seconds(tmp_path, tiny_data, args, needle):
    out = run_cli([*args, f"data.root={tiny_data}", *FAST, "train.epochs=1"], cwd=tmp_path)
    # one line and no more: it did not wait out the outage grace, which says so as it waits
    # (no wall-clock bound here: under CI's load python's imports alone took 32 s)
    assert out.returncode == 2 and needle in one_line(out)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_a_sqlite_file_that_is_not_a_database_is_refused(tmp_path, tiny_data):
    (tmp_path / "junk.db").write_text("not a database")
    out = run_cli([f"data.root={tiny_data}", *FAST, f"tracking.uri=sqlite:///{tmp_path / 'junk.db'}"], cwd=tmp_path)
    assert out.returncode == 2 and "is not a usable sqlite database" in one_line(out)


def fake_run(status="RUNNING", owner=None, beat=0.0):
    tags = {tracking.OWNER: owner or owners.owner(), tracking.HEARTBEAT: str(time.time() - beat)}
    return SimpleNamespace(info=SimpleNamespace(status=status), data=SimpleNamespace(tags=tags))


def test_a_run_is_alive_while_its_process_or_heartbeat_is():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        here = f"{socket.gethostname()}:{child.pid}"
        assert owners.alive(fake_run(owner=here), 600)[0]
        child.kill()
        child.wait()
        alive, why = owners.alive(fake_run(owner=here), 600)
        assert not alive and "is gone" in why  # kill -9 on this host: dead at once, whatever the heartbeat
    finally:
        child.kill()
    assert owners.alive(fake_run(owner="other-host:1", beat=30), 600)[0]
    assert not owners.alive(fake_run(owner="other-host:1", beat=700), 600)[0]
    assert not owners.alive(fake_run(status="KILLED"), 600)[0]


def epochs_logged(url, run_id):
    return sorted(m.step for m in mlflow.MlflowClient(url).get_metric_history(run_id, "test_acc"))


def one_finished_run_with_every_epoch(url, epochs=6):
    client = mlflow.MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    assert len(runs) == 1, [r.info.status for r in runs]
    assert runs[0].info.status == "FINISHED" and epochs_logged(url, runs[0].info.run_id) == list(range(1, epochs + 1))


def test_an_epoch_the_outage_kept_from_the_store_is_logged_from_the_checkpoint_on_resume(tmp_path, tiny_data,
                                                                                          monkeypatch):
    """The checkpoint is written before the epoch is logged, so the rerun starts after
    an epoch the store never saw: it logs that epoch from the checkpoint's history."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = ablate.compose([f"data.root={tiny_data}", *FAST, "train.epochs=3", f"tracking.uri={url}",
                          "tracking.grace_s=0.1"])
    real = mlflow.MlflowClient.log_batch

    def outage_at_epoch_2(self, run_id, metrics=(), *args, **kwargs):
        if any(m.step == 2 for m in metrics):
            raise ConnectionError("the store went away")
        return real(self, run_id, metrics, *args, **kwargs)
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", outage_at_epoch_2)
    with pytest.raises(tracking.StoreError):
        ablate.train(cfg)
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", real)
    run_id = ablate.train(cfg).run_id
    assert epochs_logged(url, run_id) == [1, 2, 3]


def test_an_epoch_whose_reply_was_lost_is_not_logged_twice(tmp_path, tiny_data, monkeypatch):
    """The store wrote epoch 2, but the reply never came: the retry finds it there."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = ablate.compose([f"data.root={tiny_data}", *FAST, "train.epochs=3", f"tracking.uri={url}"])
    real, lost = mlflow.MlflowClient.log_batch, []

    def reply_lost_at_epoch_2(self, run_id, metrics=(), *args, **kwargs):
        out = real(self, run_id, metrics, *args, **kwargs)
        if any(m.step == 2 for m in metrics) and not lost:
            lost.append(2)
            raise ConnectionError("connection reset after the write")
        return out
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", reply_lost_at_epoch_2)
    run_id = ablate.train(cfg).run_id
    assert lost and epochs_logged(url, run_id) == [1, 2, 3]


def start_job(url, tiny_data, cwd, *extra, epochs=6):
    args = [f"data.root={tiny_data}", *FAST, "train.batch_size=16", f"train.epochs={epochs}", "step=7",
            f"tracking.uri={url}", *extra]
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(proc, text):
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the job never printed {text!r}")


@pytest.mark.slow
def test_an_outage_shorter_than_the_grace_period_is_ridden_out(tmp_path, tiny_data):
    url, server = start_server(tmp_path / "server")
    port = int(url.rsplit(":", 1)[1])
    try:
        # 12 epochs of about 1 s: the server's own shutdown can outlast a shorter run (seen in CI)
        job = start_job(url, tiny_data, tmp_path, "tracking.grace_s=120", epochs=12)
        wait_for(job, "epoch 2/12")
        stop(server)  # the store goes away mid-run ...
        wait_for(job, "Tracking store unreachable")  # the job cannot finish without the store
        url, server = start_server(tmp_path / "server", port=port)  # ... and comes back within the grace
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, out[-3000:]
        assert "Tracking store back" in out
        one_finished_run_with_every_epoch(url, epochs=12)
    finally:
        stop(server)


@pytest.mark.slow
def test_a_longer_outage_ends_the_job_in_one_line_and_a_rerun_resumes_it(tmp_path, tiny_data):
    url, server = start_server(tmp_path / "server")
    port = int(url.rsplit(":", 1)[1])
    try:
        job = start_job(url, tiny_data, tmp_path, "tracking.grace_s=3")
        wait_for(job, "epoch 2/6")
        stop(server)
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 2, out[-3000:]
        errors = [line for line in out.splitlines() if line.startswith("ablate:")]
        assert len(errors) == 1 and "has not answered" in errors[0] and "resumes into the same run" in errors[0]
        assert "Traceback" not in out
        url, server = start_server(tmp_path / "server", port=port)
        again = run_cli([f"data.root={tiny_data}", *FAST, "train.batch_size=16", "train.epochs=6", "step=7",
                         f"tracking.uri={url}"], cwd=tmp_path)
        assert again.returncode == 0 and "Resuming run" in again.stdout, again.stdout[-3000:]
        one_finished_run_with_every_epoch(url)
    finally:
        stop(server)


@pytest.mark.slow
def test_two_identical_sweeps_started_together_train_each_config_once(tmp_path, tiny_data):
    """On a fresh store, too: its creation is locked, so the two do not race the schema."""
    args = ["-m", "seed=0,1,2", f"data.root={tiny_data}", *FAST, "train.epochs=3", "report.auto=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sweeps = [subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in sweeps]
    assert all(p.returncode == 0 for p in sweeps), outs
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    jobs = df[df["params.seed"].notna()]
    assert sorted(jobs["params.seed"]) == ["0", "1", "2"], jobs[["status", "params.seed"]]
    assert set(jobs["status"]) == {"FINISHED"}
    assert sum(o.count("Skipping") for o in outs) == 3  # each config: trained by one sweep, skipped by the other


# --------------------------------------------------------------------------------------
# Interrupted sweeps: resume after kill -9, partial failure, atomic checkpoints, safe
# loading, parallel jobs on a fresh store




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


# --------------------------------------------------------------------------------------
# Nothing silent: each kind of fault ends in the right result or in one line with the
# fix, never in a silent wrong answer; the input and another of the same kind


FAST1 = ["train.epochs=1", *FAST]


# ----------------------------------------------------------------------------- 1. code that changed under a run

MODEL = '''
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes, width=WIDTH):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch, tiny_data, store):
    """A user's package `silentnet` with a model, and a config that trains it (each test
    its own copy, imported afresh, as each command of a user is a fresh process)."""
    for name in [m for m in sys.modules if m.split(".")[0] == "silentnet"]:
        monkeypatch.delitem(sys.modules, name)
    pkg = tmp_path / "code" / "silentnet"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODEL.replace("WIDTH", "16"))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "net.yaml").write_text("_target_: silentnet.models.Net\nnum_classes: ${data.num_classes}\n")
    cfg = lambda *extra: ablate.compose([f"data.root={tiny_data}", f"tracking.uri={store}", "model=net",  # noqa: E731
                                         "train.epochs=3", "progress=false", "data.download=false", *extra],
                                        config_dir=tmp_path / "conf")
    return pkg / "models.py", cfg


@pytest.mark.parametrize("edit", ["WIDTH", "shapes_unchanged"])
def test_a_run_is_never_resumed_by_other_code(user_code, store, monkeypatch, caplog, edit):
    """Killed after epoch 1, the model edited (its shapes changed, or not), rerun: the
    old run is not resumed; a new run trains from epoch 0, and one line says why."""
    models, cfg = user_code
    preempt_after(1, cfg(), monkeypatch)
    text = MODEL.replace("WIDTH", "32") if edit == "WIDTH" else MODEL.replace("WIDTH", "16").replace(
        "nn.ReLU()", "nn.Tanh()")
    models.write_text(text)
    with caplog.at_level(logging.WARNING, logger="ablate.run"):
        result = ablate.train(cfg())
    client = mlflow.MlflowClient(store)
    runs = {r.info.run_id: r for r in client.search_runs(["1"])}
    assert len(runs) == 2 and not result.skipped and len(result.history) == 3
    old = next(r for i, r in runs.items() if i != result.run_id)
    assert old.info.status == "KILLED" and runs[result.run_id].info.status == "FINISHED"
    said = [r.getMessage() for r in caplog.records if "Not resuming run" in r.getMessage()]
    assert len(said) == 1 and "the code changed since: silentnet" in said[0] and "from epoch 0" in said[0]


def test_a_finished_run_of_other_code_is_reused_with_a_word(user_code, store, caplog):
    models, cfg = user_code
    first = ablate.train(cfg())
    models.write_text(MODEL.replace("WIDTH", "16") + "\n# a comment is an edit too\n")
    with caplog.at_level(logging.INFO, logger="ablate.run"):
        again = ablate.train(cfg())
    assert again.skipped and again.run_id == first.run_id
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Reusing run")]
    assert len(said) == 1 and "silentnet" in said[0] and "force=true" in said[0]


def test_a_checkpoint_that_does_not_load_starts_a_new_run(user_code, store, monkeypatch, caplog):
    """Same code, but the checkpoint cannot be read (torn, foreign): a fresh run, not a stuck config."""
    _, cfg = user_code
    preempt_after(1, cfg(), monkeypatch)
    killed = mlflow.MlflowClient(store).search_runs(["1"])[0]
    from ablate.run import checkpoint_path
    checkpoint_path(killed).write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="ablate.run"):
        result = ablate.train(cfg())
    assert result.run_id != killed.info.run_id and len(result.history) == 3
    assert any("does not load" in r.getMessage() for r in caplog.records)
    old = mlflow.MlflowClient(store).get_run(killed.info.run_id)  # closed with the reason, never stuck
    assert old.info.status == "KILLED" and "does not load" in old.data.tags[tracking.SUPERSEDED]


def test_a_report_that_mixes_code_versions_says_so():
    runs = pd.DataFrame({f"tags.{source.TAG}": ["aaa", "aaa", "bbb", None]})
    (note,) = source.mixed(runs)
    assert "3 versions of the code" in note and "force=true" in note
    assert source.mixed(runs.iloc[:2]) == []


def test_the_code_parts_name_the_users_package_and_the_libraries(user_code):
    _, cfg = user_code
    parts = source.parts(cfg("data=cifar10", "data.root=/nowhere"))
    assert set(parts) >= {"ablate", "silentnet", "torchvision"} and parts["torchvision"].startswith("torchvision==")


# ----------------------------------------------------------------------------- 2. a deleted experiment

@pytest.mark.parametrize("experiment", ["ablate", "my study"])
def test_a_deleted_experiment_is_one_line_before_any_run(tmp_path, tiny_data, experiment):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.delete_experiment(client.create_experiment(experiment))
    for args in ([], ["-m", "seed=2,3"]):
        out = run_cli([*args, f"data.root={tiny_data}", f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                       *FAST1], cwd=tmp_path)
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("ablate:")]
        assert out.returncode == 2 and len(lines) == 1 and "was deleted" in lines[0], out.stderr[-2000:]
        assert "mlflow experiments restore" in lines[0] and "mlflow gc" in lines[0]
        assert "Traceback" not in out.stderr
    assert client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              run_view_type=mlflow.entities.ViewType.ALL) == []
    from ablate import report
    assert report.main(["--tracking-uri", uri, "--experiment", experiment]) == 2


# ----------------------------------------------------------------------------- 3. paths with URI-special characters

@pytest.mark.parametrize("folder", ["q?a", "50%", "a#b"])
def test_any_folder_name_gets_its_own_store(tmp_path, folder, monkeypatch):
    launch = tmp_path / folder
    sibling = tmp_path / (folder[:-1] + "z")
    for where in (launch, sibling):
        where.mkdir()
        monkeypatch.chdir(where)
        uri = tracking.resolve_uri(None)
        assert tracking.sqlite_file(uri) == where / "mlflow.db"
        tracking.ensure_experiment(uri, "ablate")
        assert (where / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking.resolve_uri(None))
    run = client.create_run(client.get_experiment_by_name("ablate").experiment_id)
    from ablate.run import checkpoint_path
    assert str(checkpoint_path(run)).startswith(str(sibling))


# ---------------------------------------------------------------- 4. jobs that fail before their run exists

@pytest.mark.slow
def test_relative_paths_resolve_as_the_jobs_will_with_chdir(tmp_path, tiny_data):
    """`hydra.job.chdir=true data.root=./data`: the pre-flight and every job read the
    same folder (the launch folder's), so the jobs train."""
    (tmp_path / "data").symlink_to(tiny_data, target_is_directory=True)
    out = run_cli(["-m", "hydra.job.chdir=true", "data.root=./data", "seed=0,1", *FAST1], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Sweep done: 2 finished (0 of them reused from earlier runs), 0 failed, 0 never reached MLflow" in \
        out.stdout + out.stderr


def test_a_job_that_never_reached_mlflow_is_counted_failed(tmp_path, tiny_data, store, caplog):
    """The sweep's summary, parent run and exit code count every job by its config: one
    whose run never existed is a failure, not a silence."""
    from omegaconf import OmegaConf

    from ablate.callbacks import AblateCallback
    done = ablate.train(ablate.compose([f"data.root={tiny_data}", f"tracking.uri={store}", *FAST1]))
    fp = mlflow.MlflowClient(store).get_run(done.run_id).data.tags[tracking.FINGERPRINT]
    cb = AblateCallback()
    cb.client, cb.fingerprints = mlflow.MlflowClient(store), [fp, "0" * 16]
    cb.parent_id = cb.client.create_run("1", run_name="sweep").info.run_id
    cb.cfg = OmegaConf.create({"report": {"auto": False}, "tracking": {"heartbeat_s": 60}})
    cb.sweep_dir = tmp_path
    cb.show_where = lambda parent: None
    with caplog.at_level(logging.INFO):
        assert cb.finish() is True
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "1 finished" in text and "1 never reached MLflow" in text
    assert cb.client.search_runs(["1"], "attributes.run_name = 'sweep'")[0].info.status == "FAILED"


# ----------------------------------------------------------------------------- 5. two sweeps in one folder at once

def test_two_sweeps_started_in_one_second_get_two_folders(tmp_path):
    """Started together (a shell loop with `&`), two sweeps resolve two sweep folders."""
    cmd = [sys.executable, "-m", "ablate", "seed=0", "--cfg", "hydra", "--resolve"]  # what a sweep would resolve
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    dirs = {next(line.split("dir:")[1].strip() for line in o.splitlines() if "dir: multirun/" in line) for o in outs}
    assert len(dirs) == 3, dirs


# ----------------------------------------------------------------------------- 6. a config's identity

@pytest.mark.parametrize("a,b", [("A" * 6100 + "1", "A" * 6100 + "2"), ("x" * 7000, "x" * 7001)])
def test_long_params_that_differ_never_read_the_same(a, b):
    pa, pb = tracking.param_value(a), tracking.param_value(b)
    assert pa != pb and len(pa) <= tracking.PARAM_LIMIT and len(pb) <= tracking.PARAM_LIMIT
    assert tracking.param_value("short") == "short"


def test_equal_configs_written_two_ways_share_one_fingerprint(tiny_data):
    from ablate import config
    base = [f"data.root={tiny_data}"]
    assert config.fingerprint(ablate.compose([*base, "train.lr=0.01"])) == \
        config.fingerprint(ablate.compose([*base, "train.lr=1e-2"]))
    assert config.fingerprint(ablate.compose([*base, "train.epochs=3"])) != \
        config.fingerprint(ablate.compose([*base, "train.epochs=4"]))


# ----------------------------------------------------------------------------- 7. sweep-level keys swept per job

@pytest.mark.parametrize("arg", ["tracking.experiment=abl,v2", "report.out=a,b", "tracking.grace_s=10,20"])
def test_a_sweep_level_key_cannot_vary_within_a_sweep(tmp_path, tiny_data, arg):
    out = run_cli(["-m", arg, "seed=0", f"data.root={tiny_data}", *FAST1], cwd=tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.startswith("ablate:")]
    assert out.returncode == 2 and len(lines) == 1 and arg.split("=")[0] in lines[0]
    assert "No job was started" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()


# ----------------------------------------------------------------------------- 8. python -m ablate.ui

def test_the_ui_serves_from_this_interpreter_moves_off_a_busy_port_and_stops_with_sigterm(tmp_path, tiny_data):
    import signal
    import socket
    run_cli(["-m", "seed=0", f"data.root={tiny_data}", *FAST1], cwd=tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # no activated environment: no `mlflow` on PATH
    proc = subprocess.Popen([sys.executable, "-m", "ablate.ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, line = time.time() + 60, ""
        while time.time() < deadline and "serving" not in line:
            line = proc.stdout.readline()
        assert f"on port {port}" not in line and "serving" in line, line
        served = int(line.rsplit(":", 1)[1].split()[0])
        for _ in range(120):  # the server answers on the port it printed
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", served)) == 0:
                    break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        time.sleep(1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", served)) != 0  # nothing left holding it
    finally:
        busy.close()
        if proc.poll() is None:
            proc.kill()
    assert "is in use" in proc.stderr.read()


# ----------------------------------------------------------------------------- 9. smaller ones

@pytest.mark.parametrize("arg", ["seed=true", "seed=1.5", "seeds.init=yes"])
def test_a_seed_must_be_an_integer(tiny_data, arg):
    with pytest.raises(ConfigError):
        ablate.compose([f"data.root={tiny_data}", arg])


def test_a_factor_string_keeps_quoted_spaces_and_says_how_it_splits():
    assert designs._overrides("+model.note='a b' train.lr=0.1", "f") == ["+model.note='a b'", "train.lr=0.1"]
    with pytest.raises(designs.DesignError, match=r"unclosed quote: a factor's string is split on spaces.*give a list"):
        designs._overrides("+model.note='a b", "hydra.sweeper.factors.f")


def test_a_report_over_runs_ablate_did_not_write_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("ablate")
    with mlflow.start_run():
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("acc", 0.9)
    from ablate import report
    assert report.main(["--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "not written by ablate" in err and "Traceback" not in err


def test_progress_false_hides_the_data_reading_bar(tmp_path, capsys):
    from ablate.data import items as reading
    from ablate.data import sources
    sources._read.cache_clear()
    items = [(f"{i}", i % 2) for i in range(25_000)]  # over the bar's 20,000-item threshold
    with pytest.raises(DataError):
        reading._items(items, "x", progress=False)
    assert "reading x" not in capsys.readouterr().err
