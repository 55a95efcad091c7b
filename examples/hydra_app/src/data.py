"""scikit-learn's 8x8 digits as a LightningDataModule, split train/val/test."""
import lightning as L
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset, random_split


class DigitsDataModule(L.LightningDataModule):
    def __init__(self, data_dir: str = "data/", batch_size: int = 64,
                 train_val_test_split: tuple = (1197, 300, 300), num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_train = self.data_val = self.data_test = None

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        digits = load_digits()
        x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
        y = torch.tensor(digits.target)
        self.data_train, self.data_val, self.data_test = random_split(
            TensorDataset(x, y), self.hparams.train_val_test_split, generator=torch.Generator().manual_seed(42))

    def train_dataloader(self):
        return DataLoader(self.data_train, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self):
        return DataLoader(self.data_val, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self):
        return DataLoader(self.data_test, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)
