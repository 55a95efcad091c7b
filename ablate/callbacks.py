"""Sweep-level work, in the parent process, through Hydra's callback hooks:
check every job before any starts, create the store once (parallel jobs racing
sqlite's schema migration can corrupt a fresh mlflow.db), open a parent run,
and close the sweep with a summary of what failed and the report."""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ablate import app, designs, errors, owners, preflight, stops, tracking
from ablate.errors import AblateError
from ablate.metrics import Objective

log = logging.getLogger(__name__)


# Keys that hold for a whole sweep (its store, experiment and report): one value per sweep.
SWEEP_LEVEL = ("tracking", "report")


def _stop(message: str) -> None:
    print(f"ablate: {message} No job was started.", file=sys.stderr)
    sys.exit(2)


def check_plan(sweep: designs.Plan, check: preflight.Checker) -> tuple[list[str], list[Objective]]:
    """The design (every arm composes with the command line's own overrides, every factor
    changes something), then each job as it will run (`check`: values, data, model,
    objective). The first problem stops the sweep before any training, in one line, with
    exit 2. Returns the jobs' fingerprints, which name their runs in MLflow, and the
    objectives they are scored by (one, for a design: its effects compare one metric)."""
    if sweep.design is not None:
        try:
            designs.check_design(sweep.design, check.fingerprint, sweep.common)
        except AblateError as exc:
            _stop(f"design {sweep.design.name}: {exc}")
    fingerprints, objectives = [], []
    for overrides in sweep.jobs:
        try:
            fp, objective = check(overrides)
        except AblateError as exc:
            _stop(f"error in job [{' '.join(overrides)}]: {exc}")
        fingerprints.append(fp)
        objectives.append(objective)
    objectives = list(dict.fromkeys(objectives))
    if sweep.design is not None and len(objectives) > 1:
        _stop(f"design {sweep.design.name}: its arms are scored by different objectives "
              f"({'; '.join(o.describe() for o in objectives)}); a design compares one. Set objective.* in the "
              f"baseline, not in a factor or a sweep key.")
    if sweep.policy is not None and objectives:
        try:
            sweep.policy.for_objective(objectives[0])
        except AblateError as exc:
            _stop(str(exc))
    return fingerprints, objectives


def parallel_jobs(launcher: DictConfig, n_jobs: int) -> int:
    """How many jobs share this machine's cores at once, so each takes its share."""
    if "n_jobs" in launcher:  # joblib
        return (os.cpu_count() or 1) if launcher.n_jobs == -1 else launcher.n_jobs
    if str(launcher.get("_target_", "")).endswith("LocalLauncher"):
        return n_jobs  # submitit_local starts every job of the sweep at once
    return 1  # basic launcher: one after another; SLURM: each job has its own CPUs


def _quiet_sacct(record: logging.LogRecord) -> bool:
    """submitit polls `sacct`, which fails on a cluster without an accounting database
    (our one-machine test cluster) and warns on every poll; job states come from the
    result files then."""
    return "Bypassing sacct error" not in record.getMessage()


def _interrupt(signum, frame):
    exc = KeyboardInterrupt(f"signal {signum}")
    exc.ablate_signal = signum  # which signal it was, for the exit code (stops.stopped)
    raise exc


_OPEN: list[AblateCallback] = []  # the sweep open in this process (the callback's, or the sweeper's own)


def open_sweep() -> AblateCallback | None:
    return _OPEN[-1] if _OPEN else None


class AblateCallback(Callback):
    """ablate's sweep-level work. Hydra calls it for an app with `ablate_study` (or
    ablate's conf) in its defaults; the ablation sweeper opens one itself for an app
    without (ablate.app, Tier 0)."""

    def __init__(self) -> None:
        self.parent_id = None
        self.client = None
        self.cfg = None
        self.fingerprints: list[str] = []
        self.design_file: Path | None = None
        self.objective = Objective()
        self.sweep_id: str | None = None
        self.foreign = False  # another sweeper (Optuna, ...): its jobs are not known ahead
        self.sweep_dir: Path | None = None
        self.job_errors: dict[str, str] = {}  # failed jobs' errors, as the sweeper saw them, by run name

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        errors.report_hydras_errors()  # composed: the sweep's jobs report their crashes Hydra's way
        logging.getLogger("submitit").addFilter(_quiet_sacct)
        settings = app.settings(config, config.hydra)
        self.foreign = not designs.plans(config.hydra.sweeper)
        try:
            task_overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)  # `${...}` as given
            sweep = designs.plan(config.hydra.sweeper, task_overrides, "design" in config) \
                if not self.foreign else designs.Plan([], [])
        except AblateError as exc:
            _stop(str(exc))
        swept = sweep.swept
        if shared := [k for k in swept if k.split(".")[0] in SWEEP_LEVEL]:
            _stop(f"{shared[0]} varies within this sweep, but a sweep has one store, one experiment, one parent "
                  f"run and one report, so its jobs would scatter. Run one sweep per value instead (e.g. a shell "
                  f"loop over `{shared[0]}=<value>`).")
        self.fingerprints, objectives = check_plan(sweep, preflight.Checker(config, sweep.design is not None))
        try:
            from ablate.stats import check_sesoi
            sesoi = check_sesoi(settings.report.get("sesoi"), "report.sesoi")
        except AblateError as exc:
            _stop(str(exc))
        if sweep.policy is not None and sweep.policy.until == "settled" and sesoi is None:
            _stop("hydra.sweeper.seeds.until=settled stops a comparison when it is decisive or equivalent, and "
                  "equivalent needs a smallest effect of interest: set report.sesoi=<size in the objective's units>.")
        self.objective = objectives[0] if objectives else Objective()  # what the UI links sort by
        uri = tracking.resolve_uri(settings.tracking.uri)
        try:
            self._open(config, settings, sweep, uri, sesoi)
        except AblateError as exc:
            _stop(str(exc))
        except Exception as exc:  # MLflow's own errors, an OSError: the sweep has no parent run, so no jobs
            if self.parent_id is not None:
                with contextlib.suppress(Exception):
                    self.client.set_terminated(self.parent_id, "FAILED")
            _stop(f"tracking.uri={uri}: the sweep's parent run could not be created: {type(exc).__name__}: "
                  f"{errors.one_line(exc)[:300]}. Fix the store (or tracking.uri) and run the same command again.")

    def _open(self, config: DictConfig, settings, sweep: designs.Plan, uri: str, sesoi) -> None:
        """The sweep's experiment and parent run, its design file, and the variables
        that tell its jobs they belong to it."""
        jobs, swept = sweep.jobs, sweep.swept
        tracking.check_store(uri, settings.tracking.experiment)
        exp_id = tracking.ensure_experiment(uri, settings.tracking.experiment)
        self.client, self.cfg = MlflowClient(uri), settings
        self.sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = self.sweep_id = uuid.uuid4().hex[:12]
        n_jobs = parallel_jobs(config.hydra.launcher, len(jobs))
        command = ["python", "-m", "ablate"] if preflight.mode(config) == preflight.ENGINE else ["python", sys.argv[0]]
        tags = {tracking.SWEEP_ID: sweep_id, "ablate.command": shlex.join([*command, *sys.argv[1:]]),
                "ablate.jobs": str(len(jobs)), tracking.SWEPT: ",".join(swept), tracking.OWNER: owners.owner()}
        for run_id in owners.close_orphaned_sweeps(self.client, exp_id):
            log.warning(f"Closed sweep run {run_id} as KILLED: its sweep process is gone.")
        if sweep.design is not None:
            tags.update({tracking.DESIGN: sweep.design.name, tracking.DESIGN_KIND: sweep.design.kind})
        name = f"{sweep.design.name} {sweep_id}" if sweep.design else f"sweep {sweep_id}"
        parent = self.client.create_run(exp_id, run_name=name, tags=tags)
        self.parent_id = parent.info.run_id
        self.design_file = None
        if sweep.design is not None:  # the design and each job's arm; an adaptive sweeper adds rounds to it
            spec = designs.to_json(sweep.design, sweep.arms, self.fingerprints, self.objective, sesoi, swept)
            self.client.log_text(self.parent_id, spec, tracking.DESIGN_FILE)
            self.design_file = self.sweep_dir / tracking.DESIGN_FILE
            self.design_file.parent.mkdir(parents=True, exist_ok=True)
            self.design_file.write_text(spec)
        os.environ.update({
            tracking.ENV_SWEEP_ID: sweep_id, tracking.ENV_PARENT: self.parent_id,
            tracking.ENV_SWEEP_KEYS: ",".join(swept),
            tracking.ENV_JOBS: str(n_jobs), tracking.ENV_SWEEP_PID: str(os.getpid()),
        })
        count = "its sweeper's" if self.foreign else len(jobs)
        log.info(f"Sweep {sweep_id}: {count} jobs, parent run {self.parent_id}, store {uri}")
        _OPEN.append(self)
        stops.ON_STOP.append(self.stop)
        # Hydra skips on_multirun_end when a job raised; atexit still closes the sweep.
        atexit.register(self.finish)
        # SIGTERM to the sweep would otherwise orphan joblib's workers, which train on;
        # as KeyboardInterrupt, joblib stops them (their runs resume on the next try).
        signal.signal(signal.SIGTERM, _interrupt)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.finish():
            sys.exit(1)  # a job failed, never reached MLflow, or the report failed: say so in the exit code

    def _outcome(self, exp_id: str) -> tuple[list, list, list[str]]:
        """Every job of the sweep by its config: its newest run FINISHED (trained now or
        reused), not FINISHED, or none at all (the job failed before its run existed).
        Another sweeper's jobs were not known ahead: they are the runs it started."""
        if self.foreign:
            runs = self.client.search_runs([exp_id], f"tags.`{tracking.SWEEP_ID}` = '{self.sweep_id}'",
                                           max_results=50_000)
            self.fingerprints = [r.data.tags[tracking.FINGERPRINT] for r in runs]
        wanted, newest = set(self.fingerprints), {}
        for r in self.client.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=50_000):
            fp = r.data.tags.get(tracking.FINGERPRINT)
            if fp in wanted and fp not in newest:
                newest[fp] = r
        fps = list(dict.fromkeys(self.fingerprints))
        done = [newest[fp] for fp in fps if fp in newest and newest[fp].info.status == "FINISHED"]
        failed = [newest[fp] for fp in fps if fp in newest and newest[fp].info.status != "FINISHED"]
        return done, failed, [fp for fp in fps if fp not in newest]

    def _close(self) -> str | None:
        parent_id, self.parent_id = self.parent_id, None
        if self in _OPEN:
            _OPEN.remove(self)
        if self.stop in stops.ON_STOP:
            stops.ON_STOP.remove(self.stop)
        return parent_id

    def stop(self, why: str) -> str | None:
        """Ctrl-C or SIGTERM stopped the sweep: its parent run is KILLED with the reason,
        with no summary or report (a rerun of the command goes on: finished jobs are
        reused, the interrupted one resumes). Returns what it closed."""
        if self.parent_id is None:
            return None
        parent_id = self._close()
        try:
            with tracking.quick_requests():
                self.client.set_tag(parent_id, tracking.ERROR, why)
                self.client.set_terminated(parent_id, "KILLED")
        except Exception as exc:
            log.warning(f"sweep run {parent_id} could not be closed ({errors.one_line(exc)[:160]})")
        return f"sweep run {parent_id}"

    def finish(self) -> bool:
        """Close the sweep: summary, report, links, the parent run's status. True if
        anything went wrong (a job failed or never ran, or the report failed)."""
        if self.parent_id is None:
            return False
        parent_id = self._close()
        # read from the sweep folder: at exit MLflow can no longer download artifacts
        spec = json.loads(self.design_file.read_text()) if self.design_file else None
        if spec is not None:  # an adaptive study's rounds added jobs to the first round's
            self.fingerprints = list(dict.fromkeys([*self.fingerprints, *spec["fingerprints"]]))
        try:
            with tracking.quick_requests():
                done, failed, missing = self._outcome(self.client.get_run(parent_id).info.experiment_id)
        except Exception as exc:  # the store is down at the end: say what the jobs said, and how to go on
            log.error(f"Sweep done, but the store ({self.client.tracking_uri}) did not answer: "
                      f"{errors.one_line(exc)[:160]}. Its runs are as the jobs left them; run the same command "
                      f"again once the store is back: finished jobs are reused, the rest resume.")
            for name, e in self.job_errors.items():
                log.error(f"  {name}: {e}")
            return True
        # skipped because another live job trains that config (tracking.on_running=skip): not a failure
        elsewhere = [r for r in failed if owners.alive(r, self.cfg.tracking.heartbeat_s)[0]]
        failed = [r for r in failed if r not in elsewhere]
        if failed or missing:
            log.error(f"{len(failed) + len(missing)} of {len(done) + len(failed) + len(missing)} jobs did not finish:")
        errors_of = dict(self.job_errors)
        for r in failed:  # the run's own error tag; else (the store was down as it failed) the job's
            why = r.data.tags.get(tracking.ERROR) or errors_of.get(r.info.run_name) or \
                "no error was recorded (the job was killed?)"
            errors_of.pop(r.info.run_name, None)
            log.error(f"  {r.info.status}: {r.info.run_name} ({r.info.run_id}): {why}")
        if missing:
            log.error(f"  {len(missing)} job(s) failed before their MLflow run existed"
                      + (":" if errors_of else f", and returned no error: their logs are under {self.sweep_dir}/"))
            for name, e in list(errors_of.items())[:len(missing)]:
                log.error(f"    {name}: {e}")
        reused = sum(r.data.tags.get("mlflow.parentRunId") != parent_id for r in done)
        log.info(f"Sweep done: {len(done)} finished ({reused} of them reused from earlier runs), {len(failed)} "
                 f"failed, {len(missing)} never reached MLflow"
                 + (f", {len(elsewhere)} still training in another job." if elsewhere else "."))
        report_failed = False
        if self.foreign and done:
            log.info(f"Report: {len(done)} trials of another sweeper; compare them with `python -m ablate.report "
                     f"--sweep-id {self.sweep_id}`.")
        elif self.cfg.report.auto and done:  # failed runs show in the report
            try:
                from ablate import report  # pandas, scipy, matplotlib: only when needed
                out = Path(self.cfg.report.out or self.sweep_dir / "report")
                report.for_sweep(self.client, parent_id, self.cfg, self.fingerprints, out, spec)
            except Exception as exc:  # the runs are safe in MLflow; the report can be rebuilt
                report_failed = True
                log.error(f"Report failed: {' '.join(str(exc).split())[:300]}. Rebuild it with "
                          f"`python -m ablate.report`.")
        self.show_where(parent_id)
        bad = bool(failed or missing or report_failed)
        self.client.set_terminated(parent_id, "FAILED" if bad else "FINISHED")
        return bad

    def show_where(self, parent_id: str) -> None:
        """Links that open MLflow's UI on this sweep's runs (its own and the ones it
        skipped as already finished), as a shared view of the runs table."""
        from ablate import ui
        try:
            parent = self.client.get_run(parent_id)
            exp_id = parent.info.experiment_id
            found = tracking.runs_of(self.client, exp_id, self.fingerprints)
            key = ui.publish(self.client, exp_id, parent.data.tags[tracking.SWEEP_ID], found,
                             tracking.swept_keys(parent), self.objective)
            base, serve = ui.ui_base(self.client.tracking_uri)
            urls = ui.links(base, exp_id, key, found)
            log.info(f"MLflow UI, this sweep's runs: {urls['runs']}")
            log.info(f"MLflow UI, compared: {urls['compare']}")
            if serve:
                log.info("  (serve the store first: python -m ablate.ui)")
        except Exception as exc:  # links are a convenience; the runs are safe
            log.warning(f"No MLflow UI links: {exc}")
