"""`python -m ablate [overrides]` runs one job; `-m` sweeps them."""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ablate import errors
from ablate.config import name_options, quote_step_args
from ablate.job import train
from hydra_plugins.ablate_sweeper.ablate_sweeper import AblationSweeper

log = logging.getLogger("ablate")
# Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install
# (pip install -e .) hides from it; registering the sweeper here works for any install.
Plugins.instance().register(AblationSweeper)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    errors.report_hydras_errors()  # composed: from here on a crash is Hydra's to report
    name_options(cfg, HydraConfig.get().runtime.choices)
    try:
        return train(cfg).objective  # the objective value, for Hydra sweepers (Optuna, ...)
    except errors.AblateError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records it as a failed job
        print(f"ablate: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = sys.argv[:1] + quote_step_args(sys.argv[1:])
    errors.raise_hydras_errors()
    try:
        main()
    except ValueError as exc:  # Hydra's own check of its flags: `-m` with `--cfg`, say
        if errors.report_hydras_errors() or not str(exc).startswith("Only one of"):
            raise
        print(f"ablate: {exc}: give one of them (drop -m to print the config).", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as exc:  # a misspelt option or key, a bad override
        if errors.report_hydras_errors():
            raise  # the user asked for Hydra's full stack traces
        print(f"ablate: {errors.from_hydra(exc)}", file=sys.stderr)
        sys.exit(2)
