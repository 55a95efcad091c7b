"""Scale-out on existing engines: Hydra's submitit launcher (local, and the SLURM
preset's sbatch script), a real `mlflow server` on sqlite and on PostgreSQL,
requeue after preemption, and the MLflow UI in headless Chromium."""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from ablate.callbacks import parallel_jobs
from conftest import REPO, free_port, run_cli, start_server, stop

FAST = ["train.batch_size=64", "progress=false", "data.download=false"]


def sweep_runs(uri: str, experiment: str = "ablate"):
    """(parent, children) of the one sweep in the experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "ablate.jobs" in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1, "every other run is a child of the sweep"
    return client, parents[0], children


def sweep_into(url: str, tiny_data: Path, cwd: Path) -> str:
    res = run_cli(["-m", "hydra/launcher=submitit_local", f"data.root={tiny_data}", f"tracking.uri={url}",
                   *FAST, "train.epochs=2", "norm=none,bn_after_relu"], cwd=cwd, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def check_sweep_on_server(url: str, cwd: Path) -> None:
    """The 2-job sweep through submitit_local is in the server: 2 children, 1 parent, all recorded."""
    client, parent, children = sweep_runs(url)
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["norm=bn_after_relu", "norm=none"]
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.params["param_count"] == str(int(r.data.metrics["param_count"]))
        assert [m.step for m in client.get_metric_history(r.info.run_id, "test_acc")] == [1, 2]
        # artifacts went through the server, not to this machine's mlruns/
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")
        assert "config.yaml" in [f.path for f in client.list_artifacts(r.info.run_id)]
    assert not (cwd / "mlflow.db").exists(), "nothing went to the default local store"


def script(name: str):
    """A module from scripts/ (not a package), imported by path."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- presets -------------------------------------------------------------------

def launcher_cfg(*overrides):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", [*overrides], return_hydra_config=True).hydra.launcher


def test_slurm_preset_writes_the_sbatch_script_it_promises(tmp_path, monkeypatch):
    """Build the executor as hydra-submitit-launcher does and read its sbatch script."""
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    fake = tmp_path / "bin"  # submitit only checks that srun exists before it writes a script
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    cfg = launcher_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.sweep.dir=x")
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("_target_")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    # a 40-job sweep, as map_array submits it
    script = _make_sbatch_string(command="python job.py", folder=tmp_path, map_count=40,
                                 **executor._executor.parameters)
    for line in ["#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=8GB", "#SBATCH --time=60", "#SBATCH --signal=USR2@120",
                 "#SBATCH --array=0-39%32"]:
        assert line in script, script


def test_threads_per_job_follow_the_launcher():
    assert parallel_jobs(launcher_cfg("hydra/launcher=parallel"), 6) == 2
    assert parallel_jobs(launcher_cfg("hydra/launcher=submitit_local"), 6) == 6  # all at once
    assert parallel_jobs(launcher_cfg("hydra/launcher=slurm"), 6) == 1  # own CPUs per job
    assert parallel_jobs(launcher_cfg(), 6) == 1  # basic: one after another


def test_torch_threads_follow_the_config_then_omp_num_threads_then_slurm_then_the_cores(monkeypatch):
    from omegaconf import OmegaConf

    from ablate.job import _threads
    from ablate.tracking import ENV_JOBS
    cfg = OmegaConf.create({"train": {"threads": None}})
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert _threads(cfg) == 5 and _threads(OmegaConf.create({"train": {"threads": 7}})) == 7
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: not a cap
    assert _threads(cfg) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv(ENV_JOBS, "2")
    assert _threads(cfg) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_tracking_server_binds_to_loopback_unless_asked(tmp_path):
    tracking_server = script("tracking_server")
    import argparse
    ns = argparse.Namespace(dir=str(tmp_path), backend_store_uri=None, artifacts_destination=None,
                            host="127.0.0.1", port=5000, workers=2, app_name=None)
    cmd = tracking_server.command(ns, [])
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert "--serve-artifacts" in cmd
    assert tracking_server.exposure_warning("127.0.0.1", 5000) is None
    assert tracking_server.exposure_warning("localhost", 5000) is None
    assert "anyone who can reach port 5000" in tracking_server.exposure_warning("0.0.0.0", 5000)
    ns.host = "0.0.0.0"  # only when the user asks for it
    assert tracking_server.command(ns, [])[cmd.index("--host") + 1] == "0.0.0.0"


# --- a real tracking server ----------------------------------------------------------

@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory, tiny_data):
    """A tracking server on sqlite holding one submitit_local sweep; shared with the UI test."""
    root = tmp_path_factory.mktemp("sqlite-server")
    url, proc = start_server(root / "server")
    try:
        out = sweep_into(url, tiny_data, root)
        yield url, root, out
    finally:
        stop(proc)


@pytest.mark.slow
def test_submitit_local_sweep_into_mlflow_server_on_sqlite(sqlite_server):
    url, root, _ = sqlite_server
    check_sweep_on_server(url, root)
    assert (root / "server" / "mlflow.db").exists()
    assert list((root / "server" / "artifacts").rglob("config.yaml"))


@pytest.mark.slow
def test_basic_auth_server_refuses_anonymous_clients_and_takes_jobs_with_credentials(tmp_path, tiny_data,
                                                                                    monkeypatch):
    pytest.importorskip("flask_wtf", reason="basic-auth needs mlflow[auth]: pip install 'ablate[server]'")
    import urllib.error
    import urllib.request
    url, proc = start_server(tmp_path / "server", extra=["--app-name", "basic-auth"],
                             env={"MLFLOW_AUTH_ADMIN_PASSWORD": "test-admin-pass"})
    try:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
        assert denied.value.code == 401
        creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "test-admin-pass"}
        res = run_cli([f"data.root={tiny_data}", f"tracking.uri={url}", *FAST, "train.epochs=1"],
                      cwd=tmp_path, env=creds)
        assert res.returncode == 0, res.stderr[-3000:]
        for k, v in creds.items():  # this process's client signs in the same way
            monkeypatch.setenv(k, v)
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
        assert [r.info.status for r in runs] == ["FINISHED"]
    finally:
        stop(proc)
    assert (tmp_path / "server" / "basic_auth.db").exists(), "the user store lives in --dir"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture
def postgres_uri():
    """A throwaway PostgreSQL cluster on loopback, started by the test itself."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)")
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'psycopg[binary]'")
    as_user = []
    root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "ablate", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=port, user="ablate", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://ablate@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_submitit_local_sweep_into_mlflow_server_on_postgresql(tmp_path, tiny_data, postgres_uri):
    url, proc = start_server(tmp_path / "server", backend=postgres_uri)
    try:
        sweep_into(url, tiny_data, tmp_path)
        check_sweep_on_server(url, tmp_path)
    finally:
        stop(proc)
    assert not (tmp_path / "server" / "mlflow.db").exists(), "runs went to PostgreSQL, not sqlite"


# --- preemption -----------------------------------------------------------------

def _catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for `sig` (the SigCgt mask in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _submitit_tasks(under: Path) -> list[int]:
    """The job processes submitit started for this test's sweep (run from `under`) that
    already handle USR2: submitit installs its handler only after unpickling the job, and
    before that USR2's default action would kill the process instead of preempting it."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmdline = (d / "cmdline").read_bytes() if d.name.isdigit() else b""
            if (b"submitit.core._submit" in cmdline and Path(os.readlink(d / "cwd")) == under
                    and _catches(int(d.name), signal.SIGUSR2)):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_preempted_submitit_job_is_requeued_and_resumes(tmp_path, tiny_data):
    """USR2 is submitit's preemption signal: the job checkpoints, requeues, and the
    requeued job continues the same MLflow run from its last epoch. The signal reaches
    both jobs at once; one still in epoch 1 continues its run from epoch 0."""
    args = ["-m", "hydra/launcher=submitit_local", f"data.root={tiny_data}", *FAST,
            "train.batch_size=16", "train.epochs=8", "step=7", "seed=0,1"]
    proc = subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sent, deadline = False, time.time() + 400
    while proc.poll() is None and time.time() < deadline and not sent:
        time.sleep(0.5)
        # Preempt once a job's log shows two epochs (the logs, not the store: a client
        # polling a fresh sqlite file would race the sweep's schema migration).
        logs = tmp_path.glob("multirun/*/*/.submitit/*/*_log.out")
        if any("epoch 2/8" in p.read_text() for p in logs):
            for pid in _submitit_tasks(tmp_path):
                os.kill(pid, signal.SIGUSR2)
            sent = True
    out, _ = proc.communicate(timeout=400)
    assert sent, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    logs = "".join(p.read_text() for p in tmp_path.glob("multirun/*/*/.submitit/*/*_log.out"))
    assert "Requeued job" in logs and "Resuming run" in logs, logs[-3000:]
    client, parent, children = sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(children) == 2 and parent.info.status == "FINISHED"
    for r in children:
        assert r.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "test_acc")]
        assert sorted(steps) == list(range(1, 9)), "each epoch logged once, none lost"


# --- the MLflow UI ----------------------------------------------------------------

@pytest.mark.slow
def test_the_printed_link_opens_mlflow_on_the_sweeps_runs_with_no_clicks(tmp_path, sqlite_server):
    """A browser that has never seen MLflow (a fresh Chromium context) opens the runs
    link the sweep printed: the job runs, their swept param and best_test_acc are
    visible without a click; the compare link shows them too."""
    ui_screenshots = script("ui_screenshots")
    chromium = ui_screenshots.find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("playwright", reason="Playwright is not installed: pip install 'ablate[ui]'")
    url, _, out = sqlite_server
    link = re.search(r"MLflow UI, this sweep's runs: (\S+)", out)
    assert link and link.group(1).startswith(url), out[-2000:]
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "ui_screenshots.py"), "--url", url,
                           "--link", link.group(1), "--out", str(tmp_path / "shots")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("runs.png", "compare.png"):
        assert (tmp_path / "shots" / name).stat().st_size > 20_000  # a real page, not a blank one
