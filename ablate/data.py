"""Data: torchvision reads (and verifies or downloads) the files once; the whole
set then lives as normalised tensors on the training device."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torchvision import datasets

from ablate.config import ConfigError

log = logging.getLogger(__name__)

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}


class DataError(RuntimeError):
    """The data set cannot be found or fetched; the message says how to fix it."""


@dataclass
class Data:
    train_x: torch.Tensor  # [N, 1, 28, 28] float, normalised
    train_y: torch.Tensor  # [N] int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float


@lru_cache(maxsize=4)
def _read(name: str, root: str, download: bool) -> tuple[torch.Tensor, ...]:
    cls = DATASETS[name]
    raw = Path(root) / cls.__name__ / "raw"
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except Exception as exc:  # torchvision raises RuntimeError or URLError for missing files
        hint = "" if download else " (download is off: data.download=false)"
        raise DataError(
            f"{cls.__name__} not found under {raw}{hint}: {str(exc).splitlines()[0]}. "
            f"Put the four raw IDX files there (torchvision's layout), or point "
            f"ABLATE_DATA_DIR / data.root=<dir> at a folder that has {cls.__name__}/raw/."
        ) from None
    return train.data, train.targets, test.data, test.targets


def check(cfg) -> int:
    """Fail early if the data is missing or the subset too large; return the train size."""
    if cfg.data.name not in DATASETS:
        raise ConfigError(f"data={cfg.data.name!r} is invalid: must be one of {', '.join(DATASETS)}.")
    train_x, *_ = _read(cfg.data.name, str(Path(cfg.data.root).expanduser().resolve()), cfg.data.download)
    n, sub = len(train_x), cfg.data.train_subset
    if sub is not None and sub > n:
        raise ConfigError(f"data.train_subset={sub} is invalid: the {cfg.data.name} training set "
                          f"has only {n} images. Fix it with `data.train_subset=<1..{n}>`.")
    return n


def load(cfg, device: torch.device) -> Data:
    """Tensors on `device`, normalised with the data set's mean and std."""
    check(cfg)
    d = cfg.data
    train_x, train_y, test_x, test_y = _read(d.name, str(Path(d.root).expanduser().resolve()), d.download)
    if d.train_subset is not None:
        train_x, train_y = train_x[: d.train_subset], train_y[: d.train_subset]

    def prep(x: torch.Tensor) -> torch.Tensor:
        return ((x.to(device, torch.float32) / 255.0 - d.mean) / d.std).unsqueeze(1).contiguous()

    return Data(prep(train_x), train_y.to(device), prep(test_x), test_y.to(device), d.mean, d.std)


def default_root() -> str:
    return os.environ.get("ABLATE_DATA_DIR", "./data")
