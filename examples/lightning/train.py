"""A LightningModule trained by Lightning's own Trainer, as an ablate study: ablate's
run handle joins the Trainer as a callback (ablate.lightning.RunCallback)."""
import lightning as L
from lit_study import LitMLP, loaders

import ablate
from ablate.lightning import RunCallback


@ablate.main(config_path="conf", config_name="config")
def train(cfg, run) -> dict:
    L.seed_everything(cfg.seed, verbose=False)
    module = LitMLP(cfg.hidden, cfg.depth, cfg.dropout, cfg.lr, cfg.weight_decay)
    run.count_parameters(module)
    trainer = L.Trainer(max_epochs=cfg.epochs, callbacks=[RunCallback(run)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", deterministic=True)
    train_loader, test_loader = loaders(cfg.batch_size)
    trainer.fit(module, train_loader, test_loader, ckpt_path=RunCallback.resume_from(run))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


if __name__ == "__main__":
    train()
