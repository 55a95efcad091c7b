"""A real-shaped Hydra + Lightning app (examples/hydra_app: lightning-hydra-template's
idioms: groups named data, model, callbacks, trainer and paths; a primary config named
`train`; `${hydra:runtime.output_dir}` paths; `seed: null`; a `_partial_` optimizer; a
task function that returns a float), run as its users would: unchanged with one preset
file (Tier 0), under `@ablate.main` (Tier 1), and beside Hydra's Optuna sweeper.
Every test runs the app from a folder outside the repository, as an installed ablate
sees it."""
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mlflow
import pytest

from conftest import REPO

APP = REPO / "examples" / "hydra_app"
pytestmark = pytest.mark.slow


def app(script: str, args: list[str], cwd: Path, python: str = sys.executable, **kw):
    return subprocess.run([python, str(APP / script), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600, **kw)


def child_runs(db: Path):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=["ablate"])
    return df[df["tags.ablate.arm"].notna()] if "tags.ablate.arm" in df else df.iloc[:0]


def check_tier0_sweep(tmp_path: Path, python: str = sys.executable) -> None:
    # a `${...}` in an override is taken as given, resolved in each job
    args = ["-m", "hparams_search=ablate_loo", "seed=0,1", "trainer.max_epochs=1",
            "paths.log_dir=${paths.root_dir}/l2/"]
    out = app("train.py", args, tmp_path, python)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = child_runs(tmp_path / "mlflow.db")
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}, df[["status", "tags.ablate.error"]]
    assert sorted(df["tags.ablate.arm"]) == ["baseline", "baseline", "dropout", "dropout"]
    assert set(df["tags.ablate.objective.metric"]) == {"val/acc_best"}
    assert set(df["tags.ablate.objective.goal"]) == {"max"}
    assert df["metrics.final_val/acc_best"].between(0, 1).all()
    assert set(df["params.model.net.dropout"]) == {"0.2", "0.0"} and set(df["params.seed"]) == {"0", "1"}
    # the output folder is where the job ran, not what it computed: a tag, not a param
    assert set(df["params.paths.output_dir"]) == {"<hydra:runtime.output_dir>"}
    assert df["tags.ablate.run_local"].str.contains("paths.output_dir").all()
    report = next(tmp_path.glob("multirun/*/*/report/report.md")).read_text()
    assert "Objective: final val/acc_best, higher is better" in report and "| dropout" in report
    again = app("train.py", args, tmp_path, python)  # the same sweep again trains nothing
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Skipping 4 of 4 jobs" in again.stdout + again.stderr
    assert len(child_runs(tmp_path / "mlflow.db")) == 4


def test_the_unchanged_app_runs_a_leave_one_out_design_with_one_preset_file(tmp_path):
    """Editable install (the README's): Hydra's plugin scan finds the ablation sweeper
    for an app that never imports ablate."""
    check_tier0_sweep(tmp_path)


def test_the_unchanged_app_runs_the_design_with_a_regular_install_too(tmp_path):
    """ablate built into a wheel and installed as a plain package (no editable hooks),
    beside the other dependencies of this environment."""
    dist, src = tmp_path / "dist", tmp_path / "src"  # built from a copy: the build leaves nothing in the repo
    for part in ("ablate", "hydra_plugins"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, src / part)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(dist.glob("ablate_studies-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)
    # this environment's packages, behind the wheel's; its .pth files (the editable ablate) are not read
    (site / "zz_deps.pth").write_text(next(p for p in map(Path, sys.path) if p.name == "site-packages"
                                           and (p / "hydra").exists()).as_posix() + "\n")
    python = str(venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import ablate; print(ablate.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    run_dir = tmp_path / "study"
    run_dir.mkdir()
    check_tier0_sweep(run_dir, python)


def test_tier_1_kill_9_mid_run_then_a_rerun_resumes_into_the_same_run(tmp_path):
    db = tmp_path / "mlflow.db"
    args = ["-m", "hparams_search=ablate_loo", "seed=0", "trainer.max_epochs=25"]
    proc = subprocess.Popen([sys.executable, str(APP / "train_ablate.py"), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    deadline, killed = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            runs = [r for r in client.search_runs(["1"]) if "ablate.arm" in r.data.tags]
        except Exception:
            continue
        if runs and len(client.get_metric_history(runs[0].info.run_id, "val/acc")) >= 3:
            proc.send_signal(signal.SIGKILL)
            killed = runs[0]
            break
    proc.wait(timeout=60)
    assert killed is not None, "the run never logged 3 epochs"
    out = app("train_ablate.py", args, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Resuming run {killed.info.run_id}" in out.stdout + out.stderr
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert sorted(steps) == list(range(1, 26)), steps  # every epoch once
    assert len(child_runs(db)) == 2  # baseline (resumed) and dropout


def test_an_optuna_sweep_beside_ablate_optimises_the_apps_metric_and_direction(tmp_path):
    # as documented: no seed, the app's `seed: null` (unseeded trials)
    out = app("train_ablate.py", ["-m", "hparams_search=optuna", "trainer.max_epochs=2"], tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "Callback" not in text and "UserWarning" not in text and "INTERVAL_SWEEP" not in text
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trials = mlflow.search_runs(experiment_names=["ablate"])
    assert len(trials) == 3 and set(trials["status"]) == {"FINISHED"}
    assert set(trials["tags.ablate.objective.metric"]) == {"val/acc_best"}
    assert set(trials["tags.ablate.objective.goal"]) == {"max"}
    import yaml
    result = yaml.safe_load(next(tmp_path.glob("multirun/*/*/optimization_results.yaml")).read_text())
    assert result["best_value"] == pytest.approx(trials["metrics.final_val/acc_best"].max())
