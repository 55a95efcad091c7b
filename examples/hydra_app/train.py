"""An ordinary Hydra + Lightning app (lightning-hydra-template's shape), with no ablate
in it: compose the config, instantiate data, model, callbacks and trainer, fit, test,
and return the metric the config names as `optimized_metric` (what Optuna reads)."""
import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from src.utils import get_metric_value, instantiate_callbacks


def train(cfg: DictConfig) -> tuple[dict, dict]:
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(1)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    if cfg.get("train"):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_metrics = dict(trainer.callback_metrics)
    test_metrics = {}
    if cfg.get("test"):
        trainer.test(model=model, datamodule=datamodule, verbose=False)
        test_metrics = dict(trainer.callback_metrics)
    return {**train_metrics, **test_metrics}, {"model": model, "trainer": trainer}


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metric_dict, _ = train(cfg)
    return get_metric_value(metric_dict, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
