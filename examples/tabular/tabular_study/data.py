"""scikit-learn's small tabular sets (shipped with it, no download) as one data set
per split: items are (features [F] float32, class index int)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn import datasets
from torch.utils.data import Dataset

LOADERS = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine, "iris": datasets.load_iris}


class SklearnSplit(Dataset):
    """One split of `load_<name>()`: a seeded stratified-free shuffle puts
    `test_fraction` of the rows in the test split, the same for every run and seed.
    Features are raw (ablate standardises them from the training split)."""

    def __init__(self, name: str, split: str, test_fraction: float = 0.25, split_seed: int = 0):
        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, not {split!r}")
        bunch = LOADERS[name]()
        order = np.random.default_rng(split_seed).permutation(len(bunch.target))
        n_test = round(test_fraction * len(order))
        keep = order[n_test:] if split == "train" else order[:n_test]
        self.x = torch.tensor(bunch.data[keep], dtype=torch.float32)
        self.y = bunch.target[keep].tolist()
        self.classes = list(bunch.target_names)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]
