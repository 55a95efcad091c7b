"""Data: torchvision reads (and verifies or downloads) the files once; the whole
set then lives as normalised tensors on the training device."""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
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


def _writable(path: Path) -> bool:
    # Permission bits, not os.access: root may write anywhere, but a read-only
    # shared data folder is still not ours to change.
    existing = next(p for p in [path, *path.parents] if p.exists())
    return bool(existing.stat().st_mode & stat.S_IWUSR) and os.access(existing, os.W_OK)


def _from_archives(cls, root: str, archives: str | None) -> str:
    """Debian's dataset packages ship the original .gz files in one folder (recompressed,
    so torchvision's archive MD5s do not match). Decompressed into <root>/<Name>/raw,
    torchvision reads them as its own. A read-only root falls back to ~/.cache/ablate/data."""
    names = [Path(f).stem for f, _ in cls.resources]
    for candidate in (root, str(Path.home() / ".cache" / "ablate" / "data")):
        raw = Path(candidate) / cls.__name__ / "raw"
        if not archives or all((raw / n).exists() for n in names):
            return candidate
        if _writable(raw):
            break
    else:
        return root
    raw.mkdir(parents=True, exist_ok=True)
    for n in names:
        src = Path(archives) / f"{n}.gz"
        if src.exists() and not (raw / n).exists():
            tmp = raw / f"{n}.tmp"
            with gzip.open(src) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(tmp, raw / n)
    return candidate


@lru_cache(maxsize=4)
def _read(name: str, root: str, download: bool, archives: str | None = None) -> tuple[torch.Tensor, ...]:
    cls = DATASETS[name]
    root = _from_archives(cls, root, archives)
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
    train_x, *_ = _read(*_source(cfg.data))
    n, sub = len(train_x), cfg.data.train_subset
    if sub is not None and sub > n:
        raise ConfigError(f"data.train_subset={sub} is invalid: the {cfg.data.name} training set "
                          f"has only {n} images. Fix it with `data.train_subset=<1..{n}>`.")
    return n


def _source(d) -> tuple:
    return d.name, str(Path(d.root).expanduser().resolve()), d.download, d.get("archives")


def load(cfg, device: torch.device) -> Data:
    """Tensors on `device`, normalised with the data set's mean and std."""
    check(cfg)
    d = cfg.data
    train_x, train_y, test_x, test_y = _read(*_source(d))
    if d.train_subset is not None:
        train_x, train_y = train_x[: d.train_subset], train_y[: d.train_subset]

    def prep(x: torch.Tensor) -> torch.Tensor:
        return ((x.to(device, torch.float32) / 255.0 - d.mean) / d.std).unsqueeze(1).contiguous()

    return Data(prep(train_x), train_y.to(device), prep(test_x), test_y.to(device), d.mean, d.std)

