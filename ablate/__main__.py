"""`python -m ablate [overrides]` runs one job; `-m` sweeps them."""
import os
import signal
import sys

from ablate import stops


def _while_loading(signum, frame):
    """No run exists while torch and MLflow load (9 s): a stop then is one line and an
    exit. Raising instead would unwind through a half-done import (numpy's, under load,
    then recursed in its own __getattr__: seen in CI)."""
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    os.write(2, f"ablate: stopped by {name}: no run was started.\n".encode())
    os._exit(128 + signum)


# From the first line: a SIGTERM or Ctrl-C while torch and MLflow load is one line, not a
# silent exit 143 or a traceback through an import.
signal.signal(signal.SIGTERM, _while_loading)
signal.signal(signal.SIGINT, _while_loading)
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ablate import entry  # noqa: E402
from ablate.config import CONF_DIR, name_options, quote_step_args  # noqa: E402
from ablate.job import train  # noqa: E402

signal.signal(signal.SIGTERM, stops.sigterm)
signal.signal(signal.SIGINT, signal.default_int_handler)


def _train(cfg: DictConfig) -> float:
    name_options(cfg, HydraConfig.get().runtime.choices)
    return train(cfg).objective  # the objective value, for Hydra sweepers (Optuna, ...)


main = entry.app(entry.task(_train), str(CONF_DIR), "config")

if __name__ == "__main__":
    sys.argv = sys.argv[:1] + quote_step_args(sys.argv[1:])
    main()
