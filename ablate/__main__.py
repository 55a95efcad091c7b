"""`python -m ablate [overrides]` runs one job; `-m` sweeps them."""
import signal
import sys

from ablate import stops

# From the first line: a SIGTERM or Ctrl-C while torch and MLflow load (9 s) is one line,
# not a silent exit 143 or a traceback through an import.
signal.signal(signal.SIGTERM, stops.sigterm)
try:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from ablate import entry
    from ablate.config import CONF_DIR, name_options, quote_step_args
    from ablate.job import train
except (KeyboardInterrupt, stops.Interrupted) as exc:
    sys.exit(stops.stopped(exc))


def _train(cfg: DictConfig) -> float:
    name_options(cfg, HydraConfig.get().runtime.choices)
    return train(cfg).objective  # the objective value, for Hydra sweepers (Optuna, ...)


main = entry.app(entry.task(_train), str(CONF_DIR), "config")

if __name__ == "__main__":
    sys.argv = sys.argv[:1] + quote_step_args(sys.argv[1:])
    main()
