"""Helpers in lightning-hydra-template's manner."""
import hydra
from lightning import Callback
from omegaconf import DictConfig


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Callback]:
    callbacks: list[Callback] = []
    for _, cb_conf in (callbacks_cfg or {}).items():
        if isinstance(cb_conf, DictConfig) and "_target_" in cb_conf:
            callbacks.append(hydra.utils.instantiate(cb_conf))
    return callbacks


def get_metric_value(metric_dict: dict, metric_name: str | None) -> float | None:
    if not metric_name:
        return None
    if metric_name not in metric_dict:
        raise Exception(f"Metric value not found! <metric_name={metric_name}>")
    return metric_dict[metric_name].item()
