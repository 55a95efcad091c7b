"""Nothing lost, nothing stuck, nothing left behind: checkpoints in one recorded place,
stores that would lie, names that would become paths, data that is not finite, user
intent kept, and stop signals in one line. Each kind with the issue's input and another
of the same kind."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

import ablate
from ablate import config, job, tracking
from ablate.errors import DataError
from ablate.run import checkpoint_path
from conftest import run_cli, start_server, stop

FAST = ["train.batch_size=64", "progress=false", "data.download=false"]


# ----------------------------------------------------------------------------- 1. checkpoints: one recorded place

def test_a_runs_checkpoint_lives_under_the_launch_folder_and_its_tag_says_where(overrides, store, tmp_path,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ablate.train(ablate.compose(overrides))
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    where = Path(run.data.tags[tracking.CHECKPOINT])
    assert where == tmp_path / "checkpoints" / result.run_id / "checkpoint.pt" and where.exists()
    assert checkpoint_path(run) == where
    mine = tmp_path / "ckpts"
    other = ablate.train(ablate.compose([*overrides, "seed=1", f"tracking.checkpoint_dir={mine}"]))
    assert checkpoint_path(mlflow.MlflowClient(store).get_run(other.run_id)) == mine / other.run_id / "checkpoint.pt"


@pytest.mark.parametrize("artifact_uri", ["mlflow-artifacts:/1/abc/artifacts", "s3://bucket/1/abc/artifacts",
                                          "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/abc"])
def test_a_run_from_before_the_tag_with_remote_artifacts_is_looked_for_under_the_launch_folder(artifact_uri,
                                                                                               tmp_path, monkeypatch):
    """`mlflow-artifacts:/1/...` has one slash: it once became a cwd-relative folder."""
    monkeypatch.chdir(tmp_path)
    run = mlflow.entities.Run(mlflow.entities.RunInfo("abc", "1", "u", "RUNNING", 0, None, "active",
                                                      artifact_uri=artifact_uri), mlflow.entities.RunData())
    assert checkpoint_path(run) == tmp_path / "checkpoints" / "abc" / "checkpoint.pt"


@pytest.mark.slow
def test_kill_9_with_chdir_on_a_tracking_server_resumes_into_the_same_run(tmp_path, tiny_data):
    """The issue's repro: a real `mlflow server` on loopback, hydra.job.chdir=true,
    kill -9 after epoch 3, rerun: the same run resumes, every epoch logged once."""
    url, server = start_server(tmp_path / "server")
    try:
        args = [f"data.root={tiny_data}", *FAST, "hydra.job.chdir=true", "train.epochs=20", "seed=4",
                f"tracking.uri={url}"]
        proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        for line in proc.stdout:
            if line.startswith("epoch 3/20"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        again = run_cli(args, cwd=tmp_path)
        assert again.returncode == 0 and "Resuming run" in again.stdout, again.stdout[-2000:] + again.stderr
        client = mlflow.MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "test_acc"))
        assert steps == list(range(1, 21))
        assert Path(runs[0].data.tags[tracking.CHECKPOINT]).is_relative_to(tmp_path / "checkpoints")
        assert not list(tmp_path.glob("**/mlflow-artifacts:*"))
    finally:
        stop(server)


# ----------------------------------------------------------------------------- 2. nothing left behind

def sweep_processes(sweep_pid: int) -> list[int]:
    """Live processes started by the sweep `sweep_pid` (its workers carry its pid in
    their environment), zombies left out."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if f"{tracking.ENV_SWEEP_PID}={sweep_pid}".encode() in env and state != "Z" and int(proc.name) != sweep_pid:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_kill_9_of_a_parallel_sweep_leaves_no_worker_and_the_rerun_finishes_it(tmp_path, tiny_data):
    """The issue's repro: `-m hydra/launcher=parallel ... seed=0,1,2,3`, kill -9 of the
    sweep's process mid-training. Its loky workers end within 30 s (their runs closed
    as KILLED), the stale parent run is closed by the next sweep, which finishes."""
    import time
    args = ["-m", "hydra/launcher=parallel", "seed=0,1,2,3", f"data.root={tiny_data}", *FAST,
            "train.batch_size=16", "train.epochs=4", "report.auto=false"]
    sweep = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    for line in sweep.stdout:
        if line.startswith("epoch 1/4"):
            break
    workers = sweep_processes(sweep.pid)
    assert workers, "no worker was found training"
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    deadline = time.monotonic() + 30
    while sweep_processes(sweep.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert not sweep_processes(sweep.pid), f"workers still alive 30 s after the sweep died: {workers}"
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "its sweep process is gone" in again.stdout + again.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    parents = [r for r in runs if "ablate.jobs" in r.data.tags]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
    jobs = [r for r in runs if "ablate.jobs" not in r.data.tags]
    assert sorted(r.data.params["seed"] for r in jobs if r.info.status == "FINISHED") == ["0", "1", "2", "3"]
    assert all(r.info.status in ("FINISHED", "KILLED") for r in jobs)  # nothing left RUNNING


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "/abs/olute", "x\\..\\..\\y"])
def test_an_experiment_name_never_becomes_a_path_out_of_the_store(tmp_path, name):
    uri = tracking.sqlite_uri(tmp_path / "store" / "mlflow.db")
    exp = mlflow.MlflowClient(uri).get_experiment(tracking.ensure_experiment(uri, name))
    where = Path(exp.artifact_location.removeprefix("file://"))
    assert where.parent == tmp_path / "store" / "mlruns" and where.name not in ("", ".", "..")
    assert tracking.safe_name(name) != tracking.safe_name(name + "_")  # two names never share a folder
    assert tracking.safe_name("ablate") == "ablate"


# ----------------------------------------------------------------------------- 3. stores and data that would lie

@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite://", "sqlite:///file:x?mode=memory&cache=shared",
                                 "sqlite+pysqlite://", "sqlite+pysqlite:///:memory:", "sqlite:///"])
def test_a_store_in_memory_is_refused_in_one_line(uri):
    with pytest.raises(tracking.StoreError, match="a store in memory"):
        tracking.resolve_uri(uri)


def test_mlflows_own_environment_variable_is_honoured_and_tracking_uri_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "elsewhere.db").join(["sqlite:///", ""]))
    assert tracking.resolve_uri(None) == tracking.sqlite_uri(tmp_path / "elsewhere.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel.db")  # relative: from the launch folder
    assert tracking.resolve_uri(None) == tracking.sqlite_uri(tmp_path / "rel.db")
    assert tracking.resolve_uri("sqlite:///given.db") == tracking.sqlite_uri(tmp_path / "given.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///:memory:")
    with pytest.raises(tracking.StoreError):
        tracking.resolve_uri(None)


class NanFeatures(Dataset):
    """Feature vectors with one NaN (or inf) planted in item 5 of the training split."""

    def __init__(self, root, train=True, download=False, bad="missing"):
        rng = np.random.default_rng(0 if train else 1)
        self.x = rng.normal(size=(40, 6)).astype(np.float32)
        self.y = rng.integers(0, 3, 40)
        if train:
            self.x[5, 2] = {"missing": np.nan, "overflow": np.inf}[bad]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


@pytest.mark.parametrize("bad", ["missing", "overflow"])  # NaN, inf
def test_a_nan_in_the_training_data_is_a_data_error_before_any_run(store, bad, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = ablate.compose([f"tracking.uri={store}", "data._target_=test_nothing_lost.NanFeatures", "data.name=nan",
                          f"+data.bad={bad}", *[f"data.{k}=null" for k in ("mean", "std", "channels", "height",
                                                                         "width", "num_classes")]])
    with pytest.raises(DataError, match=r"the input of item 5 in .* holds NaN or inf") as err:
        job.check_job(cfg)
    assert "train.lr" not in str(err.value) and "\n" not in str(err.value)
    assert mlflow.MlflowClient(store).search_experiments()[0].name != "ablate" or not mlflow.MlflowClient(
        store).search_runs(["1"])


def test_a_nan_in_a_streamed_training_set_is_a_data_error_and_not_the_learning_rate(store, monkeypatch):
    """A streamed set (not held in memory: not scanned before the run) with a NaN gave
    "training diverged ... Lower train.lr". Its items are read once when it diverges."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = ablate.compose([f"tracking.uri={store}", "data._target_=test_nothing_lost.NanFeatures", "data.name=nan",
                          "data.memory_limit_mb=0", "data.standardize=false", "~model",
                          "+model={_target_:torch.nn.Linear,name:linear,in_features:6,out_features:3}",
                          "train.epochs=1", "progress=false", "train.batch_size=8",
                          *[f"data.{k}=null" for k in ("mean", "std", "channels", "height", "width", "num_classes")]])
    with pytest.raises(DataError, match=r"the input of training item 5 holds NaN or inf") as err:
        ablate.train(cfg)
    assert "train.lr" not in str(err.value)


# ----------------------------------------------------------------------------- 4. intent

def test_dict_key_order_inside_a_list_is_not_identity(tiny_data):
    """`[{width:32,act:relu}]` and `[{act:relu,width:32}]` are one config; another value is not."""
    a, b, c = (ablate.compose([f"data.root={tiny_data}", f"+extra=[{v}]"])
               for v in ("{width:32,act:relu}", "{act:relu,width:32}", "{act:relu,width:64}"))
    assert config.flatten(a)["extra"] == config.flatten(b)["extra"] != config.flatten(c)["extra"]
    assert config.fingerprint(a) == config.fingerprint(b) != config.fingerprint(c)


# ----------------------------------------------------------------------------- 5. text escaped for where it goes

@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "x<img src=a onerror=alert(1)>", "[a](javascript:x)"])
def test_user_text_in_report_md_is_never_markup(tmp_path, name):
    from ablate import report
    from ablate.report.text import markdown_safe
    runs = pd.DataFrame({
        "run_id": [f"r{i}" for i in range(4)], "status": "FINISHED", "start_time": range(4),
        "params.seed": ["0", "1", "0", "1"], "params.model": [name, name, "b|c", "b|c"],
        f"tags.{tracking.FINGERPRINT}": [f"f{i}" for i in range(4)],
        "metrics.final_test_acc": [90.0, 91.0, 92.0, 93.5], "metrics.best_test_acc": [90.0, 91.0, 92.0, 93.5],
        "metrics.best_epoch": 1.0})
    md = report.write(report.build(runs), tmp_path, title=f"ablate report: {name}")["md"].read_text()
    assert "<script" not in md and "<img" not in md and "](" not in md
    assert "b\\|c" in md  # a pipe in a cell stays in its cell
    assert markdown_safe("n<2, p <0.001") == "n<2, p <0.001"  # not tags: left alone


@pytest.mark.parametrize("uri, says", [("http://127.0.0.1:5000", "run where the server runs"),
                                       ("https://mlflow.example.org", "run where the server runs"),
                                       ("sqlite:////tmp/x/mlflow.db", "--backend-store-uri sqlite:////tmp/x/mlflow.db")])
def test_the_purge_hint_is_the_one_that_works_for_the_backend(uri, says):
    hint = tracking.gc_hint(uri, "7")
    assert says in hint and "--experiment-ids 7" in hint
    assert ("--backend-store-uri http" not in hint)


# ------------------------------------------------------------------- 3b. the pre-flight does what the job does

def immutable(path: Path):
    """`chattr +i path`, undone at exit; skips where the file system or user cannot."""
    import contextlib

    @contextlib.contextmanager
    def held():
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not permitted here (needs root on ext4/xfs)")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    return held()


def test_a_read_only_store_is_refused_before_any_run(tmp_path, tiny_data):
    """The issue's `chattr +i mlflow.db` (a file that reads but cannot be written) and a
    folder that takes no new file: one line, exit 2, for a job and for a sweep; no run."""
    db = tmp_path / "mlflow.db"
    store = tracking.sqlite_uri(db)
    tracking.ensure_experiment(store, "ablate")
    args = [f"data.root={tiny_data}", *FAST, "train.epochs=1"]
    with immutable(db):
        with pytest.raises(tracking.StoreError, match="cannot be written"):
            tracking.check_store(store, "ablate")
        for argv in (args, ["-m", *args, "seed=0,1"]):
            out = run_cli(argv, cwd=tmp_path)
            assert out.returncode == 2 and "cannot be written" in out.stderr, out.stderr[-2000:]
            assert "Traceback" not in out.stdout + out.stderr and "Launching" not in out.stdout
    assert not mlflow.MlflowClient(store).search_runs(["1"])
    folder = tmp_path / "locked"
    folder.mkdir()
    with immutable(folder), pytest.raises(tracking.StoreError, match="does not take new files"):
        tracking.check_store(tracking.sqlite_uri(folder / "mlflow.db"), "ablate")
    kept = tmp_path / "kept"  # a store that exists, in a folder that takes no new file (its journal)
    kept.mkdir()
    tracking.ensure_experiment(tracking.sqlite_uri(kept / "mlflow.db"), "ablate")
    with immutable(kept), pytest.raises(tracking.StoreError, match="does not take new files"):
        tracking.check_store(tracking.sqlite_uri(kept / "mlflow.db"), "ablate")


def test_an_artifact_folder_that_takes_no_new_file_is_refused_before_any_run(tmp_path, monkeypatch):
    """The database writes, but the runs' artifact folder does not (chattr +i mlruns): it
    failed at log_text, with a traceback and a FAILED run. Refused in the pre-flight, for
    an experiment that exists (its artifact_location) and one that does not (./mlruns)."""
    monkeypatch.chdir(tmp_path)
    store = tracking.sqlite_uri(tmp_path / "mlflow.db")
    tracking.ensure_experiment(store, "art")
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    with immutable(tmp_path / "mlruns"):
        for experiment in ("art", "new"):
            with pytest.raises(tracking.StoreError, match=r"the artifact folder .* does not take new files"):
                tracking.check_store(store, experiment)
    tracking.check_store(store, "art")


@pytest.mark.parametrize("schema, scheme", [
    (["create table contacts(name, phone)"], "sqlite"),
    (["create table runs(id)", "create table notes(text)"], "sqlite"),
    (["create table invoices(n)"], "sqlite+pysqlite"),  # a driver in the scheme: the same file
    (["create view v as select 1", "pragma user_version = 7"], "sqlite")])  # no table, but not empty
def test_a_database_of_another_program_is_never_given_mlflows_tables(tmp_path, schema, scheme):
    """Another program's sqlite file, even one with a table named like MLflow's, or only
    a view, is refused and left exactly as it was."""
    import sqlite3
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as con:
        for statement in schema:
            con.execute(statement)
    before = db.read_bytes()
    with pytest.raises(tracking.StoreError, match="a database of another program"):
        tracking.check_store(tracking.resolve_uri(f"{scheme}:///{db}"), "ablate")
    assert db.read_bytes() == before
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty file is a new store: MLflow creates its tables in it
    tracking.check_store(tracking.sqlite_uri(empty), "ablate")


@pytest.mark.parametrize("chooses", ["defaults:\n  - override /hydra/launcher: parallel",  # the issue's
                                     "hydra:\n  launcher:\n    n_jobs: {n}"])  # a launcher's key, per preset
def test_a_launcher_chosen_per_job_is_refused_in_one_line(tmp_path, tiny_data, chooses):
    """`override /hydra/launcher: parallel` inside a swept preset, or a launcher key set
    by one: Hydra chooses the launcher once, so it would silently be ignored."""
    presets = tmp_path / "conf" / "experiment"
    presets.mkdir(parents=True)
    for n, name in ((1, "fast"), (2, "fast2")):
        (presets / f"{name}.yaml").write_text(f"# @package _global_\n{chooses.format(n=n)}\ntrain:\n  epochs: {n}\n")
    swept = ["experiment=fast,fast2"] + ([] if "override" in chooses else ["hydra/launcher=parallel"])
    out = run_cli(["-m", *swept, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"data.root={tiny_data}", *FAST],
                  cwd=tmp_path)
    assert out.returncode == 2 and "changes hydra.launcher" in out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() or not mlflow.MlflowClient(
        tracking.sqlite_uri(tmp_path / "mlflow.db")).search_runs(["1"])


# ------------------------------------------------------------------- 2b. stale errors, the summary's reasons

def test_a_resumed_run_that_finishes_keeps_no_stale_error(overrides, store, monkeypatch):
    """A full disk after epoch 1 fails the run with its error tag; once space is back,
    the rerun resumes the same run, finishes it, and the old error is gone."""
    import errno

    from ablate import checkpoint
    cfg = ablate.compose([*overrides, "train.epochs=3"])
    real_save = checkpoint.save

    def save_then_fill(path, state):
        real_save(path, state)
        if state.epoch == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save_then_fill)
        with pytest.raises(OSError):
            ablate.train(cfg)
    client = mlflow.MlflowClient(store)
    (failed,) = client.search_runs(["1"])
    assert failed.info.status == "FAILED" and "Errno 28" in failed.data.tags[tracking.ERROR]
    result = ablate.train(ablate.compose([*overrides, "train.epochs=3"]))
    run = client.get_run(result.run_id)
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    assert tracking.ERROR not in run.data.tags
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_acc")) == [1, 2, 3]


def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path, tiny_data):
    """A real full disk (a 4 MB tmpfs holding the store and checkpoints): one line, no
    traceback; with space back, the same command finishes the run."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here (needs root)")
    try:
        store = tracking.sqlite_uri(mnt / "mlflow.db")
        tracking.ensure_experiment(store, "ablate")
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        (mnt / "filler").write_bytes(b"\0" * max(free - 150_000, 0))  # room for the run's start, not its epochs
        args = [f"data.root={tiny_data}", *FAST, "train.epochs=3", f"tracking.uri={store}",
                f"tracking.checkpoint_dir={mnt / 'checkpoints'}", f"hydra.run.dir={tmp_path / 'out'}"]
        out = run_cli(args, cwd=tmp_path)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert "ablate: the disk is full" in out.stderr and len(out.stderr.strip().splitlines()) <= 2, out.stderr
        (mnt / "filler").unlink()
        again = run_cli(args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        client = mlflow.MlflowClient(store)
        runs = client.search_runs(["1"])
        assert [r.info.status for r in runs if r.info.status != "KILLED"] == ["FINISHED"]
        assert all(tracking.ERROR not in r.data.tags for r in runs if r.info.status == "FINISHED")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_every_failure_the_summary_counts_has_its_reason(tmp_path, tiny_data, store, caplog):
    """A run that failed with no error tag (the store was down as it failed) and a job
    that never reached MLflow: each line gives the error the job returned."""
    import logging

    from omegaconf import OmegaConf

    from ablate.callbacks import AblateCallback
    client = mlflow.MlflowClient(store)
    exp = tracking.ensure_experiment(store, "ablate")
    cb = AblateCallback()
    cb.client, cb.cfg, cb.sweep_dir = client, OmegaConf.create({"report": {"auto": False},
                                                                "tracking": {"heartbeat_s": 60}}), tmp_path
    cb.parent_id = client.create_run(exp, run_name="sweep").info.run_id
    lost = client.create_run(exp, run_name="seed=1", tags={tracking.FINGERPRINT: "a" * 16})
    client.set_terminated(lost.info.run_id, "FAILED")
    cb.fingerprints = ["a" * 16, "b" * 16]
    cb.job_errors = {"seed=1": "ConnectionError: the server went away", "seed=2": "MlflowException: 503 unavailable"}
    cb.show_where = lambda parent: None
    with caplog.at_level(logging.INFO):
        assert cb.finish() is True
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "seed=1 (" in text and "the server went away" in text
    assert "seed=2: MlflowException: 503 unavailable" in text and "returned no error" not in text


@pytest.mark.slow
def test_the_recorded_command_is_shell_quoted_and_pastes_back_to_the_same_sweep(tmp_path, tiny_data):
    """The sweep's `ablate.command` tag, pasted into a shell, runs nothing else and gives
    `python -m ablate` the very arguments the sweep had (checked with printf, not by
    training). The issue's `$(...)` in the experiment name, and quotes, `;`, backticks
    and a pipe in another value of the same command."""
    args = ["-m", 'tracking.experiment="x$(touch PWNED)"', "report.out='it\"s; `touch PWNED2` | cat'", "seed=0",
            f"data.root={tiny_data}", *FAST, "train.epochs=1", "report.auto=false"]
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
    (parent,) = [r for r in client.search_runs([exp.experiment_id]) if "ablate.jobs" in r.data.tags]
    command = parent.data.tags["ablate.command"]
    pasted = subprocess.run(["bash", "-c", "python() { printf '%s\\0' python \"$@\"; }; " + command],
                            cwd=tmp_path, capture_output=True, text=True, check=True)
    assert pasted.stdout.split("\0")[:-1] == ["python", "-m", "ablate", *args]
    assert not list(tmp_path.glob("PWNED*")), "pasting the recorded command ran a command of its own"


@pytest.mark.parametrize("after_s", [1.0, 9.0])  # torch and MLflow loading; composing, the data, or a run
def test_a_sigterm_before_any_run_exists_is_one_line(tmp_path, tiny_data, after_s):
    """It was a silent exit 143: the default handler ran before ablate's."""
    import time
    job = subprocess.Popen([sys.executable, "-m", "ablate", f"data.root={tiny_data}", *FAST, "train.epochs=50"],
                           cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(after_s)
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    lines = [line for line in (out + err).splitlines() if line.strip() and not line.startswith(("20", "["))]
    assert job.returncode == 143 and lines and lines[-1].startswith("ablate: stopped by SIGTERM"), out + err
    assert "Traceback" not in out + err


def test_ctrl_c_in_a_sweep_is_one_line_the_sweep_killed_and_the_rerun_finishes_it(tmp_path, tiny_data):
    """Ctrl-C during a sequential sweep's first job gave a KeyboardInterrupt traceback,
    exit 1 and a FAILED parent run. Now: one line, exit 130, the job's run and the
    parent run KILLED, and the same command resumes and finishes."""
    args = ["-m", "seed=0,1", f"data.root={tiny_data}", *FAST, "train.batch_size=16", "train.epochs=3",
            "report.auto=false"]
    sweep = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    for line in sweep.stdout:
        if line.startswith("epoch 1/3"):
            break
    sweep.send_signal(signal.SIGINT)
    rest = sweep.stdout.read()
    sweep.wait(timeout=60)
    assert sweep.returncode == 130 and "Traceback" not in rest, rest[-3000:]
    last = rest.strip().splitlines()[-1]
    assert last.startswith("ablate: stopped by SIGINT: run ") and "sweep run" in last and "KILLED" in last, rest
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # the parent and job 0
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    jobs = [r for r in runs if "ablate.jobs" not in r.data.tags]
    assert sorted(r.info.status for r in jobs) == ["FINISHED", "FINISHED"]  # job 0 resumed into its run


def test_a_finished_run_without_the_objectives_metric_is_not_reused(overrides, store):
    """A config that adds a metric and judges by it trains the same way, so it shares the
    fingerprint; the run that never computed that metric cannot stand for it (the digits
    README's two commands in one folder left the smoothing design one seed short)."""
    first = ablate.train(ablate.compose(overrides))
    again = ablate.train(ablate.compose([*overrides, "+task.metrics.f1={}", "objective.metric=f1"]))
    assert not again.skipped and again.run_id != first.run_id
    assert "final_test_f1" in mlflow.MlflowClient(store).get_run(again.run_id).data.metrics
    assert ablate.train(ablate.compose([*overrides, "+task.metrics.f1={}", "objective.metric=f1"])).skipped


def test_a_run_killed_before_its_first_checkpoint_is_closed_not_left_running(overrides, store):
    """kill -9 of a parallel sweep can take a worker before its first checkpoint: its run
    stays RUNNING with a dead owner. The rerun trains the config in a new run and closes
    that one KILLED, saying why (CI caught one left RUNNING)."""
    import socket
    client = mlflow.MlflowClient(store)
    first = ablate.train(ablate.compose(overrides))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client.update_run(first.run_id, status="RUNNING")
    client.set_tag(first.run_id, tracking.OWNER, f"{socket.gethostname()}:{gone.stdout.strip()}")
    checkpoint_path(client.get_run(first.run_id)).unlink()
    again = ablate.train(ablate.compose(overrides))
    old = client.get_run(first.run_id)
    assert again.run_id != first.run_id and not again.skipped
    assert old.info.status == "KILLED" and "first checkpoint" in old.data.tags[tracking.SUPERSEDED]
