"""A LightningModule and its data, with no ablate in them: an MLP on scikit-learn's
8x8 digits."""
import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def loaders(batch_size: int, split_seed: int = 0) -> tuple[DataLoader, DataLoader]:
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.tensor(np.random.default_rng(split_seed).permutation(len(y)))
    test, train = order[:360], order[360:]
    return (DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(x[test], y[test]), batch_size=1000))


class LitMLP(L.LightningModule):
    def __init__(self, hidden: int = 64, depth: int = 2, dropout: float = 0.1, lr: float = 0.05,
                 weight_decay: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        layers, width = [], 64
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 10))

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        out = self.net(x)
        self.log("test_loss", nn.functional.cross_entropy(out, y))
        self.log("test_acc", 100.0 * (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9,
                               weight_decay=self.hparams.weight_decay)
