"""scikit-learn's handwritten digits (1,797 8x8 images, 10 classes; shipped with
scikit-learn, no download) as a torchvision-style data set."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset


class Digits(Dataset):
    """(image, label) items: a 1x8x8 float tensor in [0, 1] and an int.

    The split is fixed: a seeded shuffle puts `test_fraction` of the images in the test
    split, so every run of every seed sees the same test set. `root` and `download` are
    there because ablate builds every data set as (root, train=..., download=...)."""

    classes: ClassVar[list[str]] = [str(k) for k in range(10)]

    def __init__(self, root: str, train: bool = True, download: bool = False,
                 test_fraction: float = 0.2, split_seed: int = 0):
        digits = load_digits()
        order = np.random.default_rng(split_seed).permutation(len(digits.target))
        n_test = round(test_fraction * len(order))
        keep = order[n_test:] if train else order[:n_test]
        self.images = torch.tensor(digits.images[keep] / 16.0, dtype=torch.float32).unsqueeze(1)
        self.labels = digits.target[keep].tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]
