"""A real SLURM cluster on this machine (scripts/slurm_cluster.sh: munged, slurmctld,
slurmd): a sweep through hydra/launcher=slurm goes through sbatch, and a job that
`scontrol requeue` stops resumes its run from the checkpoint. Skips without SLURM."""
import os
import shutil
import subprocess
import sys
import time

import mlflow
import pytest

from conftest import REPO

SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
FAST = ["progress=false", "data.download=false"]


@pytest.fixture(scope="module")
def slurm():
    """The local cluster, started if it is not up and this process may start it."""
    if not shutil.which("sbatch"):
        pytest.skip("SLURM is not installed (Debian: scripts/slurm_cluster.sh install; .ci/run does it)")
    up = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if up.returncode != 0 or not up.stdout.strip():
        if os.geteuid() != 0:
            pytest.skip("no SLURM cluster is up, and starting one needs root: sudo scripts/slurm_cluster.sh start")
        start = subprocess.run(["bash", str(REPO / "scripts" / "slurm_cluster.sh"), "start"], capture_output=True,
                               text=True, timeout=120)
        if start.returncode != 0:
            pytest.skip(f"the local SLURM cluster did not start: {start.stderr[-500:]}")


def runs(cwd):
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    return df[df["tags.mlflow.parentRunId"].notna()], df[df["tags.mlflow.parentRunId"].isna()]


def steps(cwd, run_id):
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "test_acc"))


@pytest.mark.slow
def test_a_sweep_goes_through_sbatch_and_lands_in_mlflow(slurm, tmp_path, tiny_data):
    out = subprocess.run([sys.executable, "-m", "ablate", "-m", *SLURM, "seed=0,1", "train.epochs=2",
                          f"data.root={tiny_data}", *FAST], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    children, parents = runs(tmp_path)
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    assert sorted(children["tags.mlflow.runName"]) == ["seed=0", "seed=1"] and set(children["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parents.iloc[0]["run_id"]}
    scripts = list(tmp_path.glob("multirun/*/*/.submitit/*/*_submission.sh"))
    assert scripts and "#SBATCH --partition=debug" in scripts[0].read_text()
    job_id = scripts[0].parent.name.split("_")[0]  # the array job SLURM numbered
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    assert "JobState=COMPLETED" in shown.stdout, shown.stdout + shown.stderr


@pytest.mark.slow
def test_scontrol_requeue_resumes_the_job_into_the_same_run(slurm, tmp_path, tiny_data):
    """SLURM stops the job (SIGTERM), the run closes KILLED, and after the requeue delay
    (cred_expire, 30 s on this cluster) the job starts again and continues that run
    from its last checkpoint: one run, every epoch logged once."""
    args = [*SLURM, "seed=0", "step=7", "train.epochs=8", "train.batch_size=16", f"data.root={tiny_data}", *FAST,
            "report.auto=false"]
    sweep = subprocess.Popen([sys.executable, "-m", "ablate", "-m", *args], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, deadline = None, time.time() + 300
    while time.time() < deadline and log is None:
        time.sleep(1)
        log = next((p for p in tmp_path.glob("multirun/*/*/.submitit/*/*_log.out") if "epoch 2/8" in p.read_text()),
                   None)
    assert log is not None, "the job never reached epoch 2"
    job = log.parent.name
    requeue = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out[-3000:]
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown, shown
    text = log.read_text()
    assert "Resuming run" in text, text[-3000:]
    children, _ = runs(tmp_path)
    assert len(children) == 1 and children.iloc[0]["status"] == "FINISHED"
    assert steps(tmp_path, children.iloc[0]["run_id"]) == list(range(1, 9))
