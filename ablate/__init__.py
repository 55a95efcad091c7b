"""ablate: ablation studies of small networks as Hydra configs, tracked in MLflow."""
from ablate.config import compose
from ablate.job import Result, train
from ablate.model import build_model, param_count

__all__ = ["compose", "build_model", "param_count", "train", "Result"]
__version__ = "0.1.0"
