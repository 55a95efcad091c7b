"""ablate: ablation studies of small networks as Hydra configs, tracked in MLflow."""
from ablate.config import compose
from ablate.errors import ConfigError, DataError
from ablate.job import Result, train
from ablate.model import build_model, param_count

__all__ = ["ConfigError", "DataError", "Result", "build_model", "compose", "param_count", "train"]
__version__ = "0.1.0"
