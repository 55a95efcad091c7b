"""Pre-flight: every job of a sweep checked as it will run, before any starts.

Each job's config is composed by Hydra's own config loader from the sweep's primary
config (whatever its name) with the job's overrides, with its Hydra config in place
(output folder, job number), exactly as the launcher will give it to the job: so
`${hydra:runtime.output_dir}` resolves, and the fingerprint named here is the one the
job will claim. ablate's engine checks its jobs (ablate.job.check); any other app's
jobs are checked by ablate.app.check_app_job."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from ablate import app, config
from ablate.errors import ConfigError, from_hydra
from ablate.metrics import Objective

ENGINE, APP = "engine", "app"


def mode(master: DictConfig) -> str:
    """ENGINE for `python -m ablate` (its primary config is ablate's conf/), else APP."""
    for source in OmegaConf.select(master, "hydra.runtime.config_sources") or []:
        if source.get("provider") == "main" and source.get("schema") == "file" and \
                Path(str(source.path)).resolve() == config.CONF_DIR:
            return ENGINE
    return APP


@contextmanager
def as_job(master: DictConfig, overrides: list[str], idx: int = 0):
    """Yields (task config, Hydra config) of one job of the sweep whose config is
    `master`, as Hydra's launcher composes it; Hydra's config is the job's meanwhile."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    hc = HydraConfig.instance()
    before = hc.cfg
    try:
        try:
            cfg = GlobalHydra.instance().config_loader().load_sweep_config(master, list(overrides))
        except Exception as exc:
            raise ConfigError(from_hydra(exc)) from None
        with open_dict(cfg):
            cfg.hydra.job.id, cfg.hydra.job.num = idx, idx
        hc.set_config(cfg)
        out = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(out.absolute())
        hc.set_config(cfg)
        task = copy.deepcopy(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
        yield task, HydraConfig.get()
    finally:
        hc.cfg = before


# Hydra's config that the sweep, not a job, acts on: it is read once, from the command
# line's composition, before any job exists.
SWEEP_LEVEL = ("launcher", "sweeper", "callbacks")


def sweep_level(master: DictConfig, hydra_cfg: DictConfig, overrides: list[str]) -> None:
    """A job whose overrides change what only the sweep reads (`hydra/launcher` set
    inside a swept preset, `hydra.launcher.n_jobs=2,4`): Hydra would ignore it in
    silence, so it is refused, with where to put it instead."""
    for key in SWEEP_LEVEL:
        mine = OmegaConf.to_container(hydra_cfg[key], resolve=False) if key in hydra_cfg else None
        sweeps = OmegaConf.to_container(master.hydra[key], resolve=False) if key in master.hydra else None
        if mine != sweeps:
            name = (mine or {}).get("_target_", "") if isinstance(mine, dict) else ""
            raise ConfigError(f"the job `{' '.join(overrides)}` changes hydra.{key}"
                              + (f" (to {name.rsplit('.', 1)[-1]})" if name else "")
                              + f", but a sweep's {key} is chosen once, from the command line, before any job: "
                              f"Hydra would ignore it. Choose it on the command line (e.g. hydra/{key}=<option>) or "
                              f"in the primary config, for the whole sweep.")


class Checker:
    """Checks jobs of one sweep: `checker(overrides)` -> (fingerprint, objective), or
    ConfigError naming what is wrong. `seeds_needed`: a design, which pairs by seed."""

    def __init__(self, master: DictConfig, seeds_needed: bool = False):
        self.master, self.mode, self.seeds_needed = master, mode(master), seeds_needed
        self._n = 0

    def __call__(self, overrides: list[str]) -> tuple[str, Objective]:
        from ablate import job, metrics, task
        self._n += 1
        with as_job(self.master, overrides, self._n - 1) as (cfg, hydra_cfg):
            sweep_level(self.master, hydra_cfg, overrides)
            if self.mode == ENGINE:
                config.name_options(cfg, hydra_cfg.runtime.choices)
                return job.check_job(cfg), metrics.objective(cfg, task.metric_specs(cfg))
            try:
                checked = app.check_app_job(cfg, hydra_cfg)
                if self.seeds_needed and not isinstance(cfg.get("seed"), int):
                    raise ConfigError(f"seed={cfg.get('seed')!r}: a design compares its arms paired by seed, so "
                                      f"every job needs one. Give seeds on the command line (seed=0,1,2)"
                                      + ("" if "seed" in cfg else ", with + if your config has no seed key") + ".")
            except OmegaConfBaseException as exc:
                raise ConfigError(from_hydra(exc)) from None
            return checked.fingerprint, checked.objective

    def fingerprint(self, overrides: list[str]) -> str:
        return self(overrides)[0]
