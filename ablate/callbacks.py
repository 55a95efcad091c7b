"""Sweep-level work, in the parent process, through Hydra's callback hooks:
check every job before any starts, create the store once (parallel jobs racing
sqlite's schema migration can corrupt a fresh mlflow.db), open a parent run,
and close the sweep with a summary of what failed and the report."""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import uuid
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ablate import config, job, tracking
from ablate.errors import AblateError

log = logging.getLogger(__name__)


def sweep_jobs(task_overrides: list[str]) -> tuple[list[list[str]], list[str]]:
    """Every job's overrides, as Hydra's basic sweeper will expand them, and the swept keys."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [job for batch in batches for job in batch], swept


def check_jobs(jobs: list[list[str]]) -> list[str]:
    """Compose and check each job as it will run (job.check: values, data, model); the
    first bad one stops the sweep before any training, in one line, with exit 2.
    Returns the jobs' fingerprints, which name their runs in MLflow."""
    fingerprints = []
    for overrides in jobs:
        try:
            fingerprints.append(job.check(config.compose(overrides)))
        except AblateError as exc:
            print(f"ablate: error in job [{' '.join(overrides)}]: {exc} No job was started.", file=sys.stderr)
            sys.exit(2)
    return fingerprints


def parallel_jobs(launcher: DictConfig, n_jobs: int) -> int:
    """How many jobs share this machine's cores at once, so each takes its share."""
    if "n_jobs" in launcher:  # joblib
        return (os.cpu_count() or 1) if launcher.n_jobs == -1 else launcher.n_jobs
    if str(launcher.get("_target_", "")).endswith("LocalLauncher"):
        return n_jobs  # submitit_local starts every job of the sweep at once
    return 1  # basic launcher: one after another; SLURM: each job has its own CPUs


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class AblateCallback(Callback):
    def __init__(self) -> None:
        self.parent_id = None
        self.client = None
        self.cfg = None
        self.fingerprints: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        jobs, swept = sweep_jobs(config.hydra.overrides.task)
        self.fingerprints = check_jobs(jobs)
        uri = tracking.resolve_uri(config.tracking.uri)
        exp_id = tracking.ensure_experiment(uri, config.tracking.experiment)
        self.client, self.cfg = MlflowClient(uri), config
        sweep_id = uuid.uuid4().hex[:12]
        n_jobs = parallel_jobs(config.hydra.launcher, len(jobs))
        parent = self.client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags={
            tracking.SWEEP_ID: sweep_id,
            "ablate.command": " ".join(["python -m ablate", *sys.argv[1:]]),
            "ablate.jobs": str(len(jobs)),
        })
        self.parent_id = parent.info.run_id
        os.environ.update({
            tracking.ENV_SWEEP_ID: sweep_id, tracking.ENV_PARENT: self.parent_id,
            tracking.ENV_SWEEP_KEYS: ",".join(swept),
            tracking.ENV_JOBS: str(n_jobs),
        })
        log.info(f"Sweep {sweep_id}: {len(jobs)} jobs, parent run {self.parent_id}, store {uri}")
        # Hydra skips on_multirun_end when a job raised; atexit still closes the sweep.
        atexit.register(self.finish)
        # SIGTERM to the sweep would otherwise orphan joblib's workers, which train on;
        # as KeyboardInterrupt, joblib stops them (their runs resume on the next try).
        signal.signal(signal.SIGTERM, _interrupt)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.finish()

    def finish(self) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        runs = self.client.search_runs(
            [self.client.get_run(parent_id).info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent_id}'")
        failed = [r for r in runs if r.info.status != "FINISHED"]
        if failed:
            log.error(f"{len(failed)} of {len(runs)} jobs did not finish:")
        for r in failed:
            log.error(f"  {r.info.status}: {r.info.run_name} ({r.info.run_id}): "
                      f"{r.data.tags.get(tracking.ERROR, '')}")
        status = "FAILED" if failed else "FINISHED"
        log.info(f"Sweep done: {len(runs) - len(failed)} finished, {len(failed)} failed "
                 f"(runs skipped as already finished are not counted here).")
        if self.cfg.report.auto and not failed:
            try:
                from ablate import report  # pandas, scipy, matplotlib: only when needed
                out = Path(self.cfg.report.out or Path(self.cfg.hydra.sweep.dir) / "report")
                report.for_sweep(self.client, parent_id, self.cfg, self.fingerprints, out)
            except Exception as exc:  # the runs are safe in MLflow; the report can be rebuilt
                log.error(f"Report failed: {exc}. Rebuild it with `python -m ablate.report`.")
        self.client.set_terminated(parent_id, status)
