"""Run: one MLflow run's life, whoever trains it (ablate's engine or a user's loop).

    claim     skip a FINISHED config, skip or wait for a live trainer of it, or pick
              the interrupted run to resume; nothing is written to the store yet
    start     create the run (tags, owner, heartbeat) or reopen the one to resume;
              two jobs that start one config together: the first one trains
    log       params once, each epoch's metrics once, through a store outage
    close     FINISHED with the summary; a signal closes it KILLED (a rerun resumes
              it); an exception FAILED, with its error

The client, not mlflow's fluent API: no atexit hook closes a run behind our back (as
FINISHED, or against a store that is down).
"""
from __future__ import annotations

import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from hydra.utils import to_absolute_path
from mlflow.entities import Param, RunData, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from ablate import errors, owners, source, stops, tracking
from ablate.metrics import Objective

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What a job left in the store: its objective value, the summary metrics
    (`final_test_acc`, `best_test_rmse`, `best_epoch`, ...) and the per-epoch history."""
    run_id: str
    param_count: int
    objective: float
    best_epoch: int
    summary: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    skipped: bool = False


def checkpoint_root(tracking_cfg) -> Path:
    """Where new runs' checkpoints go: `tracking.checkpoint_dir` (a relative one from the
    launch folder), else `<launch dir>/checkpoints`; the same with hydra.job.chdir=true
    and whatever the store, a tracking server's included."""
    given = tracking_cfg.get("checkpoint_dir") if tracking_cfg is not None else None
    return Path(to_absolute_path(str(Path(given).expanduser()))) if given else tracking.launch_dir() / "checkpoints"


def checkpoint_path(run, root: Path | None = None) -> Path:
    """A run's checkpoint file: the path its tag `ablate.checkpoint` recorded when it
    started, so a rerun from another folder or job directory finds it. A run from before
    the tag kept it beside its local artifacts, or under <launch dir>/checkpoints/<run
    id>/ (a server's artifact store); a new one goes to `root`/<run id>/checkpoint.pt."""
    if tagged := run.data.tags.get(tracking.CHECKPOINT):
        return Path(tagged)
    info = run.info
    parsed = urlparse(info.artifact_uri or "")
    if parsed.scheme == "file" or (parsed.scheme == "" and info.artifact_uri):  # local artifacts: the old place
        old = Path(unquote(parsed.path) if parsed.scheme else info.artifact_uri).parent / "checkpoint.pt"
        if old.exists() or root is None:
            return old
    return (root or tracking.launch_dir() / "checkpoints") / info.run_id / "checkpoint.pt"


class Busy(Exception):
    """Another job claimed this config a moment earlier: start over from `claim`."""


class TrackedRun:
    """One config's run in the store. `claim` first; then, unless `done` is set,
    `start`, `log_params`, `log_epoch` and `finish` inside `closing()`."""

    def __init__(self, cfg, fingerprint: str, objective: Objective, code: dict[str, str] | None = None,
                 tags: dict[str, str] | None = None, resumable: bool = True):
        """`cfg`: what holds ablate's settings (`tracking`, `force`): the job's config, or
        for an app without ablate's nodes, their defaults. `tags`: the job's place in a
        design (default: the config's `design` node). `resumable`: False for an app that
        keeps no checkpoint through ablate: its interrupted runs are closed, never resumed."""
        self.cfg, self.fp, self.objective = cfg, fingerprint, objective
        self.code = code if code is not None else source.parts(cfg)  # what the result depends on
        self.design = tags if tags is not None else tracking.design_tags(cfg)
        self.resumable = resumable
        self.extra_tags: dict[str, str] = {}  # set before start: more tags for a new run
        self._superseded: list[tuple[object, str]] = []  # (run, why): closed KILLED when this one starts
        self._checkpoint: Path | None = None
        self.uri, self.grace = tracking.resolve_uri(cfg.tracking.uri), cfg.tracking.grace_s
        self.exp_id = tracking.ensure_experiment(self.uri, cfg.tracking.experiment)
        self.client = MlflowClient(self.uri)
        self.done: Result | None = None    # set by claim: nothing to train
        self.resume = None                 # set by claim: the run to continue
        self.run = None
        self._logged: set[int] = set()
        self._before = RunData()

    # ------------------------------------------------------------------ claim

    @classmethod
    def claim(cls, cfg, fingerprint: str, objective: Objective, code: dict[str, str] | None = None,
              tags: dict[str, str] | None = None, resumable: bool = True) -> TrackedRun:
        """Decide what this job does with its config, writing nothing but design tags."""
        me = cls(cfg, fingerprint, objective, code, tags, resumable)
        previous = tracking.find_runs(me.client, me.exp_id, fingerprint)
        if not cfg.force:
            done = [r for r in previous if r.info.status == "FINISHED"]
            if "task" in cfg and (blank := [r for r in done if objective.column not in r.data.metrics]):
                log.warning(f"Not reusing run {blank[0].info.run_id}: it FINISHED this config without logging "
                            f"{objective.column} (task.metrics changed). Training it again in a new run.")
                done = [r for r in done if r not in blank]
            if done:
                if me.design and tracking.ARM not in done[0].data.tags:
                    for k, v in me.design.items():  # a run trained outside any design now serves this one
                        me.client.set_tag(done[0].info.run_id, k, v)
                me.done = me._stored(done[0])
                return me
            for r in previous:
                if (live := owners.alive(r, cfg.tracking.heartbeat_s))[0]:
                    if (result := me._busy(r, live[1])) is not None:
                        me.done = result
                        return me
                    previous = tracking.find_runs(me.client, me.exp_id, fingerprint)  # it died: resume it
                    break
            me.resume = me._to_resume(previous)
        return me

    def _to_resume(self, previous: list):
        """The unfinished run of this config to continue instead of starting a new one: one
        with a checkpoint first; else one killed before its first checkpoint (a preemption
        in epoch 1), restarted from epoch 0, so a requeued job still keeps one run per
        config. A FAILED run without a checkpoint stays as a record; a RUNNING one (kill -9)
        is closed KILLED, with the reason, when the new run starts."""
        unfinished = [r for r in previous if r.info.status in ("RUNNING", "KILLED", "FAILED")]  # none alive
        if not self.resumable:
            for r in unfinished:
                if r.info.status == "RUNNING":  # its owner is gone (claim asked): it will never finish
                    self._superseded.append((r, "interrupted; this app keeps no checkpoint through ablate, so a rerun "
                                                "of its config trains from the start in a new run"))
            return None
        for r in [r for r in unfinished if (why := source.changed(r.data.tags, self.code))]:
            if r.info.status != "FAILED" or checkpoint_path(r).exists():
                log.warning(f"Not resuming run {r.info.run_id} ({r.info.status}): {why}, and one run must not hold "
                            f"epochs of two codes. Training this config from epoch 0 in a new run.")
                self._superseded.append((r, f"not resumed: {why}"))
            unfinished.remove(r)
        with_file = [r for r in unfinished if self.cfg.tracking.checkpoints and checkpoint_path(r).exists()]
        resume = next(iter(with_file), next((r for r in unfinished if r.info.status == "KILLED"), None))
        for r in [r for r in unfinished if r.info.status == "RUNNING" and r is not resume and r not in with_file]:
            self._superseded.append((r, "killed before its first checkpoint; this config trains in another run"))
        return resume

    def _busy(self, run, why: str) -> Result | None:
        """Another live job trains this config: skip it (the default) or wait for it to
        finish (tracking.on_running=wait). None: it died while we waited; take it over."""
        if self.cfg.tracking.on_running != "wait":
            log.info(f"Skipping: run {run.info.run_id} ({run.info.run_name}) of this config is RUNNING, {why}. "
                     f"Set tracking.on_running=wait to wait for it.")
            return Result(run.info.run_id, 0, float("nan"), 0, skipped=True)
        log.info(f"Waiting: run {run.info.run_id} ({run.info.run_name}) of this config is RUNNING, {why}")
        while True:
            time.sleep(10)
            run = self.client.get_run(run.info.run_id)
            if run.info.status == "FINISHED":
                return self._stored(run)
            if not owners.alive(run, self.cfg.tracking.heartbeat_s)[0]:
                return None

    def _stored(self, run) -> Result:
        m, o = run.data.metrics, self.objective
        history = [{"epoch": h.step, o.history: h.value}
                   for h in self.client.get_metric_history(run.info.run_id, o.history)]
        value = m.get(o.column, float("nan"))
        if why := source.changed(run.data.tags, self.code):
            log.warning(f"Reusing run {run.info.run_id} ({run.info.run_name}), FINISHED with this config by other "
                        f"code: {why}. Its result ({o.column} {value:.4g}) stands for this job; retrain it with "
                        f"this code with force=true.")
        else:
            log.info(f"Skipping: run {run.info.run_id} ({run.info.run_name}) already FINISHED with this "
                     f"config ({o.column} {value:.4g}). Use force=true to rerun.")
        summary = {k: v for k, v in m.items() if k.startswith(("best_", "final_"))}
        return Result(run.info.run_id, int(m.get("param_count", 0)), value, int(m.get("best_epoch", 0)),
                      summary, history, skipped=True)

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Create the run, or reopen the one to resume. Raises Busy when another job
        created one for this config a moment earlier (that one trains)."""
        for old, why in self._superseded:
            self.supersede(old, why)
        self._superseded = []
        if self.resume is not None:
            self.run = self.resume
            self.client.update_run(self.run.info.run_id, status="RUNNING")
            if tracking.ERROR in self.run.data.tags:  # a resumed run's old error is gone
                self.client.delete_tag(self.run.info.run_id, tracking.ERROR)
            if os.environ.get(tracking.ENV_PARENT):  # it now belongs to the sweep that finishes it
                self.client.set_tag(self.run.info.run_id, "mlflow.parentRunId", os.environ[tracking.ENV_PARENT])
                self.client.set_tag(self.run.info.run_id, tracking.SWEEP_ID, os.environ.get(tracking.ENV_SWEEP_ID, ""))
            for k, v in owners.owner_tags().items():
                self.client.set_tag(self.run.info.run_id, k, v)
            self._logged = {m.step for m in self.client.get_metric_history(self.run.info.run_id,
                                                                           self.objective.history)}
            self._before = self.run.data  # MLflow refuses to log a param twice
            return
        overrides = tracking.job_overrides()
        tags = {tracking.FINGERPRINT: self.fp, tracking.OVERRIDES: " ".join(overrides),
                **self.design, **owners.owner_tags(), **self.objective.tags(),
                **source.tags(self.code), **self.extra_tags}
        if os.environ.get(tracking.ENV_SWEEP_ID):
            tags[tracking.SWEEP_ID] = os.environ[tracking.ENV_SWEEP_ID]
        if os.environ.get(tracking.ENV_PARENT):
            tags["mlflow.parentRunId"] = os.environ[tracking.ENV_PARENT]
        if commit := tracking.git_commit():
            tags["mlflow.source.git.commit"] = commit
        # the user, source and the like that mlflow.start_run would add
        name = tracking.run_name(overrides)
        if tracking.ARM in self.design and not name.startswith("arm="):  # an app's job: its arm is a tag
            name = f"arm={self.design[tracking.ARM]}," + (name if name != "defaults" else "")
        run = self.client.create_run(self.exp_id, run_name=name.rstrip(","), tags=resolve_tags(tags))
        rival = owners.first_claim(self.client, self.exp_id, self.fp, run, self.cfg.tracking.heartbeat_s)
        if rival is not None:
            self.client.delete_run(run.info.run_id)  # two jobs started this config together: the first one trains
            self.done = self._busy(rival, "started a moment earlier")
            raise Busy(rival.info.run_id)
        self.run = run
        if self.cfg.tracking.checkpoints:  # recorded, so a rerun from any folder finds it
            self._checkpoint = checkpoint_root(self.cfg.tracking) / run.info.run_id / "checkpoint.pt"
            self.client.set_tag(run.info.run_id, tracking.CHECKPOINT, str(self._checkpoint))

    def supersede(self, old, why: str) -> None:
        """Close an earlier run of this config that will never go on: KILLED if it was
        left RUNNING, with the reason as the tag `ablate.superseded`."""
        rid = old.info.run_id
        self.client.set_tag(rid, tracking.SUPERSEDED, why[:5000])
        if old.info.status == "RUNNING":
            self.client.set_terminated(rid, "KILLED")
        (log.debug if why.startswith("not resumed:") else log.info)(f"Closed run {rid} ({old.info.run_name}): {why}")

    def drop_resume(self, why: str) -> None:
        """The run picked to resume cannot be resumed (its checkpoint does not load):
        it is closed with the reason, and this job starts the config afresh."""
        log.warning(f"Not resuming run {self.resume.info.run_id}: {why}. Training this config from epoch 0 in a "
                    f"new run; the old one is closed (tag {tracking.SUPERSEDED}).")
        self._superseded.append((self.resume, f"not resumed: {why}"))
        self.resume = None

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def checkpoint(self) -> Path | None:
        if not self.cfg.tracking.checkpoints:
            return None
        if self._checkpoint is None:
            self._checkpoint = checkpoint_path(self.run, checkpoint_root(self.cfg.tracking))
        return self._checkpoint

    # ------------------------------------------------------------------ log

    def log_params(self, params: dict, config_text: str | None = None) -> None:
        """The params this run does not have yet (a resumed run has them), `param_count`
        as a metric, and the resolved config as an artifact, once."""
        new = [Param(tracking.param_key(k), tracking.param_value(v)) for k, v in params.items()
               if tracking.param_key(k) not in self._before.params]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params a request
            tracking.ride_out("logging params", lambda batch=new[i:i + 100]: self.client.log_batch(
                self.run_id, params=batch), self.grace, self.uri)
        if "param_count" in params and "param_count" not in self._before.metrics:
            self.client.log_metric(self.run_id, "param_count", params["param_count"])
        if config_text is not None and self.resume is None:
            self.client.log_text(self.run_id, config_text, "config.yaml")

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """One epoch's metrics, with a heartbeat, once: through an outage of up to
        tracking.grace_s, and never twice (a retry first asks whether the try before
        wrote, then lost its reply)."""
        if epoch in self._logged:
            return
        tries = 0

        def attempt():
            nonlocal tries
            tries += 1
            if tries > 1 and any(m.step == epoch for m in self.client.get_metric_history(
                    self.run_id, self.objective.history)):
                return
            self.client.log_batch(self.run_id, metrics=tracking.metrics(metrics, epoch),
                                  tags=[RunTag(tracking.HEARTBEAT, str(int(time.time())))])
        tracking.ride_out(f"logging epoch {epoch}", attempt, self.grace, self.uri)
        self._logged.add(epoch)

    def finish(self, summary: dict) -> None:
        """The summary metrics, then FINISHED."""
        tracking.ride_out("finishing the run", lambda: (
            self.client.log_batch(self.run_id, metrics=tracking.metrics(summary, None)),
            self.client.set_terminated(self.run_id, "FINISHED")), self.grace, self.uri)

    # ------------------------------------------------------------------ close

    @contextmanager
    def closing(self):
        """All work after the run exists: a signal closes the run KILLED (a requeued or
        rerun job resumes it); a crash closes it FAILED with its error; a store outage
        longer than the grace leaves it as it is, with its checkpoint."""
        try:
            with stops.signals_to(stops.sigterm, signal.SIGTERM):
                yield self
        except tracking.StoreError:
            raise  # the store is down: nothing can be recorded there; the checkpoint is kept
        except (KeyboardInterrupt, stops.Interrupted, SystemExit) as exc:
            # SystemExit: submitit's preemption handler requeues the job and exits from
            # inside training. KILLED, so the requeued job resumes it.
            # a busy sqlite store ("database is locked", seen in CI with submitit's jobs) is
            # waited out briefly; never does it replace the stop (a requeue needs it)
            try:
                tracking.ride_out("closing the run as KILLED", lambda: self.client.set_terminated(
                    self.run_id, "KILLED"), min(self.grace, 20.0), self.uri)
            except Exception as close_exc:
                log.warning(f"run {self.run_id} could not be closed as KILLED ({errors.one_line(close_exc)[:160]}); "
                            f"the next job of its config closes it")
            exc.ablate_run = f"{self.run_id} ({self.run.info.run_name})"  # for the one line that says so
            raise
        except Exception as exc:
            exc.ablate_run = f"{self.run_id} ({self.run.info.run_name})"
            try:
                with tracking.quick_requests():
                    self.client.set_tag(self.run_id, tracking.ERROR, f"{type(exc).__name__}: {exc}"[:5000])
                    self.client.set_terminated(self.run_id, "FAILED")
            except Exception:  # the store cannot take it (a full disk): its owner's exit closes the run later
                if errors.disk_full(exc) is None:
                    raise
            raise


# ----------------------------------------------------------------------------- the one life of a run

class Body:
    """What trains inside a run's life (ablate's engine, a user's loop, a user's app):
    its state can be reset to epoch 0, or loaded from a checkpoint to resume; it names
    its params and trains, returning the run's summary metrics."""
    n_params: int = 0
    config_text: str | None = None

    @property
    def history(self) -> list[dict]:  # the epochs its state holds (a loaded checkpoint's)
        return []

    def params(self) -> dict:
        raise NotImplementedError

    def reset(self) -> None:
        """Back to epoch 0 (after a checkpoint that did not load, or a lost race)."""

    def load(self, path: Path, run_id: str | None = None) -> None:
        """Load the checkpoint of run `run_id` to resume from; raise if it does not load."""

    def started(self, run: TrackedRun) -> None:
        """The run exists (new, or reopened to resume)."""

    def fit(self, run: TrackedRun) -> dict:
        raise NotImplementedError


def execute(claim, make_body) -> Result:
    """The one life of a run, whoever trains it: claim the config (a FINISHED one is
    skipped; a live one skipped or waited for), build the body, load the checkpoint of
    the run to resume (one that does not load closes that run and starts afresh), start
    the run (a rival that claimed it a moment earlier wins, and this starts over), then
    log params, replay the epochs the checkpoint holds, train, and close the run.
    `claim()` -> TrackedRun; `make_body()` -> Body, called once, only if anything trains."""
    body = None
    while True:
        run = claim()
        if run.done is not None:
            return run.done
        if body is None:
            body = make_body()
        else:
            body.reset()
        if run.resume is not None and run.cfg.tracking.checkpoints and (
                saved := checkpoint_path(run.resume)).exists():
            try:
                body.load(saved, run.resume.info.run_id)
            except Exception as exc:  # a model whose shapes changed, a torn, foreign or unsafe file: never stuck
                run.drop_resume(f"its checkpoint in {saved.parent} does not load ({' '.join(str(exc).split())[:240]})")
                body.reset()
        try:
            run.start()
        except Busy:
            if run.done is not None:
                return run.done
            continue  # the rival died before training: claim again
        break
    body.started(run)
    with run.closing():
        run.log_params(body.params(), body.config_text)
        for past in body.history:  # epochs the checkpoint holds but an outage kept from the store
            run.log_epoch(past["epoch"], {k: v for k, v in past.items() if k != "epoch"})
        values = body.fit(run)
        run.finish(values)
    return Result(run.run_id, body.n_params, values[run.objective.column], int(values.get("best_epoch", 0)),
                  values, body.history)


def summary(history: list[dict], objective: Objective, goals: dict[str, str], returned: dict | None = None) -> dict:
    """The run's summary metrics, for the engine and a user's loop alike.

    history: per-epoch dicts ({"epoch": 1, "test_acc": 97.1, ...}); goals: per-epoch key
    -> "max" | "min" for the keys summarised as `final_<k>` and `best_<k>`; returned: what
    a user's function returned (each becomes `final_<k>` and wins over the last logged
    value; with it, every logged key also gets its `final_<k>`).

    `best_epoch` is the epoch whose `objective.on_val` is best (the validation
    metric, when it was logged; else the objective's own). When the validation split
    chose, `best_<k>` is every key's value at that epoch, as a val-monitored checkpoint
    would give; when the test split chose, each key's best by its own goal (optimistic)."""
    out: dict[str, float] = {}
    if returned is not None:
        out.update({f"final_{k}": v for h in history for k, v in h.items() if k != "epoch"})
        out.update({f"final_{k}": v for k, v in returned.items()})
    chooser = objective.on_val if any(objective.on_val in h for h in history) else objective.history
    logged = [h for h in history if chooser in h]
    if not logged:  # nothing logged per epoch: the returned value is the only one
        out[f"best_{objective.history}"] = out[f"final_{objective.history}"]
        out["best_epoch"] = 0
        return out
    best = objective.best([h[chooser] for h in logged])
    at = next(h for h in logged if h[chooser] == best)
    out["best_epoch"] = at["epoch"]
    for key, goal in goals.items():
        values = [h[key] for h in history if key in h]
        if not values:  # only returned (a test run once, at the end): that value is its best
            if f"final_{key}" in out:
                out.setdefault(f"best_{key}", out[f"final_{key}"])
            continue
        out.setdefault(f"final_{key}", values[-1])
        if chooser != objective.history:
            out[f"best_{key}"] = at.get(key, math.nan)
        else:
            out[f"best_{key}"] = max(values) if goal == "max" else min(values)
    return out
