"""App: a user's own Hydra app as ablate's jobs, with or without ablate in its code.

    Tier 0  an app as it is: `@hydra.main`, a task function that returns its metric.
            The ablation sweeper (`-m hydra/sweeper=ablation ...`, or a preset file)
            hands the launcher a tracked task in its place (TrackedTask): each job is
            one MLflow run with the composed config as params, the design's tags, the
            fingerprint, the returned value as the objective, FINISHED or FAILED.
            Finished configs are skipped before launch; nothing resumes (the app keeps
            no checkpoint through ablate).
    Tier 1  `@ablate.main` (ablate.study): the same, plus the run handle to log epochs,
            checkpoint and resume.

Both name a job by its composed values key by key (ablate.identity), read ablate's
settings from its nodes when the config has them (`ablate_study` in the defaults), else
from the sweeper (`hydra.sweeper.tracking`, ...), and take the objective from, in turn:
`objective` (ablate's node), `hydra.sweeper.objective`, or the app's own
`optimized_metric` with the sweeper's `direction` (maximize | minimize, as Optuna's)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ablate import identity, schema, source, tracking
from ablate.entry import die_with_sweep
from ablate.errors import AblateError, ConfigError, from_hydra
from ablate.metrics import GOALS, SELECTS, Objective
from ablate.run import Body, Result, TrackedRun, execute
from ablate.run import summary as run_summary

log = logging.getLogger(__name__)

SWEEPER = "hydra_plugins.ablate_sweeper.ablate_sweeper.AblationSweeper"
DIRECTIONS = {"maximize": "max", "minimize": "min", "max": "max", "min": "min"}


def _sweeper(hydra_cfg) -> DictConfig:
    """The ablation sweeper's node of a job's Hydra config, or an empty one."""
    node = OmegaConf.select(hydra_cfg, "sweeper") if hydra_cfg is not None else None
    return node if isinstance(node, DictConfig) and node.get("_target_") == SWEEPER else OmegaConf.create({})


_TRACKING_KEYS = {f.name for f in dataclasses.fields(schema.TrackingConf)}


def has_ablate_nodes(cfg) -> bool:
    """True for a config with `ablate_study`'s nodes in its defaults: a `tracking` node of
    ablate's keys (an app's own group named `tracking`, say a logger's, is the app's)."""
    node = cfg.get("tracking")
    return isinstance(node, DictConfig) and "uri" in node and set(node) <= _TRACKING_KEYS


def settings(cfg, hydra_cfg) -> DictConfig:
    """ablate's settings for a user's job (`tracking`, `report`, `force`): its own nodes
    when it has them, else their defaults with the ablation sweeper's on top."""
    node = OmegaConf.create({"tracking": OmegaConf.structured(schema.TrackingConf),
                             "report": OmegaConf.structured(schema.ReportConf), "force": False})
    if has_ablate_nodes(cfg):
        node.tracking, node.report, node.force = cfg.tracking, cfg.get("report") or node.report, bool(cfg.force)
        return node
    sweeper = _sweeper(hydra_cfg)
    for key in ("tracking", "report"):
        if isinstance(sweeper.get(key), DictConfig):
            try:
                node[key] = OmegaConf.merge(node[key], sweeper[key])
            except OmegaConfBaseException as exc:
                raise ConfigError(f"hydra.sweeper.{key}: {from_hydra(exc)}") from None
    if sweeper.get("force") is not None:
        node.force = bool(sweeper.force)
    return node


def objective(cfg, hydra_cfg) -> Objective:
    """What a user's job is judged by, with its direction (never guessed). The metric:
    `objective.metric`, else `hydra.sweeper.objective.metric`, else the app's own
    `optimized_metric`; the goal likewise, else the sweeper's `direction`, which must
    agree with a goal given (Optuna's maximize | minimize)."""
    nodes = [(w, n) for w, n in (("objective", cfg.get("objective") if has_ablate_nodes(cfg) else None),
                                 ("hydra.sweeper.objective", _sweeper(hydra_cfg).get("objective")))
             if isinstance(n, DictConfig)]
    direction = OmegaConf.select(hydra_cfg, "sweeper.direction") if hydra_cfg is not None else None
    if direction is not None and not isinstance(direction, str):
        raise ConfigError(f"hydra.sweeper.direction={list(direction)}: ablate judges one objective; give one "
                          f"direction (maximize or minimize).")
    from_direction = DIRECTIONS.get(str(direction).lower()) if direction is not None else None
    if direction is not None and from_direction is None:
        raise ConfigError(f"hydra.sweeper.direction={direction!r} is invalid: must be maximize or minimize.")
    first = lambda key: next(((w, n[key]) for w, n in nodes if n.get(key) is not None), (None, None))  # noqa: E731
    where, metric = first("metric")
    if metric is None and cfg.get("optimized_metric"):
        where, metric = "optimized_metric", cfg.optimized_metric
    if metric is None:
        raise ConfigError("no objective: name the metric the task function returns and its direction, e.g. "
                          "`hydra.sweeper.objective.metric=val_acc hydra.sweeper.objective.goal=max` (or "
                          "`objective: {metric: val_acc, goal: max}` after ablate_study in your config).")
    goal_at, goal = first("goal")
    if goal is not None and from_direction is not None and goal != from_direction:
        raise ConfigError(f"{goal_at}.goal={goal} but hydra.sweeper.direction={direction}: the study and the "
                          f"sweeper would optimise opposite ways. Make them agree.")
    goal = goal or from_direction
    if goal not in GOALS:
        key = "objective" if where == "optimized_metric" else where
        name = where if where == "optimized_metric" else f"{where}.metric"
        raise ConfigError(f"{name}={metric}: say which way {metric} is better with `{key}.goal=max` or `min` (or "
                          f"hydra.sweeper.direction=maximize|minimize); ablate does not guess a metric's direction.")
    select = first("select")[1] or "final"
    if select not in SELECTS:
        raise ConfigError(f"objective.select={select!r} is invalid: must be final or best.")
    bounds = first("bounds")[1]
    bounds = tuple(bounds) if bounds is not None else (None, None)
    if len(bounds) != 2:
        raise ConfigError(f"objective.bounds={list(bounds)} is invalid: give [low, high], null for no end.")
    bounds = tuple(None if b is None else float(b) for b in bounds)
    return Objective(str(metric), goal, select, bounds, first("label")[1] or str(metric), first("unit")[1] or "",
                     "none")


@dataclass
class Job:
    """A user's job as ablate sees it before anything runs."""
    identity: identity.Identity
    objective: Objective
    settings: DictConfig

    @property
    def fingerprint(self) -> str:
        return self.identity.fingerprint


def seeded(cfg) -> DictConfig:
    """In a config with ablate's nodes, `seed: null` (an app's own default, meaning
    unseeded) runs as seed 0: ablate pairs runs by seed, so every run has one. Said
    once; `seed=<n>` chooses. An app without ablate's nodes keeps its own seed."""
    if has_ablate_nodes(cfg) and "seed" in cfg and cfg.seed is None:
        if not _SAID:  # once a process: a sweep's pre-check composes every job
            log.info("seed is null in this config; ablate runs it as seed=0 (runs are paired by seed). "
                     "Choose one with seed=<n>.")
            _SAID.append("seed")
        with open_dict(cfg):
            cfg.seed = 0
    return cfg


_SAID: list[str] = []


def check_app_job(cfg, hydra_cfg) -> Job:
    """A user's job, before any run exists: ablate's keys, the objective, the store, and
    the identity (every `${...}` resolved as in the job). ConfigError names the key.
    A null seed in a config with ablate's nodes becomes 0 (seeded), in place."""
    try:
        seeded(cfg)
        if has_ablate_nodes(cfg):
            for key in ("tracking", "report", "design", "objective"):  # ablate's typed nodes: no stray keys
                if isinstance(cfg.get(key), DictConfig):
                    schema.typed(cfg[key], key)
        st = settings(cfg, hydra_cfg)
        o = objective(cfg, hydra_cfg)
        tracking.check_store(tracking.resolve_uri(st.tracking.uri), st.tracking.experiment)
        seed = cfg.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(f"seed={seed!r} is invalid: must be an integer. Fix it with `seed=<n>`.")
        own = identity.ABLATE_NODES if has_ablate_nodes(cfg) else ()
        return Job(identity.of(cfg, own), o, st)
    except OmegaConfBaseException as exc:  # an interpolation to nowhere, a missing value
        raise ConfigError(from_hydra(exc)) from None


class ResultError(AblateError):
    """The function's return value does not carry the objective."""


def returned(value, objective: Objective, cfg=None) -> dict[str, float]:
    """A task function's return value as metrics: a number is the objective's value (and
    must be: an app that returns its `optimized_metric` returns that metric's value); a
    dict must hold the objective's metric. ResultError names what is missing."""
    number = (isinstance(value, (int, float)) and not isinstance(value, bool)) or \
        (hasattr(value, "item") and getattr(value, "ndim", 1) == 0)
    named = cfg.get("optimized_metric") if cfg is not None else None
    if number and named and str(named) != objective.metric:
        raise ResultError(f"the task function returned a number, its optimized_metric={named}, but the objective "
                          f"is {objective.metric}: set the objective's metric to {named} (or optimized_metric to "
                          f"{objective.metric}), or return a dict of metrics with {objective.metric} in it.")
    if number:  # a float, or a 0-d tensor or array
        value = {objective.metric: value.item() if hasattr(value, "item") else value}
    if not isinstance(value, dict):
        raise ResultError(f"the task function returned a {type(value).__name__}; return the objective's value "
                          f"({objective.metric}) as a number, or a dict of final metrics with it, e.g. "
                          f"`return {{{objective.metric!r}: value}}`.")
    if objective.metric not in value:
        raise ResultError(f"the task function returned no {objective.metric!r} (it returned "
                          f"{', '.join(map(repr, value)) or 'nothing'}): return the objective's metric, or fix "
                          f"the objective's metric.")
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ResultError(f"the task function returned {k}={v!r}, not a number.") from None
    if not math.isfinite(out[objective.metric]):
        raise ResultError(f"the task function returned {objective.metric}={out[objective.metric]}, which is not "
                          f"finite: the objective needs a number.")
    return out


def summary(values: dict, history: list[dict], objective: Objective) -> dict:
    """A user's function's summary (ablate.run.summary): `final_<k>` of what it returned
    and logged; `best_` and `best_epoch` of the objective, chosen on its validation
    counterpart (`val_acc` for `test_acc`) when the function logged one."""
    return run_summary(history, objective, {objective.history: objective.goal, objective.on_val: objective.goal},
                       returned=values)


def claim(cfg, job: Job, script: Path | None, tags: dict | None, resumable: bool):
    """The claim of a user's job: its settings, identity, objective and code."""
    def do() -> TrackedRun:
        run = TrackedRun.claim(job.settings, job.fingerprint, job.objective, source.parts(cfg, script), tags,
                               resumable)
        if job.identity.run_local:  # where and when it ran: a tag, not params (they are not its identity)
            run.extra_tags[tracking.RUN_LOCAL] = json.dumps(job.identity.run_local)[:8000]
        return run
    return do


class AppBody(Body):
    """An app's task function, as it is, inside a run's life: it trains and returns."""

    def __init__(self, fn, cfg, job: Job):
        self.fn, self.cfg, self.job = fn, cfg, job

    def params(self) -> dict:
        return self.job.identity.params

    def fit(self, run) -> dict:
        return summary(returned(self.fn(self.cfg), self.job.objective, self.cfg), [], self.job.objective)


def run_app(fn, cfg, hydra_cfg, script: Path | None, tags: dict | None = None) -> Result:
    """One job of an unchanged app, tracked from outside its task function."""
    job = check_app_job(cfg, hydra_cfg)
    result = execute(claim(cfg, job, script, tags, resumable=False), lambda: AppBody(fn, cfg, job))
    if not result.skipped:
        log.info(f"run {result.run_id}: {job.objective.metric} {result.objective:.4g} ({job.objective.direction})")
    return result


_JOB_TAGS: dict[str, str] = {}  # the running job's design tags, set by TrackedTask for a task that tracks itself


def job_tags(cfg) -> dict[str, str]:
    """A job's design tags: its config's `design` node when it has one, else what the
    ablation sweeper said (TrackedTask)."""
    if isinstance(cfg.get("design"), DictConfig) and cfg.design.get("name"):
        return tracking.design_tags(cfg)
    return dict(_JOB_TAGS)


class TrackedTask:
    """What the ablation sweeper hands the launcher in place of an app's task function:
    tracked by ablate when it does not track its own jobs (a plain `@hydra.main` app),
    and told its job's design tags either way. Picklable (joblib, submitit) when the task
    function is. `tags`: each job's design tags, by its overrides."""

    def __init__(self, fn, tags: dict[tuple[str, ...], dict[str, str]] | None = None):
        self.fn, self.tags = fn, dict(tags or {})
        try:  # the user's own function, under ablate.main's wrapper
            self.script = Path(inspect.getfile(inspect.unwrap(fn))).resolve()
        except TypeError:
            self.script = None

    def __call__(self, cfg):
        from hydra.core.hydra_config import HydraConfig
        die_with_sweep()  # in a parallel worker: this job ends when its sweep does
        hc = HydraConfig.get()
        tags = self.tags.get(tuple(OmegaConf.to_container(hc.overrides.task, resolve=False)), {})
        if tracks_itself(self.fn):
            _JOB_TAGS.clear()
            _JOB_TAGS.update(tags)
            try:
                return self.fn(cfg)
            finally:
                _JOB_TAGS.clear()
        return run_app(self.fn, cfg, hc, self.script, tags).objective


def tracks_itself(fn) -> bool:
    """True for a task function that runs its jobs through ablate (python -m ablate, ablate.main)."""
    return bool(getattr(fn, "__ablate_tracks__", False))
