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
    name: str | None = None           # names the design in tags and reports; default: its kind
    design: str = "leave_one_out"        # leave_one_out | add_one_in | factorial | path
    baseline: Any = None                 # overrides of the reference configuration (a list, or one string)
    # None, not {}: `hydra.sweeper.factors={a:...}` on the command line then sets it, where
    # merging into an empty struct dict would refuse the new keys
    factors: Any = None                  # name -> overrides (a list, or one string)
    order: Any = None                    # path: the order to apply the factors in (default: as listed)
    max_batch_size: int | None = None  # jobs handed to the launcher at once (None: all)


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

    def sweep(self, arguments: list[str]) -> Any:
        from ablate import designs
        plan = designs.plan(self.config.hydra.sweeper, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"Design {plan.design.name} ({plan.design.kind}): {len(designs.arms(plan.design))} arms, "
                 f"{len(plan.jobs)} jobs")
        size = self.params.get("max_batch_size") or len(plan.jobs)
        returns, start = [], 0
        for i in range(0, len(plan.jobs), size):
            batch = plan.jobs[i:i + size]
            returns.append(self.launcher.launch(batch, initial_job_idx=start))
            start += len(batch)
        for results in returns:  # as Hydra's basic sweeper: every job ran; now raise the first failure
            for r in results:
                _ = r.return_value
        return returns
