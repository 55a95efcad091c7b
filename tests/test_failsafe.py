"""Fail safe: a store that is down or wrong, an outage during training (a real
mlflow server stopped and restarted mid-run), and one trainer per configuration."""
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import mlflow
import pytest

import ablate
from ablate import owners, tracking
from conftest import run_cli, start_server, stop

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
    start = time.monotonic()
    out = run_cli([*args, f"data.root={tiny_data}", *FAST, "train.epochs=1"], cwd=tmp_path)
    assert out.returncode == 2 and needle in one_line(out)
    assert time.monotonic() - start < 30  # the check itself is a few seconds; python's imports the rest
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
