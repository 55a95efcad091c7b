"""scikit-learn's diabetes set (shipped with it, no download) as one data set per
split: items are (features [10] float32, target float)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from torch.utils.data import Dataset


class Diabetes(Dataset):
    """One split of `load_diabetes()`: 442 patients, 10 baseline measurements (age, sex,
    BMI, blood pressure, six blood serum values), and a measure of disease progression
    one year later (25..346; mean 152, std 77). A seeded shuffle puts `test_fraction`
    of the rows in the test split, the same for every run and seed.

    `scaled=False` gives the features in their own units (age in years, sex 1/2, ...),
    so ablate's `data.standardize` does the scaling; scikit-learn's `scaled=True`
    copy is already centred and scaled."""

    def __init__(self, split: str, test_fraction: float = 0.2, split_seed: int = 0, scaled: bool = False):
        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, not {split!r}")
        bunch = load_diabetes(scaled=scaled)
        order = np.random.default_rng(split_seed).permutation(len(bunch.target))
        n_test = round(test_fraction * len(order))
        keep = order[n_test:] if split == "train" else order[:n_test]
        self.x = torch.tensor(bunch.data[keep], dtype=torch.float32)
        self.y = [float(v) for v in bunch.target[keep]]
        self.feature_names = list(bunch.feature_names)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]
