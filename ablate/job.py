"""Job: one training run from config to MLflow. Validation, data and the store
come first, so bad input never creates a run; finished configs are skipped and
interrupted ones resume from their last checkpoint."""
from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from mlflow.entities import Param, RunData, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablate import checkpoint, config, data, engine, tracking
from ablate.errors import ConfigError, from_hydra
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


class Interrupted(BaseException):
    """SIGTERM arrived (scancel, scontrol requeue, a sweep stopping): the run is closed
    as KILLED. A BaseException, as KeyboardInterrupt is, because it is not the job's
    failure: submitit then records no error result, and a requeued job resumes the run."""


def _sigterm(signum, frame):
    raise Interrupted(f"signal {signum}")


@contextmanager
def _signals_to(handler, *signals):
    """`signals` go to `handler` inside the block. Only the main thread may set handlers;
    elsewhere signals are left alone."""
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:
        old = {}
    try:
        yield
    finally:
        for s, before in old.items():
            signal.signal(s, signal.SIG_DFL if before is None else before)


# What stops a job: Ctrl-C, SIGTERM (kill, scancel) and USR2 (submitit's preemption)
_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@contextmanager
def _stops_held():
    """The signals that stop a job wait while a checkpoint is written, then reach their
    own handlers: torch.save turns an exception raised inside its writes into a
    RuntimeError (`unexpected pos ...`, seen in CI), and the run would close FAILED,
    never to resume, with a torn checkpoint."""
    pending = []
    try:
        with _signals_to(lambda signum, frame: pending.append(signum), *_STOPS):
            yield
    finally:
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)


def check(cfg) -> str:
    """Everything that can be wrong with a job, before any run exists: its values, the
    store, the device, the data (read once, checked, its shape filled into the config)
    and the model against that data. Returns the fingerprint that names its runs."""
    try:
        config.validate(cfg)
        tracking.check_store(tracking.resolve_uri(cfg.tracking.uri), cfg.tracking.experiment)
        engine.resolve_device(cfg.device)
        data.check(cfg)
        check_model(cfg)
        return config.fingerprint(cfg)
    except OmegaConfBaseException as exc:  # an interpolation to nowhere, a needed key deleted with ~
        raise ConfigError(from_hydra(exc)) from None


def _busy(client: MlflowClient, cfg, run, why: str) -> Result | None:
    """Another live job trains this config: skip it (the default) or wait for it to
    finish (tracking.on_running=wait). None: it died while we waited; take it over."""
    if cfg.tracking.on_running != "wait":
        log.info(f"Skipping: run {run.info.run_id} ({run.info.run_name}) of this config is RUNNING, {why}. "
                 f"Set tracking.on_running=wait to wait for it.")
        return Result(run.info.run_id, 0, float("nan"), 0, float("nan"), [], skipped=True)
    log.info(f"Waiting: run {run.info.run_id} ({run.info.run_name}) of this config is RUNNING, {why}")
    while True:
        time.sleep(10)
        run = client.get_run(run.info.run_id)
        if run.info.status == "FINISHED":
            return _stored(client, run)
        if not tracking.alive(run, cfg.tracking.heartbeat_s)[0]:
            return None


def train(cfg) -> Result:
    """Train one job and log it; the Python API behind `python -m ablate`."""
    fp = check(cfg)
    device = engine.resolve_device(cfg.device)
    uri, grace = tracking.resolve_uri(cfg.tracking.uri), cfg.tracking.grace_s
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
        for r in previous:
            if (live := tracking.alive(r, cfg.tracking.heartbeat_s))[0]:
                if (result := _busy(client, cfg, r, live[1])) is not None:
                    return result
                previous = tracking.find_runs(client, exp_id, fp)  # it died: resume it below
                break
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

    # The client, not mlflow's fluent API: no atexit hook closes a run behind our back
    # (as FINISHED, or against a store that is down).
    overrides = tracking.job_overrides()
    if resume is not None:
        run = resume
        if cfg.tracking.checkpoints and (path := _checkpoint_path(run.info)).exists():
            checkpoint.load(path, state)
        where = f"after epoch {state.epoch}" if state.epoch else "from epoch 0 (it had no checkpoint)"
        log.info(f"Resuming run {run.info.run_id} ({run.info.run_name}) {where}")
        client.update_run(run.info.run_id, status="RUNNING")
        for k, v in tracking.owner_tags().items():
            client.set_tag(run.info.run_id, k, v)
    else:
        tags = {tracking.FINGERPRINT: fp, tracking.OVERRIDES: " ".join(overrides), **tracking.design_tags(cfg),
                **tracking.owner_tags()}
        if os.environ.get(tracking.ENV_SWEEP_ID):
            tags[tracking.SWEEP_ID] = os.environ[tracking.ENV_SWEEP_ID]
        if os.environ.get(tracking.ENV_PARENT):
            tags["mlflow.parentRunId"] = os.environ[tracking.ENV_PARENT]
        if commit := tracking.git_commit():
            tags["mlflow.source.git.commit"] = commit
        # the user, source and the like that mlflow.start_run would add
        run = client.create_run(exp_id, run_name=tracking.run_name(overrides), tags=resolve_tags(tags))
        if (rival := tracking.first_claim(client, exp_id, fp, run, cfg.tracking.heartbeat_s)) is not None:
            client.delete_run(run.info.run_id)  # two jobs started this config together: the first one trains
            return _busy(client, cfg, rival, "started a moment earlier") or train(cfg)
    run_id = run.info.run_id
    logged = {m.step for m in client.get_metric_history(run_id, "test_acc")} if resume is not None else set()
    before = run.data if resume is not None else RunData()  # MLflow refuses to log a param twice

    def log_epoch(epoch: int, metrics: dict) -> None:
        tries = 0

        def attempt():
            nonlocal tries
            tries += 1  # a retry first asks the store: the try before may have written, then lost its reply
            if tries > 1 and any(m.step == epoch for m in client.get_metric_history(run_id, "test_acc")):
                return
            client.log_batch(run_id, metrics=tracking.metrics(metrics, epoch),
                             tags=[RunTag(tracking.HEARTBEAT, str(int(time.time())))])
        if epoch not in logged:
            tracking.ride_out(f"logging epoch {epoch}", attempt, grace, uri)
            logged.add(epoch)

    def on_epoch(st: engine.State, metrics: dict) -> None:
        if ckpt is not None:  # first, locally: an outage while logging then loses nothing
            with _stops_held():
                checkpoint.save(ckpt, st)
        log_epoch(st.epoch, metrics)

    # All work after the run exists sits in this try: a signal closes the run KILLED (a
    # requeued or rerun job resumes it); a crash closes it FAILED with its error.
    try:
        with _signals_to(_sigterm, signal.SIGTERM):
            ckpt = _checkpoint_path(run.info) if cfg.tracking.checkpoints else None
            params = {**config.flatten(cfg), "param_count": n_params}
            if new := {k: v for k, v in params.items() if k not in before.params}:
                tracking.ride_out("logging params", lambda: client.log_batch(
                    run_id, params=[Param(k, str(v)[:6000]) for k, v in new.items()]), grace, uri)
            if "param_count" not in before.metrics:
                client.log_metric(run_id, "param_count", n_params)
            if resume is None:
                client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            for past in state.history:  # epochs the checkpoint holds but an outage kept from the store
                log_epoch(past["epoch"], {k: v for k, v in past.items() if k != "epoch"})
            engine.fit(cfg, tensors, state, on_epoch, progress=cfg.progress)
            final = state.history[-1]["test_acc"]
            summary = {"best_test_acc": state.best_acc, "best_epoch": state.best_epoch, "final_test_acc": final}
            tracking.ride_out("finishing the run", lambda: (
                client.log_batch(run_id, metrics=tracking.metrics(summary, None)),
                client.set_terminated(run_id, "FINISHED")), grace, uri)
    except tracking.StoreError:
        raise  # the store is down: nothing can be recorded there; the checkpoint is kept
    except (KeyboardInterrupt, Interrupted, SystemExit):
        # SystemExit: submitit's preemption handler requeues the job and exits from
        # inside training. KILLED, so the requeued job resumes it.
        with tracking.quick_requests():
            client.set_terminated(run_id, "KILLED")
        raise
    except Exception as exc:
        with tracking.quick_requests():
            client.set_tag(run_id, tracking.ERROR, f"{type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(run_id, "FAILED")
        raise
    log.info(f"run {run_id}: {n_params} params, best test acc {state.best_acc:.2f}% "
             f"(epoch {state.best_epoch}), final {final:.2f}%")
    return Result(run_id, n_params, state.best_acc, state.best_epoch, final, state.history)


def _to_resume(cfg, previous: list):
    """The unfinished run of this config to continue instead of starting a new one: one
    with a checkpoint first; else one killed before its first checkpoint (a preemption
    in epoch 1), restarted from epoch 0, so a requeued job still keeps one run per
    config. A FAILED or RUNNING (kill -9) run without a checkpoint stays as a record."""
    unfinished = [r for r in previous if r.info.status in ("RUNNING", "KILLED", "FAILED")]  # none alive
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
