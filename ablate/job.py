"""Job: one training run from config to MLflow. Validation, data and the store
come first, so bad input never creates a run; finished configs are skipped and
interrupted ones resume from their last checkpoint."""
from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import torch
from mlflow.entities import RunData
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablate import checkpoint, config, data, engine, tracking
from ablate.model import build_model, check_model, param_count

log = logging.getLogger(__name__)


@dataclass
class Result:
    run_id: str
    param_count: int
    best_test_acc: float
    best_epoch: int
    final_test_acc: float
    history: list
    skipped: bool = False


def _threads(cfg) -> int:
    """Torch threads: the config's, else SLURM's CPUs for this task, else the cores
    this process may use split between the jobs running beside it."""
    if cfg.train.threads:
        return cfg.train.threads
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get(tracking.ENV_JOBS, "1")))


def _checkpoint_path(run_info) -> Path:
    """Next to the run's artifacts when they are local files; else (a tracking
    server's artifact store) under <launch dir>/checkpoints/<run id>/."""
    parsed = urlparse(run_info.artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)).parent / "checkpoint.pt"
    return tracking.launch_dir() / "checkpoints" / run_info.run_id / "checkpoint.pt"


class Interrupted(Exception):
    """SIGTERM arrived; the run is closed as KILLED."""


@contextmanager
def _sigterm_as_exception():
    def handler(signum, frame):
        raise Interrupted(f"signal {signum}")
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def check(cfg) -> str:
    """Everything that can be wrong with a job, before any run exists: its values, the
    device, the data (read once, checked, its shape filled into the config) and the
    model against that data. Returns the fingerprint that names the job's runs."""
    config.validate(cfg)
    engine.resolve_device(cfg.device)
    data.check(cfg)
    check_model(cfg)
    return config.fingerprint(cfg)


def train(cfg) -> Result:
    """Train one job and log it; the Python API behind `python -m ablate`."""
    fp = check(cfg)
    device = engine.resolve_device(cfg.device)
    uri = tracking.resolve_uri(cfg.tracking.uri)
    exp_id = tracking.ensure_experiment(uri, cfg.tracking.experiment)
    client = MlflowClient(uri)
    previous = tracking.find_runs(client, exp_id, fp)
    if not cfg.force:
        done = [r for r in previous if r.info.status == "FINISHED"]
        if done:
            if (tags := tracking.design_tags(cfg)) and tracking.ARM not in done[0].data.tags:
                for k, v in tags.items():  # a run trained outside any design now serves this one
                    client.set_tag(done[0].info.run_id, k, v)
            return _stored(client, done[0])
    resume = None if cfg.force else _to_resume(cfg, previous)

    torch.set_num_threads(_threads(cfg))
    sources = engine.source_seeds(cfg)
    engine.seed_everything(cfg.seed if sources is None else sources["init"])
    tensors = data.load(cfg, device)
    model = build_model(cfg).to(device)
    if sources is not None:  # split: after the weights, torch's global stream is dropout's
        torch.manual_seed(sources["dropout"])
    if cfg.train.channels_last:  # same maths; at 2 threads 12.7 vs 14.2 ms/batch on CPU (bench.py)
        model = model.to(memory_format=torch.channels_last)
    steps = -(-len(tensors.train) // cfg.train.batch_size)
    state = engine.State(model, *engine.make_optimizer(cfg, model, steps), streams=engine.streams(cfg, device))
    n_params = param_count(model)

    mlflow.set_tracking_uri(uri)
    overrides = tracking.job_overrides()
    if resume is not None:
        if cfg.tracking.checkpoints and (path := _checkpoint_path(resume.info)).exists():
            checkpoint.load(path, state)
        logged = {m.step for m in client.get_metric_history(resume.info.run_id, "test_acc")}
        where = f"after epoch {state.epoch}" if state.epoch else "from epoch 0 (it had no checkpoint)"
        log.info(f"Resuming run {resume.info.run_id} ({resume.info.run_name}) {where}")
        active = mlflow.start_run(run_id=resume.info.run_id)
    else:
        logged = set()
        tags = {tracking.FINGERPRINT: fp, tracking.OVERRIDES: " ".join(overrides), **tracking.design_tags(cfg)}
        if os.environ.get(tracking.ENV_SWEEP_ID):
            tags[tracking.SWEEP_ID] = os.environ[tracking.ENV_SWEEP_ID]
        if commit := tracking.git_commit():
            tags["mlflow.source.git.commit"] = commit
        active = mlflow.start_run(experiment_id=exp_id, run_name=tracking.run_name(overrides), tags=tags,
                                  parent_run_id=os.environ.get(tracking.ENV_PARENT) or None)
    run_id = active.info.run_id
    # A run continued after a kill already has (some of) its params: MLflow refuses to log one twice.
    before = resume.data if resume is not None else RunData()

    def on_epoch(st: engine.State, metrics: dict) -> None:
        if st.epoch not in logged:  # a resumed epoch that was logged before the kill
            mlflow.log_metrics(metrics, step=st.epoch)
        if ckpt is not None:
            checkpoint.save(ckpt, st)

    # All work after start_run sits in this try: a signal anywhere in it closes the run
    # as KILLED, never as MLflow's atexit FINISHED, which would skip the config for good.
    try:
        with _sigterm_as_exception():
            ckpt = _checkpoint_path(active.info) if cfg.tracking.checkpoints else None
            params = {**config.flatten(cfg), "param_count": n_params}
            if new := {k: v for k, v in params.items() if k not in before.params}:
                mlflow.log_params(new)
            if "param_count" not in before.metrics:
                mlflow.log_metric("param_count", n_params)
            if resume is None:
                mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            engine.fit(cfg, tensors, state, on_epoch, progress=cfg.progress)
            final = state.history[-1]["test_acc"]
            mlflow.log_metrics({"best_test_acc": state.best_acc, "best_epoch": state.best_epoch,
                                "final_test_acc": final})
    except (KeyboardInterrupt, Interrupted, SystemExit):
        # SystemExit: submitit's preemption handler requeues the job and exits from
        # inside training. KILLED, not MLflow's atexit FINISHED, so the requeued job resumes.
        mlflow.end_run("KILLED")
        raise
    except Exception as exc:
        mlflow.set_tag(tracking.ERROR, f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")
    log.info(f"run {run_id}: {n_params} params, best test acc {state.best_acc:.2f}% "
             f"(epoch {state.best_epoch}), final {final:.2f}%")
    return Result(run_id, n_params, state.best_acc, state.best_epoch, final, state.history)


def _to_resume(cfg, previous: list):
    """The unfinished run of this config to continue instead of starting a new one: one
    with a checkpoint first; else one killed before its first checkpoint (a preemption
    in epoch 1), restarted from epoch 0, so a requeued job still keeps one run per
    config. A FAILED or RUNNING (kill -9) run without a checkpoint stays as a record."""
    unfinished = [r for r in previous if r.info.status in ("RUNNING", "KILLED", "FAILED")]
    if cfg.tracking.checkpoints:
        for r in unfinished:
            if _checkpoint_path(r.info).exists():
                return r
    return next((r for r in unfinished if r.info.status == "KILLED"), None)


def _stored(client: MlflowClient, run) -> Result:
    m = run.data.metrics
    history = [{"epoch": h.step, "test_acc": h.value}
               for h in client.get_metric_history(run.info.run_id, "test_acc")]
    log.info(f"Skipping: run {run.info.run_id} ({run.info.run_name}) already FINISHED with this "
             f"config (best test acc {m.get('best_test_acc', float('nan')):.2f}%). Use force=true to rerun.")
    return Result(run.info.run_id, int(m.get("param_count", 0)), m.get("best_test_acc"),
                  int(m.get("best_epoch", 0)), m.get("final_test_acc"), history, skipped=True)
