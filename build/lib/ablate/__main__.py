"""`python -m ablate [overrides]` runs one job; `-m` sweeps them."""
import sys

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ablate import entry
from ablate.config import CONF_DIR, name_options, quote_step_args
from ablate.job import train


def _train(cfg: DictConfig) -> float:
    name_options(cfg, HydraConfig.get().runtime.choices)
    return train(cfg).objective  # the objective value, for Hydra sweepers (Optuna, ...)


main = entry.app(entry.task(_train), str(CONF_DIR), "config")

if __name__ == "__main__":
    sys.argv = sys.argv[:1] + quote_step_args(sys.argv[1:])
    main()
