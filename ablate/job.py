"""Job: one training run from config to MLflow. Everything that can be wrong is
checked first, so bad input never creates a run; then the run is claimed (a finished
config is skipped, an interrupted one resumed from its last checkpoint), the model
trains through the engine, and the run is closed (ablate.run)."""
from __future__ import annotations

import logging
import os

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablate import checkpoint, config, data, engine, optim, task, tracking
from ablate.errors import ConfigError, from_hydra
from ablate.model import build_model, check_model, keyed_init, param_count
from ablate.run import Body, Result, TrackedRun, execute, summary
from ablate.stops import stops_held

log = logging.getLogger(__name__)
__all__ = ["Result", "check_job", "train"]


def _threads(cfg) -> int:
    """Torch threads: the config's, else OMP_NUM_THREADS (the cap torch itself honours,
    which set_num_threads would otherwise override), else SLURM's CPUs for this task,
    else the cores this process may use split between the jobs running beside it."""
    if cfg.train.threads:
        return cfg.train.threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get(tracking.ENV_JOBS, "1")))


def _checked(cfg) -> tuple[str, torch.device, task.Task]:
    """check's work, and what it built on the way: the fingerprint, device and task."""
    try:
        config.validate(cfg)
        tracking.check_store(tracking.resolve_uri(cfg.tracking.uri), cfg.tracking.experiment)
        device = engine.resolve_device(cfg.device)
        data.checked(cfg)
        the_task = task.build(cfg)
        check_model(cfg)
        optim.check_optim(cfg)
        task.probe(the_task, cfg)
        return config.fingerprint(cfg), device, the_task
    except OmegaConfBaseException as exc:  # an interpolation to nowhere, a needed key deleted with ~
        raise ConfigError(from_hydra(exc)) from None


def check_job(cfg) -> str:
    """Everything that can be wrong with a job, before any run exists: its keys and
    values, the store, the device, the data (read once, checked against the task, its
    shape filled into the config), the task's loss, metrics and objective, and the
    model against that data. Returns the fingerprint that names its runs."""
    if "task" not in cfg:  # a user's own training loop (ablate.study): its config is its own
        from ablate import study
        return study.check_loop_job(cfg)
    return _checked(cfg)[0]


def _fresh_state(cfg, tensors, device) -> engine.State:
    """The model and optimizer at epoch 0, seeded as the config says."""
    sources = engine.source_seeds(cfg)
    engine.seed_everything(cfg.seed if sources is None else engine.stream_seed(cfg, "init"))
    model = build_model(cfg)
    if engine.coupled(cfg) and "_target_" not in cfg.model:  # the same weights wherever the arms' shapes agree
        init = engine.stream_seed(cfg, "init")
        keyed_init(model, lambda key: engine.derived_seed(init, key))
    model = model.to(device)
    if sources is not None:  # split: after the weights, torch's global stream is dropout's
        torch.manual_seed(engine.stream_seed(cfg, "dropout"))
    if cfg.train.channels_last and tensors.kind == "image":  # same maths; 12.7 vs 14.2 ms/batch on CPU (bench.py)
        model = model.to(memory_format=torch.channels_last)
    steps = -(-len(tensors.train) // cfg.train.batch_size)
    return engine.State(model, *optim.build(cfg, model.parameters(), steps), streams=engine.streams(cfg, device))


class EngineBody(Body):
    """ablate's engine inside a run's life: the data as tensors, the model and optimizer."""

    def __init__(self, cfg, the_task, device):
        torch.set_num_threads(_threads(cfg))
        self.cfg, self.task, self.device = cfg, the_task, device
        self.tensors = data.load(cfg, device)
        self.reset()
        self.n_params = param_count(self.state.model)
        self.config_text = OmegaConf.to_yaml(cfg, resolve=True)

    @property
    def history(self) -> list[dict]:
        return self.state.history

    def params(self) -> dict:
        drawn = {"data.val_draw": self.tensors.val_drawn} if self.tensors.val_drawn else {}
        return {**config.flatten(self.cfg), **drawn, "param_count": self.n_params}

    def reset(self) -> None:
        self.state = _fresh_state(self.cfg, self.tensors, self.device)

    def load(self, path, run_id=None) -> None:
        checkpoint.load(path, self.state)

    def started(self, run) -> None:
        if run.resume is not None:
            where = f"after epoch {self.state.epoch}" if self.state.epoch else "from epoch 0 (it had no checkpoint)"
            log.info(f"Resuming run {run.run_id} ({run.run.info.run_name}) {where}")

    def fit(self, run) -> dict:
        def on_epoch(st: engine.State, metrics: dict) -> None:
            if run.checkpoint is not None:  # first, locally: an outage while logging then loses nothing
                with stops_held():
                    checkpoint.save(run.checkpoint, st)
            run.log_epoch(st.epoch, metrics)

        engine.fit(self.cfg, self.tensors, self.state, self.task, on_epoch, progress=self.cfg.progress)
        goals = {f"{split}_{name}": m.goal for split in ("val", "test") for name, m in self.task.metrics.items()}
        values = summary(self.state.history, self.task.objective, goals)
        if self.cfg.train.early_stopping.patience is not None:
            values["stopped_epoch"] = self.state.stopped_epoch or self.state.epoch  # the last epoch trained
        values["test_samples"] = len(self.tensors.test)  # the report's binomial floor of a test accuracy
        return values


def train(cfg) -> Result:
    """Train one job and log it; the Python API behind `python -m ablate`."""
    fp, device, the_task = _checked(cfg)
    the_task.to(device)
    result = execute(lambda: TrackedRun.claim(cfg, fp, the_task.objective),
                     lambda: EngineBody(cfg, the_task, device))
    if not result.skipped:
        o = the_task.objective
        log.info(f"run {result.run_id}: {result.param_count} params, {o.column} {result.objective:.4g} "
                 f"(best epoch {result.best_epoch}, {o.direction})")
    return result
