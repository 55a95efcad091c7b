"""The ablation sweeper: a Hydra Sweeper that runs a design (ablate.designs) instead
of a grid. Selected by a design preset (`-m ablation=step7_loo`) or by hand
(`-m hydra/sweeper=ablation hydra.sweeper.design=... hydra.sweeper.factors=...`).

It is a thin face: ablate.designs turns the config into jobs (the same plan the
sweep's pre-flight in ablate.callbacks has already checked), and whichever launcher
is configured runs them: basic, joblib (`hydra/launcher=parallel`) or submitit.
"""
# No `from __future__ import annotations`: Hydra's plugin scan runs this module without
# registering it in sys.modules, where dataclasses cannot resolve string annotations.
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class AblationSweeperConf:
    _target_: str = "hydra_plugins.ablate_sweeper.ablate_sweeper.AblationSweeper"
    name: str | None = None              # names the design in tags and reports; default: its kind
    design: str = "leave_one_out"        # leave_one_out | add_one_in | factorial | path | greedy_path | grid
    baseline: Any = None                 # overrides of the reference configuration (a list, or one string)
    # None, not {}: `hydra.sweeper.factors={a:...}` on the command line then sets it, where
    # merging into an empty struct dict would refuse the new keys
    factors: Any = None                  # name -> overrides (a list, or one string)
    order: Any = None                    # path: the order to apply the factors in (default: as listed)
    # Adaptive seeds: {min: 3, max: 10, until: decisive, halfwidth: 0.05}; None: seeds from the command line.
    # halfwidth is in the objective's units (pp for an accuracy in %); the objective's column decides
    seeds: Any = None
    race: bool = False                   # greedy_path: drop clearly worse candidates early
    max_batch_size: int | None = None    # jobs handed to the launcher at once (None: all)


ConfigStore.instance().store(group="hydra/sweeper", name="ablation", node=AblationSweeperConf, provider="ablate")


class AblationSweeper(Sweeper):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, jobs: list[list[str]]) -> list:
        """Jobs to the launcher, in batches of max_batch_size, numbered on from earlier rounds."""
        size = self.params.get("max_batch_size") or len(jobs) or 1
        results = []
        for i in range(0, len(jobs), size):
            batch = jobs[i:i + size]
            results += list(self.launcher.launch(batch, initial_job_idx=self.job_idx))
            self.job_idx += len(batch)
        return results

    def sweep(self, arguments: list[str]) -> Any:
        from ablate import designs
        plan = designs.plan(self.config.hydra.sweeper, arguments)
        self.job_idx = 0
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if plan.adaptive:
            return self.sweep_in_rounds(plan, sweep_dir)
        log.info(f"Design {plan.design.name} ({plan.design.kind}): {len(designs.arms(plan.design))} arms, "
                 f"{len(plan.jobs)} jobs")
        results = self.launch(plan.jobs)
        for r in results:  # as Hydra's basic sweeper: every job ran; now raise the first failure
            _ = r.return_value
        return [results]

    def sweep_in_rounds(self, plan, sweep_dir: Path) -> Any:
        """An adaptive study (ablate.adaptive): rounds of jobs decided from the results in
        MLflow. The design.json in the sweep folder and the parent run says, after every
        round, which fingerprint is which arm; at the end it also holds the decisions."""
        import json
        import os
        from dataclasses import asdict

        from mlflow.tracking import MlflowClient

        from ablate import adaptive, designs, tracking
        cfg, design = self.config, plan.design
        # what decides and which way is better: the jobs' objective (every arm's, checked before the sweep)
        objective = adaptive.objective_of(plan.jobs[0])
        policy = plan.policy.for_objective(objective)
        uri = tracking.resolve_uri(cfg.tracking.uri)
        runner = adaptive.StoreRunner(design, plan.other, self.launch, uri, cfg.tracking.experiment, policy.metric)
        parent = os.environ.get(tracking.ENV_PARENT)
        sesoi = cfg.report.get("sesoi")  # the smallest effect of interest: `until: settled` stops on it

        def save(record: dict) -> None:
            spec = {**design.spec(), "arms": sorted(set(runner.arm_of.values())), "fingerprints": runner.arm_of,
                    "objective": asdict(objective), "sesoi": sesoi, **record}
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
                     f"until {policy.until} ({target}; "
                     f"{objective.describe()})")
            study = adaptive.seed_rounds(policy, arm_list, adaptive.comparisons(design, arm_list), run_and_save,
                                         sesoi, objective.delta_bounds)
            save({"adaptive": {"policy": asdict(policy), **study.record()}})
            for d in study.decisions:
                log.info(f"  {d.comparison}: {d.reason}")
        for r in runner.failures:
            _ = r.return_value  # the sweep ends as failed, after every round ran
        return []
