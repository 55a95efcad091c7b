"""Study: ablate around a training loop you already have.

    import ablate

    @ablate.main(config_path="conf", config_name="config")   # plays the part of hydra.main
    def train(cfg, run) -> dict[str, float]:
        model, opt, start = build(cfg), ..., 1
        if run.resume is not None:                 # what run.save kept, after an interruption
            model.load_state_dict(run.resume["model"]); start = run.resume["epoch"] + 1
        for epoch in range(start, cfg.epochs + 1):
            ...
            run.log(epoch, {"test_loss": loss, "test_acc": acc})   # per-epoch metrics
            run.save({"model": model.state_dict(), "epoch": epoch})  # the checkpoint to resume from
        return {"test_acc": acc}                   # the final metrics; the objective among them

Your config's defaults list starts with `ablate_study`: ablate's own nodes (`seed`,
`force`, `progress`, `tracking`, `report`, `design`, `objective`) and its sweep callback.
The objective names one of your metrics and its direction:
`objective: {metric: test_acc, goal: max}`. Everything else in your config is yours.

ablate then does for your loop what it does for its engine: the pre-flight of every
job before a sweep starts, the fingerprint, skipping finished configs, one trainer per
config, resume after kill -9 or preemption (from your checkpoint, into the same run),
the MLflow run's life (params, tags, outage ride-out, FINISHED/KILLED/FAILED), the
parent run, designs (`hydra/sweeper=ablation`), the report and the UI links. The
function's return value goes to Hydra's sweepers as the objective's value.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablate import app, checkpoint, engine, entry
from ablate.metrics import Objective
from ablate.model import param_count
from ablate.run import Body, TrackedRun, execute
from ablate.stops import stops_held

log = logging.getLogger(__name__)




def declared_objective(cfg) -> Objective:
    """The objective a user's config declares (ablate.app.objective); ConfigError naming the key."""
    from hydra.core.hydra_config import HydraConfig
    return app.objective(cfg, HydraConfig.get() if HydraConfig.initialized() else None)


def _hydra():
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get() if HydraConfig.initialized() else None


def check_loop_job(cfg) -> str:
    """A user loop's job, before any run exists: ablate's keys, the objective, the store.
    Returns the fingerprint."""
    return app.check_app_job(cfg, _hydra()).fingerprint


@dataclass
class Run:
    """What your function gets beside its config: a handle on its tracked MLflow run."""
    cfg: Any
    tracked: TrackedRun
    checkpoint_dir: Path                 # yours to write into; kept with the run, for resume
    resume: Any = None                   # what `save` kept last, after an interruption; else None
    epoch: int = 0                       # the last epoch logged (0 on a fresh run)
    history: list = field(default_factory=list)
    final: dict = field(default_factory=dict)  # more final metrics beside the return value (a test set's)

    @property
    def run_id(self) -> str:
        return self.tracked.run_id

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's metrics (1-based epochs), logged once, through a store outage."""
        values = {k: float(v) for k, v in metrics.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"epoch {epoch}: {', '.join(bad)} is not finite")
        self.history = [h for h in self.history if h["epoch"] != epoch] + [{"epoch": epoch, **values}]
        self.epoch = max(self.epoch, epoch)
        self.tracked.log_epoch(epoch, values)

    def count_parameters(self, model: torch.nn.Module) -> int:
        """Log the model's trainable parameter count (`param_count`, as ablate's own jobs
        do, for the report's params column); returns it."""
        n = param_count(model)
        self.tracked.log_params({"param_count": n})
        return n

    def save(self, state: Any) -> None:
        """Keep `state` (anything torch.save takes) as the checkpoint to resume from, with
        the epochs logged so far; written atomically, with stop signals held meanwhile.
        It is loaded with `torch.load(weights_only=True)`: tensors, numbers, strings and
        containers of them (state dicts); declare other classes of your own with
        `torch.serialization.add_safe_globals`."""
        with stops_held():
            checkpoint.write({"state": state, "epoch": self.epoch, "history": self.history, "run": self.run_id},
                             self.checkpoint_dir / "checkpoint.pt")


class LoopBody(Body):
    """A user's training function inside a run's life, with its run handle."""

    def __init__(self, fn, cfg, job: app.Job):
        self.fn, self.cfg, self.job = fn, cfg, job
        self.reset()

    @property
    def history(self) -> list[dict]:
        return self._history

    def params(self) -> dict:
        return self.job.identity.params

    def reset(self) -> None:
        self.resume, self.epoch, self._history = None, 0, []

    def load(self, path: Path, run_id: str | None = None) -> None:
        """What run.save kept for run `run_id`, and every other checkpoint file beside it
        (a Lightning checkpoint of ablate.lightning), each loaded with weights_only=True:
        no code runs. Raises, naming the file, if one does not load or belongs to another run."""
        for file in [*sorted(path.parent.glob("*.ckpt")), path]:
            try:
                payload = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValueError(f"{file.name} does not load: {' '.join(str(exc).split())[:160]}") from None
        if not isinstance(payload, dict) or not {"state", "epoch", "history"} <= set(payload):
            raise ValueError(f"{path.name} is not a checkpoint that run.save wrote")
        if run_id is not None and payload.get("run", run_id) != run_id:
            raise ValueError(f"{path.name} belongs to run {payload['run']}, not this one")
        self.resume, self.epoch, self._history = payload["state"], int(payload["epoch"]), list(payload["history"])

    def started(self, run: TrackedRun) -> None:
        if self.resume is not None:
            log.info(f"Resuming run {run.run_id} after epoch {self.epoch}")

    def fit(self, run: TrackedRun) -> dict:
        folder = (run.checkpoint or Path(tempfile.mkdtemp()) / "checkpoint.pt").parent
        handle = Run(self.cfg, run, folder, self.resume, self.epoch, list(self._history))
        if isinstance(self.cfg.get("seed"), int):  # an app's null seed without ablate's nodes stays unseeded
            engine.seed_everything(self.cfg.seed)
        values = app.returned(self.fn(self.cfg, handle), self.job.objective, self.cfg)
        values = {**{k: float(v) for k, v in handle.final.items()}, **values}  # the return value wins
        self._history = handle.history
        return app.summary(values, handle.history, self.job.objective)


def run(fn, cfg) -> float:
    """One job of a user's function, tracked like the engine's; returns the objective's value."""
    job = app.check_app_job(cfg, _hydra())
    script = Path(inspect.getfile(fn)).resolve()
    result = execute(app.claim(cfg, job, script, app.job_tags(cfg), resumable=True), lambda: LoopBody(fn, cfg, job))
    if not result.skipped:
        o = job.objective
        log.info(f"run {result.run_id}: {o.column} {result.objective:.4g} ({o.direction})")
    return result.objective


ResultError = app.ResultError


def main(config_path: str | None = None, config_name: str | None = None, version_base: str | None = "1.3"):
    """Like `hydra.main`, for a function `train(cfg, run) -> dict[str, float]` (or the
    objective's value as a float): the app's jobs are tracked, resumed and reported by
    ablate. `config_path` is relative to the file that defines the function, as in
    hydra.main; any `config_name`. Bad input is one line, exit 2."""
    def decorate(fn):
        where = Path(inspect.getfile(fn)).resolve().parent
        path = None if config_path is None else str((where / config_path).resolve())
        the_task = functools.wraps(fn)(entry.task(lambda cfg: run(fn, cfg)))
        the_task.__ablate_tracks__ = True
        start = functools.wraps(fn)(entry.app(the_task, path, config_name, version_base))
        start.train = fn  # the undecorated function, for tests and notebooks
        return start
    return decorate
