"""Data: any torchvision-style classification set. A data option names the class with
`_target_`; ablate builds it as `(root, train=..., download=...)`, reads and checks
every (image, label) item once, and holds the whole set as normalised tensors on the
training device. A set larger than `data.memory_limit_mb` streams through a DataLoader
instead, through the same engine."""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from pydoc import locate

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import ListConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import MNIST, VisionDataset
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms.v2.functional import to_image
from tqdm.auto import tqdm

from ablate.errors import ConfigError, DataError
from ablate.model import instantiate_error, one_line

log = logging.getLogger(__name__)

# ablate's own keys in the data node (config.yaml gives their defaults); every other
# key is an argument of the `_target_` class.
RESERVED = ("name", "root", "download", "archives", "train_subset", "mean", "std", "channels", "height",
            "width", "num_classes", "memory_limit_mb", "num_workers")
# Filled in from the data set when the config leaves them null.
DERIVED = ("channels", "height", "width", "num_classes", "mean", "std")


# ----------------------------------------------------------------------------- reading

@dataclass
class Split:
    """One split as read from disk, on the CPU: images [N, C, H, W] (uint8 pixels, or
    floats used as they are) and int64 labels; or, for a set too big to hold, the data
    set itself, with its labels when it lists them (`.targets`)."""
    images: torch.Tensor | None
    labels: torch.Tensor | None
    dataset: Dataset
    shape: tuple[int, int, int]
    source: str  # what to name in an error: a file, or the class and root

    def __len__(self) -> int:
        return len(self.dataset) if self.images is None else len(self.images)


def _pair(item, i: int, where: str) -> tuple[torch.Tensor, int]:
    """An (image, label) item as a [C, H, W] tensor and an int; one line if it is not one."""
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise DataError(f"{where}: item {i} is a {type(item).__name__}, not an (image, label) pair. "
                        f"Make the data set's __getitem__ return (image, label).")
    image, label = item
    try:
        image = to_image(image).as_subclass(torch.Tensor)  # PIL, HWC ndarray or CHW tensor -> CHW tensor
    except Exception as exc:
        raise DataError(f"{where}: the image of item {i} is a {type(image).__name__}, which is not an image "
                        f"({one_line(exc)}). Return a PIL image, an HxWxC array or a CxHxW tensor.") from None
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
        raise DataError(f"{where}: the label of item {i} is {label!r}, not a class index. "
                        f"Return an int label (0 .. classes-1).")
    return image, int(label)


def _arrays(ds) -> tuple[torch.Tensor, torch.Tensor] | None:
    """torchvision's own sets keep their pixels in `.data` (uint8, [N, H, W] or
    [N, H, W, C]) and labels in `.targets`: read those directly (60,000 MNIST items one
    by one take seconds). Only when no transform is set, and only if item 0 agrees."""
    if not isinstance(ds, VisionDataset) or getattr(ds, "transforms", None) is not None:
        return None
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if data is None or targets is None or len(data) != len(targets) or len(data) == 0:
        return None
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        return None
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(targets, dtype=torch.int64)
    image, label = _pair(ds[0], 0, type(ds).__name__)
    if not (torch.equal(image, x[0]) and label == y[0]):
        return None
    return x.contiguous(), y


def _items(ds, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item through __getitem__, checked and stacked."""
    images, labels = [], []
    for i in tqdm(range(len(ds)), desc=f"reading {where}", disable=len(ds) < 20_000, leave=False):
        image, label = _pair(ds[i], i, where)
        if images and (image.shape != images[0].shape or image.dtype != images[0].dtype):
            raise DataError(f"{where}: item {i} is a {tuple(image.shape)} {image.dtype} image, item 0 a "
                            f"{tuple(images[0].shape)} {images[0].dtype} one. ablate stacks a split into one "
                            f"tensor: give every image the same shape and type.")
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


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


def _mnist_like(cls) -> bool:
    """MNIST and its look-alikes (KMNIST, Fashion-MNIST): four raw IDX files."""
    return isinstance(cls, type) and issubclass(cls, MNIST) and len(cls.resources) == 4


def _diagnose(cls, root: str, name: str, exc: Exception, download: bool) -> DataError:
    """Why a set could not be built: for the MNIST family, which raw file is missing or
    which one does not parse; otherwise torchvision's own first line."""
    if _mnist_like(cls):
        raw = Path(root) / cls.__name__ / "raw"
        files = [raw / Path(url).stem for url, _ in cls.resources]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            hint = "" if download else " (download is off: data.download=false)"
            return DataError(f"data={name}: {cls.__name__} files missing in {raw}{hint}: {', '.join(missing)}. "
                             f"Put the four raw IDX files there (torchvision's layout), or point "
                             f"ABLATE_DATA_DIR / data.root=<dir> at a folder that has {cls.__name__}/raw/.")
        for f in files:
            try:
                (read_image_file if "-images-" in f.name else read_label_file)(str(f))
            except Exception as bad:
                return DataError(f"data={name}: {f} is corrupt ({one_line(bad)}). Replace it with the "
                                 f"original file (check its MD5), or delete it and set data.download=true.")
    return DataError(f"data={name}: {cls.__module__}.{cls.__name__} could not be read from {root}: "
                     f"{one_line(exc).split('. ')[0]}. Put its files under data.root=<dir> "
                     f"(or ABLATE_DATA_DIR), or set data.download=true where there is internet.")


def _build(d, train: bool) -> tuple[Dataset, str]:
    """The data set of one split, as its option describes it."""
    node = {k: v for k, v in OmegaConf.to_container(d, resolve=True).items() if k not in RESERVED}
    target = node.get("_target_")
    if not target:
        raise ConfigError(f"data={d.name}: no _target_. Name a torchvision-style data set class in the "
                          f"data option, e.g. `_target_: torchvision.datasets.KMNIST`.")
    cls = locate(target)  # None for nothing importable: instantiate says why
    root = str(Path(d.root).expanduser().resolve())
    if d.get("archives") and _mnist_like(cls):
        root = _from_archives(cls, root, d.archives)
    try:
        ds = instantiate({"_convert_": "all", **node}, root=root, train=train, download=d.download)
    except Exception as exc:
        cause = exc.__cause__ or exc
        if not isinstance(cls, type) or isinstance(cause, TypeError):
            raise ConfigError(f"data={d.name}: cannot build {target}: {instantiate_error(exc)}. Fix data._target_ (an "
                              f"importable data set class taking (root, train=..., download=...)) or its "
                              f"arguments.") from None
        raise _diagnose(cls, root, d.name, cause, d.download) from None
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise ConfigError(f"data={d.name}: {target} gave a {type(ds).__name__}, which is not a data set "
                          f"(no __getitem__ and __len__). Point data._target_ at a torch Dataset class.")
    source = f"{target}(root={root}, train={train})"
    if _mnist_like(cls):  # name the file a label error is about
        source = str(Path(root) / cls.__name__ / "raw" / f"{'train' if train else 't10k'}-labels-idx1-ubyte")
    return ds, source


@lru_cache(maxsize=4)
def _read(key: str) -> tuple[Split, Split]:
    d = OmegaConf.create(key)
    limit = d.memory_limit_mb * 2**20
    splits, size = [], 0
    for train in (True, False):
        ds, source = _build(d, train)
        where = f"data={d.name} ({'train' if train else 'test'} split)"
        if len(ds) == 0:
            raise DataError(f"{where}: the data set is empty ({source}). Check data.root and its files.")
        image, _ = _pair(ds[0], 0, where)
        size += len(ds) * image.numel() * 4  # as float32 on the device
        split = Split(None, getattr(ds, "targets", None), ds, tuple(image.shape), source)
        if split.labels is not None:
            split.labels = torch.as_tensor(split.labels, dtype=torch.int64)
            if len(split.labels) != len(ds):
                raise DataError(f"{where}: {len(ds)} images but {len(split.labels)} labels in {source}. "
                                f"The files do not belong together: replace them with a matching pair.")
        splits.append((split, ds, where))
    for split, ds, where in splits:
        if size <= limit:
            split.images, split.labels = _arrays(ds) or _items(ds, where)
    train, test = (s for s, _, _ in splits)
    if size > limit:
        log.info(f"data={d.name}: {size / 2**20:,.0f} MB as float32 is over data.memory_limit_mb="
                 f"{d.memory_limit_mb}; streaming it through a DataLoader")
    return train, test


def _key(d) -> str:
    """The part of the data node that decides what is read: a cache key."""
    node = OmegaConf.to_container(d, resolve=True)
    node["root"] = str(Path(node["root"]).expanduser().resolve())
    for k in (*DERIVED, "train_subset", "num_workers"):
        node.pop(k, None)
    return OmegaConf.to_yaml(node)


# ----------------------------------------------------------------------------- checking

def _classes(d, train: Split) -> int:
    if d.get("num_classes") is not None:
        return int(d.num_classes)
    listed = getattr(train.dataset, "classes", None)
    if isinstance(listed, (list, tuple)) and len(listed) > 1:
        return len(listed)
    if train.labels is None:
        raise ConfigError(f"data={d.name}: the class count cannot be read off a streamed set without "
                          f".classes or .targets. Set it with `data.num_classes=<n>`.")
    return int(train.labels.max()) + 1


def _floats(value) -> list[float]:
    """A scalar or a list from the config as a list of floats."""
    return [float(v) for v in value] if isinstance(value, (ListConfig, list, tuple)) else [float(value)]


def _stats(d, train: Split) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images, in pixel units ([0, 1] for
    uint8), from the config when given, else computed once over the whole train split."""
    c = train.shape[0]
    if d.get("mean") is not None and d.get("std") is not None:
        mean, std = (_floats(v) * (c if len(_floats(v)) == 1 else 1) for v in (d.mean, d.std))
        if len(mean) != c or len(std) != c or min(std) <= 0:
            raise ConfigError(f"data.mean={d.mean} / data.std={d.std} is invalid: need one value (or {c}, one "
                              f"per channel) each, std > 0. Fix it, or set both to null to compute them.")
        return mean, std
    if train.images is None:
        raise ConfigError(f"data={d.name} streams, so its mean and std are not computed. "
                          f"Set them with `data.mean=[...] data.std=[...]` (pixel units, per channel).")
    s, sq, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for chunk in train.images.split(4096):
        x = chunk.to(torch.float64).transpose(0, 1).reshape(c, -1)
        if train.images.dtype == torch.uint8:
            x /= 255.0
        s, sq, n = s + x.sum(1), sq + x.square().sum(1), n + x.shape[1]
    mean = s / n
    std = (sq / n - mean.square()).clamp_min(0).sqrt()
    return [round(v, 4) for v in mean.tolist()], [round(max(v, 1e-4), 4) for v in std.tolist()]


def check(cfg) -> int:
    """Read the data (once per process), check it, and fill the config's derived keys
    (channels, height, width, num_classes, mean, std) in place where they are null.
    Every problem is one line, raised before any run exists. Returns the train size."""
    d = cfg.data
    train, test = _read(_key(d))
    c, h, w = train.shape
    if test.shape != train.shape:
        raise DataError(f"data={d.name}: test images are {test.shape}, training images {train.shape}. "
                        f"Both splits must have one image shape.")
    for key, value in zip(("channels", "height", "width"), (c, h, w), strict=True):
        if d.get(key) is not None and d[key] != value:
            raise ConfigError(f"data.{key}={d[key]} is invalid: the images of data={d.name} are {c}x{h}x{w}. "
                              f"Fix it with `data.{key}={value}`, or null to read it from the data.")
    classes = _classes(d, train)
    for split in (train, test):
        if split.labels is None:
            continue
        bad = ((split.labels < 0) | (split.labels >= classes)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"data={d.name}: label {int(split.labels[i])} of item {i} in {split.source} is "
                            f"outside the {classes} classes (0..{classes - 1}). Fix the labels (a corrupt file?) "
                            f"or the class count: `data.num_classes=<n>`.")
    n, sub = len(train), d.train_subset
    if sub is not None and sub > n:
        raise ConfigError(f"data.train_subset={sub} is invalid: the {d.name} training set "
                          f"has only {n} images. Fix it with `data.train_subset=<1..{n}>`.")
    mean, std = _stats(d, train)
    with open_dict(d):
        for key, value in zip(DERIVED, (c, h, w, classes, mean, std), strict=True):
            if d.get(key) is None:
                d[key] = value
    return n


# ----------------------------------------------------------------------------- on the device

class Tensors:
    """A split held on the training device as normalised float tensors; batches are
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
    """A data set's items as (CHW tensor, int) for the DataLoader."""

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
                 classes: int, name: str):
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
            if int(y.max()) >= self.classes or int(y.min()) < 0:  # a streamed set is checked as it comes
                raise DataError(f"data={self.name}: a label in this batch is outside the {self.classes} "
                                f"classes: fix the labels or set `data.num_classes=<n>`.")
            yield self.normalise(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


@dataclass
class Data:
    train: Tensors | Stream
    test: Tensors | Stream
    mean: list[float]  # per channel, pixel units, as the config gives them
    std: list[float]


def load(cfg, device: torch.device) -> Data:
    """The checked set on `device`, normalised with the per-channel mean and std."""
    check(cfg)
    d = cfg.data
    train, test = _read(_key(d))
    mean, std = _floats(d.mean), _floats(d.std)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        pixels = x.dtype == torch.uint8
        x = x.to(device, torch.float32, copy=True)  # the cached split stays as read
        if pixels:
            x.div_(255.0)
        return x.sub_(m).div_(s).contiguous()

    def place(split: Split, n: int):
        if split.images is None:
            return Stream(split, n, normalise, device, d.num_workers, d.num_classes, d.name)
        return Tensors(normalise(split.images[:n]), split.labels[:n].to(device))

    n_train = len(train) if d.train_subset is None else d.train_subset
    return Data(place(train, n_train), place(test, len(test)), mean, std)
