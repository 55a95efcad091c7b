"""On the device: a checked split as normalised tensors cut into batches by index, or,
for a set too big to hold, streamed through a DataLoader; `load` gives a job's `Data`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ablate.data.checks import _floats
from ablate.data.items import Split, _pair
from ablate.data.sources import splits
from ablate.errors import ConfigError, DataError


class Tensors:
    """A split held on the training device as float (or token id) tensors; batches are
    cut by index, with no DataLoader and no per-sample work."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        n = len(self.x)
        if not shuffle:
            for i in range(0, n, batch_size):
                yield self.x[i:i + batch_size], self.y[i:i + batch_size]
            return
        perm = torch.randperm(n, device=self.x.device, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            yield self.x[idx], self.y[idx]


class _Items(Dataset):
    """A data set's items as (tensor, target) for the DataLoader."""

    def __init__(self, ds: Dataset, where: str, n: int):
        self.ds, self.where, self.n = ds, where, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return _pair(self.ds[i], i, self.where)


class Stream:
    """A split too big to hold: a DataLoader reads it, the device normalises each batch.
    The shuffle order is drawn from torch's seeded generator, so a seed repeats it."""

    def __init__(self, split: Split, n: int, normalise, device: torch.device, num_workers: int,
                 classes: int | None, name: str):
        self.items = _Items(split.dataset, f"data={name}", n)
        self.normalise, self.device, self.workers = normalise, device, num_workers
        self.classes, self.name = classes, name

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        if shuffle:
            seed = torch.randint(2**62, (), generator=generator, device=generator.device if generator else None)
            gen = torch.Generator().manual_seed(int(seed))
        else:
            gen = None
        loader = DataLoader(self.items, batch_size, shuffle=shuffle, generator=gen, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            if self.classes is not None and (int(y.max()) >= self.classes or int(y.min()) < 0):
                raise DataError(f"data={self.name}: a label in this batch is outside the {self.classes} "
                                f"classes: fix the labels or set `data.num_classes=<n>`.")
            yield self.normalise(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


@dataclass
class Data:
    train: Tensors | Stream
    test: Tensors | Stream
    kind: str                 # image | features | tokens
    mean: list[float] | None  # images: per channel, pixel units, as the config gives them
    std: list[float] | None
    val: Tensors | Stream | None = None  # chooses epochs and steps the plateau; none: the test split does
    val_drawn: str | None = None         # how a held-out val split was drawn (sources.held_out)


def _normaliser(cfg, train: Split, device: torch.device):
    """The function that turns a batch of raw inputs into what the model takes."""
    d = cfg.data
    if train.kind == "tokens":
        return lambda x: x.to(device, torch.int64)
    if train.kind == "features":
        if not d.get("standardize", True):
            return lambda x: x.to(device, torch.float32, copy=True).contiguous()
        if train.inputs is None:
            raise ConfigError(f"data={d.name} streams, so its features are not standardised. Set "
                              f"data.standardize=false (and scale them in the data set).")
        x = train.inputs[:d.train_subset].double() if d.train_subset else train.inputs.double()
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)  # from the training split only
        m, s = mean.float().to(device), std.float().to(device)
        return lambda x: x.to(device, torch.float32, copy=True).sub_(m).div_(s).contiguous()
    m = torch.tensor(_floats(d.mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(_floats(d.std), dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        pixels = x.dtype == torch.uint8
        x = x.to(device, torch.float32, copy=True)  # the cached split stays as read
        if pixels:
            x.div_(255.0)
        return x.sub_(m).div_(s).contiguous()
    return normalise


def load(cfg, device: torch.device) -> Data:
    """The splits of a checked config (`fill(cfg, check_data(cfg))`) on `device`: images
    normalised with the per-channel mean and std, features standardised (from the
    training part only), token ids as they are."""
    d = cfg.data
    train, test, val = splits(cfg)
    normalise = _normaliser(cfg, train, device)
    classes = d.get("num_classes") if train.target_kind == "class" else None

    def place(split: Split, n: int):
        if split.inputs is None:
            return Stream(split, n, normalise, device, d.num_workers, classes, d.name)
        return Tensors(normalise(split.inputs[:n]), split.targets[:n].to(device))

    n_train = len(train) if d.train_subset is None else d.train_subset
    image = train.kind == "image"
    return Data(place(train, n_train), place(test, len(test)), train.kind,
                _floats(d.mean) if image else None, _floats(d.std) if image else None,
                place(val, len(val)) if val is not None else None, val.drawn if val is not None else None)

