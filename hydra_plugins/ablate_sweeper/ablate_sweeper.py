"""The ablation sweeper: a Hydra Sweeper that runs a design (ablate.designs) instead
of a grid. Selected by a design preset (`-m ablation=step7_loo`) or by hand
(`-m hydra/sweeper=ablation hydra.sweeper.design=... hydra.sweeper.factors=...`).

A thin plugin, as Hydra's own Optuna sweeper is: its config here, the work in
ablate.sweep. Whichever launcher is configured runs the jobs: basic, joblib
(`hydra/launcher=parallel`) or submitit. An app whose task function does not track its
own jobs (a plain `@hydra.main` app) gets it wrapped (ablate.app.TrackedTask), so each
job is still one MLflow run.
"""
# No `from __future__ import annotations`: Hydra's plugin scan runs this module without
# registering it in sys.modules, where dataclasses cannot resolve string annotations.
import logging
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from ablate.schema import AppObjectiveConf, ReportConf, TrackingConf  # light: no torch, no MLflow

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
    # For an app without ablate's nodes (its config has no `ablate_study`): what its task
    # function returns, {metric, goal: max|min, bounds, label, unit}; else the app's own
    # `optimized_metric` with `direction` (maximize | minimize, as Optuna's sweeper says it)
    objective: AppObjectiveConf = field(default_factory=AppObjectiveConf)
    direction: Any = None
    tracking: TrackingConf = field(default_factory=TrackingConf)  # where runs go (uri, experiment, ...)
    report: ReportConf = field(default_factory=ReportConf)        # the report's keys (sesoi, out, auto)
    force: bool | None = None            # true: rerun configs that already have a FINISHED run


ConfigStore.instance().store(group="hydra/sweeper", name="ablation", node=AblationSweeperConf, provider="ablate")


class AblationSweeper(Sweeper):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.launcher = None
        self.task = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ablate import app
        self.config, self.hydra_context = config, hydra_context
        self.task = app.TrackedTask(task_function)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=self.task, config=config)

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
        from ablate import sweep
        return sweep.run(self, arguments)
