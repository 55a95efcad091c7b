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
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablate import config, engine, schema, source, tracking
from ablate.errors import AblateError, ConfigError, from_hydra
from ablate.metrics import GOALS, SELECTS, Objective
from ablate.run import Busy, TrackedRun, stops_held
from ablate.schema import Design, Report, Tracking

log = logging.getLogger(__name__)


@dataclass
class DeclaredObjective:
    metric: str | None = None       # a metric your function logs per epoch and/or returns
    goal: str | None = None         # max | min: required, a metric always carries its direction
    select: str = "final"           # final: the returned (last) value; best: the best logged epoch's
    bounds: list[Any] | None = None  # [low, high] of the metric's values, null for no end (accuracy %: [0, 100])
    label: str | None = None        # how reports name it; null = the metric's name
    unit: str = ""


def _study_node() -> DictConfig:
    """ablate's nodes for a user's app, typed; the root stays open for the user's keys."""
    node = OmegaConf.create({
        "seed": 0, "force": False, "progress": True,
        "tracking": OmegaConf.structured(Tracking), "report": OmegaConf.structured(Report),
        "design": OmegaConf.structured(Design), "objective": OmegaConf.structured(DeclaredObjective),
        "hydra": {"callbacks": {"ablate": {"_target_": "ablate.callbacks.AblateCallback"}},
                  # microseconds: two runs or sweeps started in one second get two folders
                  "run": {"dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"},
                  "sweep": {"dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"}},
    })
    return node


ConfigStore.instance().store(name="ablate_study", node=_study_node())


def _register_sweeper() -> None:
    """Hydra finds plugins by scanning the hydra_plugins namespace, which a PEP 660
    editable install (pip install -e .) hides from it; registering here works for any
    install, for every app that imports ablate."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ablate_sweeper.ablate_sweeper import AblationSweeper
    Plugins.instance().register(AblationSweeper)


def declared_objective(cfg) -> Objective:
    """The objective a user's config declares; ConfigError naming the key if it is not whole."""
    o = cfg.get("objective")
    if o is None or not o.get("metric"):
        raise ConfigError("objective.metric is not set: name the metric your function logs and returns, e.g. "
                          "`objective: {metric: test_acc, goal: max}` in your config (after ablate_study).")
    if o.get("goal") not in GOALS:
        raise ConfigError(f"objective.goal={o.get('goal')!r}: say which way {o.metric} is better with "
                          f"`objective.goal=max` or `min`; ablate does not guess a metric's direction.")
    if o.select not in SELECTS:
        raise ConfigError(f"objective.select={o.select!r} is invalid: must be final or best.")
    bounds = tuple(o.bounds) if o.get("bounds") is not None else (None, None)
    if len(bounds) != 2:
        raise ConfigError(f"objective.bounds={list(bounds)} is invalid: give [low, high], null for no end.")
    bounds = tuple(None if b is None else float(b) for b in bounds)
    return Objective(o.metric, o.goal, o.select, bounds, o.get("label") or o.metric, o.get("unit") or "", "none")


def check(cfg) -> str:
    """A user loop's job, before any run exists: ablate's keys, the objective, the store.
    Returns the fingerprint."""
    try:
        for key in ("tracking", "report", "design", "objective"):  # ablate's typed nodes: no stray keys
            if isinstance(cfg.get(key), DictConfig):
                schema.typed(cfg[key], key)
        declared_objective(cfg)
        tracking.check_store(tracking.resolve_uri(cfg.tracking.uri), cfg.tracking.experiment)
        if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
            raise ConfigError(f"seed={cfg.seed!r} is invalid: must be an integer. Fix it with `seed=<n>`.")
        return config.fingerprint(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(from_hydra(exc)) from None


@dataclass
class Run:
    """What your function gets beside its config: a handle on its tracked MLflow run."""
    cfg: Any
    tracked: TrackedRun
    checkpoint_dir: Path                 # yours to write into; kept with the run, for resume
    resume: Any = None                   # what `save` kept last, after an interruption; else None
    epoch: int = 0                       # the last epoch logged (0 on a fresh run)
    history: list = field(default_factory=list)

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
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.tracked.log_params({"param_count": n})
        return n

    def save(self, state: Any) -> None:
        """Keep `state` (anything torch.save takes) as the checkpoint to resume from, with
        the epochs logged so far; written atomically, with stop signals held meanwhile."""
        path = self.checkpoint_dir / "checkpoint.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with stops_held(), os.fdopen(fd, "wb") as f:
                torch.save({"state": state, "epoch": self.epoch, "history": self.history}, f)
                f.flush()
                os.fsync(f.fileno())
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _summary(returned: dict, history: list[dict], objective: Objective) -> dict:
    """`final_<m>` for every returned metric (and the last logged value of the others),
    `best_<objective>` and `best_epoch` by the objective's direction."""
    out = {f"final_{k}": v for h in history for k, v in h.items() if k != "epoch"}
    out.update({f"final_{k}": v for k, v in returned.items()})
    logged = [h for h in history if objective.history in h]
    if logged:
        best = objective.best([h[objective.history] for h in logged])
        out[f"best_{objective.history}"] = best
        out["best_epoch"] = next(h["epoch"] for h in logged if h[objective.history] == best)
    else:  # nothing logged per epoch: the returned value is the only one
        out[f"best_{objective.history}"] = out[f"final_{objective.history}"]
        out["best_epoch"] = 0
    return out


def run(fn, cfg) -> float:
    """One job of a user's function, tracked like the engine's; returns the objective's value."""
    fp = check(cfg)
    objective = declared_objective(cfg)
    tracked = TrackedRun.claim(cfg, fp, objective, source.parts(cfg, Path(inspect.getfile(fn)).resolve()))
    if tracked.done is not None:
        return tracked.done.objective
    try:
        tracked.start()
    except Busy:
        return tracked.done.objective if tracked.done is not None else run(fn, cfg)
    handle = Run(cfg, tracked, (tracked.checkpoint or Path(tempfile.mkdtemp()) / "checkpoint.pt").parent)
    saved = handle.checkpoint_dir / "checkpoint.pt"
    if tracked.resume is not None and saved.exists():
        payload = torch.load(saved, map_location="cpu", weights_only=False)  # your own file, your own objects
        handle.resume, handle.epoch, handle.history = payload["state"], payload["epoch"], list(payload["history"])
        log.info(f"Resuming run {tracked.run_id} after epoch {handle.epoch}")
    engine.seed_everything(cfg.seed)
    with tracked.closing():
        tracked.log_params(config.flatten(cfg), OmegaConf.to_yaml(cfg, resolve=True))
        for past in handle.history:  # epochs the checkpoint holds but an outage kept from the store
            tracked.log_epoch(past["epoch"], {k: v for k, v in past.items() if k != "epoch"})
        returned = fn(cfg, handle)
        returned = _returned(returned, objective)
        values = _summary(returned, handle.history, objective)
        tracked.finish(values)
    log.info(f"run {tracked.run_id}: {objective.column} {values[objective.column]:.4g} ({objective.direction})")
    return values[objective.column]


class ResultError(AblateError):
    """The function's return value does not carry the objective."""


def _returned(value, objective: Objective) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ResultError(f"the training function returned a {type(value).__name__}; return a dict of final "
                          f"metrics with the objective's {objective.metric!r} in it, e.g. "
                          f"`return {{{objective.metric!r}: value}}`.")
    if objective.metric not in value:
        raise ResultError(f"the training function returned no {objective.metric!r} (it returned "
                          f"{', '.join(map(repr, value)) or 'nothing'}): return the objective's metric, or fix "
                          f"objective.metric.")
    out = {}
    for k, v in value.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise ResultError(f"the training function returned {k}={v!r}, not a number.") from None
    if not math.isfinite(out[objective.metric]):
        raise ResultError(f"the training function returned {objective.metric}={out[objective.metric]}, which is not "
                          f"finite: the objective needs a number.")
    return out


def main(config_path: str | None = None, config_name: str | None = None, version_base: str | None = "1.3"):
    """Like `hydra.main`, for a function `train(cfg, run) -> dict[str, float]`: the app's
    jobs are tracked, resumed and reported by ablate. `config_path` is relative to the
    file that defines the function, as in hydra.main. Bad input is one line, exit 2."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ablate import errors
    _register_sweeper()

    def decorate(fn):
        where = Path(inspect.getfile(fn)).resolve().parent
        path = None if config_path is None else str((where / config_path).resolve())

        @functools.wraps(fn)
        def task(cfg: DictConfig) -> float:
            errors.report_hydras_errors()
            try:
                return run(fn, cfg)
            except AblateError as exc:
                if HydraConfig.get().mode == RunMode.MULTIRUN:
                    raise  # the sweep records it as a failed job
                print(f"ablate: {exc}", file=sys.stderr)
                sys.exit(2)

        app = hydra.main(config_path=path, config_name=config_name, version_base=version_base)(task)

        @functools.wraps(fn)
        def entry() -> Any:
            errors.raise_hydras_errors()
            try:
                return app()
            except Exception as exc:
                from hydra.errors import HydraException
                if not isinstance(exc, (HydraException, OmegaConfBaseException)) or errors.report_hydras_errors():
                    raise
                print(f"ablate: {errors.from_hydra(exc)}", file=sys.stderr)
                sys.exit(2)
        entry.train = fn  # the undecorated function, for tests and notebooks
        return entry
    return decorate
