"""Sweep: what the ablation sweeper (hydra_plugins/ablate_sweeper, a thin Hydra plugin
over this module) does with a design: the jobs of its plan, checked before any starts
(ablate.preflight) and tracked (a task function that does not track itself is wrapped:
ablate.app.TrackedTask); finished configs skipped before launch; an adaptive study in
rounds decided from the results in MLflow (ablate.adaptive); the sweep's parent run,
summary and report (ablate.callbacks), opened here when the app's config has no ablate
callback of its own."""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablate import adaptive, app, callbacks, designs, preflight, source, tracking

log = logging.getLogger(__name__)


def finished(uri: str, experiment: str, fingerprints: list[str], code: str | None) -> set[str]:
    """The fingerprints among these that have a FINISHED run of this code (`code`: its
    `ablate.code` digest) in the store. A run of other code is not skipped here: its job
    then says, in its own line, which files changed (and reuses it, as any job does)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    wanted, done = set(fingerprints), set()
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50_000):
        if (fp := r.data.tags.get(tracking.FINGERPRINT)) in wanted and r.data.tags.get(source.TAG) == code:
            done.add(fp)
    return done


def code_of(sweeper, overrides: list[str]) -> str:
    """The `ablate.code` digest a job of this sweep will record (ablate.source)."""
    with preflight.as_job(sweeper.config, overrides) as (cfg, _):
        if preflight.mode(sweeper.config) == preflight.ENGINE:
            return source.tags(source.parts(cfg))[source.TAG]
        return source.tags(source.parts(cfg, getattr(sweeper.task, "script", None)))[source.TAG]


def run(sweeper, arguments: list[str]) -> list:
    """The sweep of `arguments` (the command line's task overrides) by `sweeper`."""
    cfg = sweeper.config
    session = callbacks.open_sweep()
    own = session is None
    if own:  # an app without ablate's callback (Tier 0): the sweep-level work is done here
        session = callbacks.AblateCallback()
        session.on_multirun_start(cfg)
    failed = False
    try:
        return _sweep(sweeper, session, arguments)
    except BaseException:
        failed = True
        raise
    finally:
        if own and session.finish() and not failed:
            sys.exit(1)  # a job failed, never reached MLflow, or the report failed: say so in the exit code


def _sweep(sweeper, session, arguments: list[str]) -> list:
    cfg = sweeper.config
    plan = designs.plan(cfg.hydra.sweeper, arguments, "design" in cfg)
    sweeper.job_idx = 0
    sweep_dir = Path(cfg.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
    task = sweeper.task if isinstance(sweeper.task, app.TrackedTask) else None
    if task is not None:  # the app's jobs learn their arm from their overrides
        task.tags.update({tuple(j): designs.tags_of(plan.design, a) for j, a in zip(plan.jobs, plan.arms, strict=True)})
    if plan.adaptive:
        return in_rounds(sweeper, session, plan, sweep_dir, task)
    log.info(f"Design {plan.design.name} ({plan.design.kind}): {len(designs.arms(plan.design))} arms, "
             f"{len(plan.jobs)} jobs")
    jobs = plan.jobs
    settings = session.cfg
    if not settings.force:
        done = finished(session.client.tracking_uri, settings.tracking.experiment, session.fingerprints,
                        code_of(sweeper, plan.jobs[0]))
        jobs = [j for j, fp in zip(plan.jobs, session.fingerprints, strict=True) if fp not in done]
        if len(jobs) < len(plan.jobs):
            log.info(f"Skipping {len(plan.jobs) - len(jobs)} of {len(plan.jobs)} jobs: their configs already have a "
                     f"FINISHED run (force=true reruns them)")
    results = sweeper.launch(jobs) if jobs else []
    said(results, session)
    return [results]


def said(results, session) -> None:
    """Failed jobs are not raised (that would print Hydra's traceback for what is often a
    mistake in the app's config): each one's error, in one line, goes to the sweep's
    summary, which counts it, and the sweep exits 1."""
    for r in results:
        if r.status.name == "FAILED":
            exc = r._return_value
            session.job_errors[tracking.run_name(list(r.overrides))] = \
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def in_rounds(sweeper, session, plan, sweep_dir: Path, task) -> list:
    """An adaptive study (ablate.adaptive): rounds of jobs decided from the results in
    MLflow. The design.json in the sweep folder and the parent run says, after every
    round, which fingerprint is which arm; at the end it also holds the decisions."""
    cfg, design = sweeper.config, plan.design
    objective = session.objective  # the jobs' objective: every arm's, checked before the sweep
    policy = plan.policy.for_objective(objective)
    settings = session.cfg
    uri = tracking.resolve_uri(settings.tracking.uri)
    check = preflight.Checker(cfg, seeds_needed=True)

    def job_of(arm, seed: int) -> tuple[list[str], str]:
        overrides = designs.job_overrides(design, arm, [*plan.other, f"seed={seed}"], plan.tagged)
        if task is not None:
            task.tags[tuple(overrides)] = designs.tags_of(design, arm)
        return overrides, check.fingerprint(overrides)

    runner = adaptive.StoreRunner(job_of, sweeper.launch, uri, settings.tracking.experiment, policy.metric)
    parent = os.environ.get(tracking.ENV_PARENT)
    sesoi = settings.report.get("sesoi")  # the smallest effect of interest: `until: settled` stops on it

    def save(record: dict) -> None:
        spec = {**design.spec(), "arms": sorted(set(runner.arm_of.values())), "fingerprints": runner.arm_of,
                "objective": asdict(objective), "sesoi": sesoi, "swept": plan.swept, **record}
        text = json.dumps(spec)
        (sweep_dir / tracking.DESIGN_FILE).write_text(text)
        if parent:
            MlflowClient(uri).log_text(parent, text, tracking.DESIGN_FILE)

    def run_and_save(jobs):
        try:
            return runner(jobs)
        finally:  # also when a job failed: the sweep's summary counts every job it asked for
            save({"adaptive": {"policy": asdict(policy), "in_progress": True}})

    if design.kind == "greedy_path":
        log.info(f"Design {design.name} (greedy path): {len(design.factors)} factors, "
                 f"{policy.min} seeds a candidate{', racing' if plan.race else ''}; {objective.describe()}")
        done_rounds: list = []

        def round_ended(r) -> None:  # each round as it ends: a killed path can still be reported
            done_rounds.append(r)
            partial = adaptive.GreedyPath(tuple(x.chosen for x in done_rounds), done_rounds).record()
            save({"adaptive": {"policy": asdict(policy), "in_progress": True},
                  "greedy": {**partial, "in_progress": True}})
            log.info(f"  round {len(done_rounds)}: {r.chosen} (from {'+'.join(r.current) or 'the baseline'})")

        try:
            found = adaptive.greedy_path(design, policy.min, run_and_save, plan.race, objective, round_ended)
        except designs.DesignError as exc:  # every candidate of a round failed: the runs say why
            log.error(f"ablate: {exc}")
        else:
            save({"adaptive": {"policy": asdict(policy)}, "greedy": found.record()})
            log.info(f"Path found: {' -> '.join(found.path)} (order given: {' -> '.join(design.factors)})")
    else:
        arm_list = designs.arms(design)
        units = f" {objective.units}" if objective.units else ""  # the half-width is in the metric's units
        target = (f"±{sesoi}{units} of {policy.metric}" if policy.until == "settled"
                  else f"half-width {policy.halfwidth}{units} of {policy.metric}")
        log.info(f"Design {design.name} ({design.kind}): {len(arm_list)} arms, seeds {policy.min}..{policy.max} "
                 f"until {policy.until} ({target}; {objective.describe()})")
        study = adaptive.seed_rounds(policy, arm_list, designs.contrasts(design), run_and_save,
                                     sesoi, objective.delta_bounds)
        save({"adaptive": {"policy": asdict(policy), **study.record()}})
        for d in study.decisions:
            log.info(f"  {d.comparison}: {d.reason}")
    said(runner.failures, session)  # the sweep ends as failed, after every round ran
    return []
