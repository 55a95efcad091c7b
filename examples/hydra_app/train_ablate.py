"""train.py under `@ablate.main` (Tier 1): the lines marked `# ablate` are all that
change. ablate then checkpoints each epoch through Lightning and resumes an
interrupted run (kill -9, preemption) into the same MLflow run."""
import hydra
import lightning as L
import torch
from omegaconf import DictConfig
from src.utils import get_metric_value, instantiate_callbacks

import ablate  # ablate
from ablate.lightning import RunCallback  # ablate


def train(cfg: DictConfig, run) -> tuple[dict, dict]:  # ablate: the run handle
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(1)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    run.count_parameters(model)  # ablate: the report's params column
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), RunCallback(run)]  # ablate
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    if cfg.get("train"):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=RunCallback.resume_from(run))  # ablate
    train_metrics = dict(trainer.callback_metrics)
    test_metrics = {}
    if cfg.get("test"):
        trainer.test(model=model, datamodule=datamodule, verbose=False)
        test_metrics = dict(trainer.callback_metrics)
    return {**train_metrics, **test_metrics}, {"model": model, "trainer": trainer}


@ablate.main(config_path="configs", config_name="train")  # ablate: in place of hydra.main
def main(cfg: DictConfig, run) -> float | None:  # ablate: the run handle
    metric_dict, _ = train(cfg, run)  # ablate
    return get_metric_value(metric_dict, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
