"""Tracking: where runs go in MLflow, how they are named, and finding old ones."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ablate.config import is_non_result

# MLflow draws a progress bar for every artifact it moves, a design.json included: noise
# in a sweep's output. A user's own setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

FINGERPRINT = "ablate.fingerprint"
SWEEP_ID = "ablate.sweep_id"
OVERRIDES = "ablate.overrides"
ERROR = "ablate.error"
DESIGN, DESIGN_KIND, ARM = "ablate.design", "ablate.design.kind", "ablate.arm"
LEVEL = "ablate.level."  # + factor: on/off, for each factor of a factorial design
DESIGN_FILE = "design.json"  # in the sweep's parent run: the design and each job's arm
# Set by the Hydra callback in the parent, read by every job, in any process.
ENV_SWEEP_ID, ENV_PARENT, ENV_SWEEP_KEYS, ENV_JOBS = (
    "ABLATE_SWEEP_ID", "ABLATE_PARENT_RUN_ID", "ABLATE_SWEEP_KEYS", "ABLATE_PARALLEL_JOBS")


def launch_dir() -> Path:
    """The directory the user ran from, even inside a Hydra job that changed it."""
    try:
        from hydra.core.hydra_config import HydraConfig
        return Path(HydraConfig.get().runtime.cwd)
    except ValueError:  # no Hydra app running: the Python API
        return Path.cwd()


def resolve_uri(uri: str | None) -> str:
    """Absolute tracking URI; None means MLflow's embedded sqlite store in the launch dir."""
    if not uri:
        return f"sqlite:///{launch_dir() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(launch_dir() / uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a plain path: a file store
        return (launch_dir() / uri).resolve().as_uri()
    return uri


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (its schema migration) and the experiment once; return its id.
    Artifacts go to <launch dir>/mlruns for a local sqlite store, as MLflow's default."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:////"):  # artifacts beside the db, whatever the cwd
        location = (Path(uri[len("sqlite:///"):]).parent / "mlruns" / name).as_uri()
    try:  # the kind tag opens MLflow 3's UI on its training-runs view, not GenAI's
        return client.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def job_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def run_name(overrides: list[str]) -> str:
    """Readable name from what varies: the swept keys in a multirun, else every
    override, e.g. "norm=bn_after_relu,seed=1"."""
    swept = [k for k in os.environ.get(ENV_SWEEP_KEYS, "").split(",") if k]
    kept = []
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key == "design.arm" and (not swept or key in swept):
            kept.insert(0, f"arm={value}")  # a design's jobs are named by their arm first
        if key.startswith("hydra") or is_non_result(key):
            continue
        if not swept or key in swept:
            kept.append(o.replace('"', "").replace("'", ""))
    return ",".join(kept) or "defaults"


def design_tags(cfg) -> dict[str, str]:
    """A design job's place in its design, as tags the report and MLflow's filters use."""
    d = cfg.get("design")
    if d is None or not d.get("name"):
        return {}
    tags = {DESIGN: d.name, DESIGN_KIND: d.kind, ARM: d.arm}
    for factor, level in (d.get("levels") or {}).items():
        tags[LEVEL + str(factor)] = str(level)
    return tags


def find_runs(client: MlflowClient, experiment_id: str, fingerprint: str):
    """Runs of this exact config, newest first."""
    return client.search_runs([experiment_id], f"tags.`{FINGERPRINT}` = '{fingerprint}'",
                              order_by=["attributes.start_time DESC"])
