"""Lightning: ablate's run handle as a Lightning `Callback`, so a LightningModule trained
by Lightning's own `Trainer` logs each epoch to MLflow through ablate and resumes from
Lightning's own checkpoint.

    @ablate.main(config_path="conf", config_name="config")
    def train(cfg, run):
        trainer = lightning.Trainer(max_epochs=cfg.epochs, callbacks=[RunCallback(run)], logger=False,
                                    enable_checkpointing=False)
        trainer.fit(module, train_loader, val_loader, ckpt_path=RunCallback.resume_from(run))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

After each training epoch (validation included) the callback writes Lightning's
checkpoint next to the run, then logs `trainer.callback_metrics` as that epoch's metrics
(1-based, as ablate counts). Sanity-check validation is not logged.

That checkpoint leaves out the module's hyperparameters (`save_hyperparameters()`),
which often hold the app's own objects (a `_partial_` optimizer, a net): resuming needs
only the states, so it loads with `torch.load(weights_only=True)`, which runs no code.
The run's config already records every hyperparameter.
"""
from __future__ import annotations

import lightning as L

from ablate.study import Run


class RunCallback(L.Callback):
    def __init__(self, run: Run):
        self.run = run
        self._saving = False
        self._pending: dict | None = None  # the epoch being checkpointed, before it is logged

    def state_dict(self) -> dict:
        """The epochs logged so far and the one being saved, inside Lightning's checkpoint:
        a kill between writing it and logging that epoch loses nothing (load_state_dict)."""
        return {"history": [*self.run.history, *([self._pending] if self._pending else [])]}

    def load_state_dict(self, state: dict) -> None:
        """On resume: log the epochs the checkpoint holds that the run has not logged."""
        for h in state.get("history", []):
            if h["epoch"] > self.run.epoch:
                self.run.log(h["epoch"], {k: v for k, v in h.items() if k != "epoch"})

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        if self._saving:  # ours only: a ModelCheckpoint of the app's keeps its hyperparameters
            for key in ("hyper_parameters", "datamodule_hyper_parameters"):
                checkpoint.pop(key, None)

    @staticmethod
    def resume_from(run: Run) -> str | None:
        """The Lightning checkpoint to hand `Trainer.fit(ckpt_path=...)`: the last one this
        run wrote, after an interruption; else None (a fresh start). ablate has loaded it
        once with weights_only=True before the run resumed (one that does not load starts
        the config afresh in a new run)."""
        if run.resume is None:
            return None
        path = run.checkpoint_dir / "lightning.ckpt"  # this run's own, never a path another run's payload names
        return str(path) if path.exists() else None

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """`trainer.test` after training: its metrics are the run's final ones (final_test/acc)."""
        self.run.final.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        path = self.run.checkpoint_dir / "lightning.ckpt"
        self._saving, self._pending = True, {"epoch": epoch, **metrics}
        try:
            trainer.save_checkpoint(path, weights_only=False)  # first, locally: an outage then loses nothing
        finally:
            self._saving, self._pending = False, None
        self.run.log(epoch, metrics)
        self.run.save({"lightning_checkpoint": path.name})
