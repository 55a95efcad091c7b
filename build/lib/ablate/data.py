"""Data: any data set of (input, target) items. A data option names a torchvision-style
class with `_target_`, which ablate builds as `(root, train=..., download=...)`, or gives
its splits as `train` and `test` nodes, each with its own `_target_`. Every item is
read and checked once, and the whole set is held as tensors on the training device.
A set larger than `data.memory_limit_mb` streams through a DataLoader instead, through
the same engine.

    input x                                         target y
    image [C, H, W]: PIL, HxWxC array, CxHxW tensor  class index: an int
    features [F]: a 1-D float tensor or array       float or float vector [K] (regression)
    tokens [T]: a 1-D integer tensor (int64)        token ids [T] (sequence)

Images are normalised per channel, features standardised per feature from the
training split (`data.standardize`), token ids are used as they are.
"""
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
from hydra.utils import instantiate, to_absolute_path
from omegaconf import ListConfig, OmegaConf, open_dict
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import MNIST, VisionDataset
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms.v2.functional import to_image
from tqdm.auto import tqdm

from ablate.errors import ConfigError, DataError, instantiate_error, one_line
from ablate.schema import DATA_KEYS

log = logging.getLogger(__name__)

# Filled in from the data set when the config leaves them null (those that apply to it).
DERIVED = ("channels", "height", "width", "num_classes", "mean", "std", "features", "seq_len", "vocab_size",
           "targets")
IMAGE_ONLY = ("channels", "height", "width", "mean", "std")
# What a task needs of the targets: class indices, floats, token ids.
TARGETS_OF = {"classification": "class", "regression": "float", "sequence": "tokens"}


# ----------------------------------------------------------------------------- reading

@dataclass
class Split:
    """One split as read from disk, on the CPU: inputs [N, ...] (uint8 pixels, floats
    used as they are, or int64 token ids) and targets ([N] int64 classes, [N, K]
    float32, or [N, T] int64 tokens); or, for a set too big to hold, the data set
    itself, with its class labels when it lists them (`.targets`)."""
    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    dataset: Dataset
    shape: tuple[int, ...]  # one input's
    kind: str               # image | features | tokens
    target_kind: str        # class | float | tokens
    source: str             # what to name in an error: a file, or the class and root

    def __len__(self) -> int:
        return len(self.dataset) if self.inputs is None else len(self.inputs)


def _input(x, i: int, where: str) -> tuple[torch.Tensor, str]:
    """An input as a tensor and its kind: a 1-D float vector is features, a 1-D integer
    one token ids; anything else is an image (PIL, HxW(xC) array, (C)xHxW tensor)."""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor) and x.ndim == 1:
        if x.dtype.is_floating_point:
            return x, "features"
        if x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            return x.long(), "tokens"
    try:
        if not isinstance(x, (torch.Tensor, np.ndarray, Image.Image)) or getattr(x, "ndim", 2) not in (2, 3):
            raise TypeError(f"a {type(x).__name__}" + (f" of {x.ndim} dimensions" if hasattr(x, "ndim") else ""))
        return to_image(x).as_subclass(torch.Tensor), "image"  # -> CHW tensor
    except Exception as exc:
        raise DataError(f"{where}: the input of item {i} is a {type(x).__name__}, which ablate cannot train on "
                        f"({one_line(exc)}). Return an image (PIL, HxWxC array, CxHxW tensor), a 1-D float "
                        f"tensor of features or a 1-D int64 tensor of token ids.") from None


def _target(y, i: int, where: str) -> tuple[torch.Tensor | int, str]:
    """A target and its kind: an int is a class index, a float or float vector a
    regression target, a 1-D integer tensor token ids."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if isinstance(y, torch.Tensor) and y.ndim == 0:
        y = y.item()
    if isinstance(y, (bool, np.bool_)):
        raise DataError(f"{where}: the target of item {i} is a bool. Return an int class index (0 .. classes-1) "
                        f"or a float.")
    if isinstance(y, (int, np.integer)):
        return int(y), "class"
    if isinstance(y, (float, np.floating)):
        return torch.tensor([float(y)]), "float"
    if isinstance(y, torch.Tensor) and y.ndim == 1:
        return (y.float(), "float") if y.dtype.is_floating_point else (y.long(), "tokens")
    raise DataError(f"{where}: the target of item {i} is {type(y).__name__} {y!r:.60}, which ablate cannot train "
                    f"on. Return an int class index, a float or 1-D float tensor (regression), or a 1-D int64 "
                    f"tensor of token ids (sequence).")


def _pair(item, i: int, where: str) -> tuple[torch.Tensor, torch.Tensor | int]:
    """An (input, target) item as tensors (a class index stays an int); one line if it is not one."""
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise DataError(f"{where}: item {i} is a {type(item).__name__}, not an (input, target) pair. "
                        f"Make the data set's __getitem__ return (input, target).")
    return _input(item[0], i, where)[0], _target(item[1], i, where)[0]


def _kinds(item, where: str) -> tuple[torch.Tensor, str, str]:
    """Item 0's input tensor, input kind and target kind."""
    _pair(item, 0, where)
    x, kind = _input(item[0], 0, where)
    return x, kind, _target(item[1], 0, where)[1]


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


def _items(ds, where: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item through __getitem__, checked and stacked."""
    inputs, targets = [], []
    for i in tqdm(range(len(ds)), desc=f"reading {where}", disable=not progress or len(ds) < 20_000, leave=False):
        x, y = _pair(ds[i], i, where)
        if inputs and (x.shape != inputs[0].shape or x.dtype != inputs[0].dtype):
            raise DataError(f"{where}: the input of item {i} is {tuple(x.shape)} {x.dtype}, item 0's "
                            f"{tuple(inputs[0].shape)} {inputs[0].dtype}. ablate stacks a split into one "
                            f"tensor: give every input the same shape and type (pad sequences to one length).")
        if targets and isinstance(y, torch.Tensor) and y.shape != targets[0].shape:
            raise DataError(f"{where}: the target of item {i} has shape {tuple(y.shape)}, item 0's "
                            f"{tuple(targets[0].shape)}. Give every target the same shape.")
        if targets and isinstance(y, int) != isinstance(targets[0], int):
            raise DataError(f"{where}: the target of item {i} is a {type(y).__name__}, item 0's a "
                            f"{type(targets[0]).__name__}. Give every target one kind.")
        inputs.append(x)
        targets.append(y)
    y = torch.tensor(targets, dtype=torch.int64) if isinstance(targets[0], int) else torch.stack(targets)
    return torch.stack(inputs), y


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
    """The data set of one split, as its option describes it: the `train` or `test`
    node's `_target_` called with that node's arguments, or the option's own
    `_target_` called as (root, train=..., download=...)."""
    split = "train" if train else "test"
    own = d.get(split)
    if own is not None or d.get("train" if not train else "test") is not None:
        if not (own is not None and "_target_" in own):
            raise ConfigError(f"data={d.name}: data.{split} has no _target_. Give both splits as nodes with "
                              f"their own _target_ (data.train and data.test), or neither.")
        node = OmegaConf.to_container(own, resolve=True)
        try:
            ds = instantiate({"_convert_": "all", **node})
        except Exception as exc:
            raise ConfigError(f"data={d.name}: cannot build data.{split} ({node['_target_']}): "
                              f"{instantiate_error(exc)}. Fix data.{split}._target_ or its arguments.") from None
        target, source = node["_target_"], f"data.{split} ({node['_target_']})"
    else:
        node = {k: v for k, v in OmegaConf.to_container(d, resolve=True).items() if k not in DATA_KEYS}
        target = node.get("_target_")
        if not target:
            raise ConfigError(f"data={d.name}: no _target_. Name a torchvision-style data set class in the "
                              f"data option (`_target_: torchvision.datasets.KMNIST`), or give data.train and "
                              f"data.test nodes, each with its own _target_.")
        cls = locate(target)  # None for nothing importable: instantiate says why
        root = str(_root(d.root))
        if d.get("archives") and _mnist_like(cls):
            root = _from_archives(cls, root, d.archives)
        try:
            ds = instantiate({"_convert_": "all", **node}, root=root, train=train, download=d.download)
        except Exception as exc:
            cause = exc.__cause__ or exc
            if not isinstance(cls, type) or isinstance(cause, TypeError):
                raise ConfigError(f"data={d.name}: cannot build {target}: {instantiate_error(exc)}. Fix "
                                  f"data._target_ (an importable data set class taking (root, train=..., "
                                  f"download=...)) or its arguments.") from None
            raise _diagnose(cls, root, d.name, cause, d.download) from None
        source = f"{target}(root={root}, train={train})"
        if _mnist_like(cls):  # name the file a label error is about
            source = str(Path(root) / cls.__name__ / "raw" / f"{'train' if train else 't10k'}-labels-idx1-ubyte")
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise ConfigError(f"data={d.name}: {target} gave a {type(ds).__name__}, which is not a data set "
                          f"(no __getitem__ and __len__). Point it at a torch Dataset class or a function "
                          f"that returns one.")
    return ds, source


def _root(root: str) -> Path:
    """data.root, a relative one from the folder the command ran in: the same path in the
    sweep's pre-flight and in every job, also with hydra.job.chdir=true."""
    return Path(to_absolute_path(str(Path(root).expanduser()))).resolve()


@lru_cache(maxsize=4)
def _read(key: str, progress: bool = True) -> tuple[Split, Split]:
    d = OmegaConf.create(key)
    limit = d.memory_limit_mb * 2**20
    splits, size = [], 0
    for train in (True, False):
        ds, source = _build(d, train)
        where = f"data={d.name} ({'train' if train else 'test'} split)"
        if len(ds) == 0:
            raise DataError(f"{where}: the data set is empty ({source}). Check data.root and its files.")
        x, kind, target_kind = _kinds(ds[0], where)
        size += len(ds) * x.numel() * 4  # as float32 on the device
        labels = getattr(ds, "targets", None) if target_kind == "class" else None
        split = Split(None, labels, ds, tuple(x.shape), kind, target_kind, source)
        if split.targets is not None:
            split.targets = torch.as_tensor(split.targets, dtype=torch.int64)
            if len(split.targets) != len(ds):
                noun = "images" if kind == "image" else "inputs"
                raise DataError(f"{where}: {len(ds)} {noun} but {len(split.targets)} labels in {source}. "
                                f"The files do not belong together: replace them with a matching pair.")
        splits.append((split, ds, where))
    for split, ds, where in splits:
        if size <= limit:
            split.inputs, split.targets = (_arrays(ds) if split.kind == "image" else None) or \
                _items(ds, where, progress)
    train, test = (s for s, _, _ in splits)
    if size > limit:
        log.info(f"data={d.name}: {size / 2**20:,.0f} MB as float32 is over data.memory_limit_mb="
                 f"{d.memory_limit_mb}; streaming it through a DataLoader")
    return train, test


def _key(d) -> str:
    """The part of the data node that decides what is read: a cache key."""
    node = OmegaConf.to_container(d, resolve=True)
    node["root"] = str(_root(node["root"]))
    for k in (*DERIVED, "train_subset", "num_workers", "standardize"):
        node.pop(k, None)
    return OmegaConf.to_yaml(node)


def splits(cfg) -> tuple[Split, Split]:
    """The config's two splits as read (cached per process)."""
    return _read(_key(cfg.data), bool(cfg.get("progress", True)))


# ----------------------------------------------------------------------------- checking

def _classes(d, train: Split) -> int:
    if d.get("num_classes") is not None:
        return int(d.num_classes)
    listed = getattr(train.dataset, "classes", None)
    if isinstance(listed, (list, tuple)) and len(listed) > 1:
        return len(listed)
    if train.targets is None:
        raise ConfigError(f"data={d.name}: the class count cannot be read off a streamed set without "
                          f".classes or .targets. Set it with `data.num_classes=<n>`.")
    return int(train.targets.max()) + 1


def _vocab(d, train: Split, test: Split) -> int:
    if d.get("vocab_size") is not None:
        return int(d.vocab_size)
    listed = getattr(train.dataset, "vocab_size", None)
    if isinstance(listed, int) and listed > 0:
        return listed
    if train.inputs is None:
        raise ConfigError(f"data={d.name}: the vocabulary size cannot be read off a streamed set. "
                          f"Set it with `data.vocab_size=<n>`, or give the data set a vocab_size attribute.")
    ids = [t for s in (train, test) for t in (s.inputs, s.targets) if t is not None and not t.is_floating_point()]
    return int(max(int(t.max()) for t in ids)) + 1


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
    if train.inputs is None:
        raise ConfigError(f"data={d.name} streams, so its mean and std are not computed. "
                          f"Set them with `data.mean=[...] data.std=[...]` (pixel units, per channel).")
    s, sq, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for chunk in train.inputs.split(4096):
        x = chunk.to(torch.float64).transpose(0, 1).reshape(c, -1)
        if train.inputs.dtype == torch.uint8:
            x /= 255.0
        s, sq, n = s + x.sum(1), sq + x.square().sum(1), n + x.shape[1]
    mean = s / n
    std = (sq / n - mean.square()).clamp_min(0).sqrt()
    return [round(v, 4) for v in mean.tolist()], [round(max(v, 1e-4), 4) for v in std.tolist()]


def _agree(d, key: str, value) -> None:
    if d.get(key) is not None and d[key] != value:
        raise ConfigError(f"data.{key}={d[key]} is invalid: data={d.name} has {value}. Fix it with "
                          f"`data.{key}={value}`, or null to read it from the data.")


def check(cfg) -> int:
    """Read the data (once per process), check it against the task, and fill the
    config's derived keys in place where they are null: for images channels, height,
    width, mean and std; features; seq_len and vocab_size for tokens; num_classes
    for class targets; targets (the regression outputs). Every problem is one line,
    raised before any run exists. Returns the train size."""
    d, kind = cfg.data, cfg.task.kind
    train, test = splits(cfg)
    if (test.shape, test.kind, test.target_kind) != (train.shape, train.kind, train.target_kind):
        raise DataError(f"data={d.name}: the test split gives {test.kind} {test.shape} inputs and {test.target_kind} "
                        f"targets, the training split {train.kind} {train.shape} and {train.target_kind}. Both "
                        f"splits must give one kind and shape.")
    noun = "images" if train.kind == "image" else "samples"
    need = TARGETS_OF.get(kind)
    if need is not None and train.target_kind != need:
        fits = {v: k for k, v in TARGETS_OF.items()}[train.target_kind]
        raise ConfigError(f"task={cfg.task.name} needs {need} targets, but data={d.name} gives {train.target_kind} "
                          f"targets. Choose `task={fits}`, or make the data set return {need} targets.")
    derived = {}
    if train.kind == "image":
        c, h, w = train.shape
        for key, value in zip(("channels", "height", "width"), (c, h, w), strict=True):
            _agree(d, key, value)
        derived.update(channels=c, height=h, width=w)
    else:
        given = [k for k in IMAGE_ONLY if d.get(k) is not None]
        if given:
            raise ConfigError(f"data.{given[0]} applies to images, and data={d.name} gives {train.kind}. "
                              f"Remove it (set it to null).")
        aug = [k for k, v in cfg.augmentation.items() if k != "name" and v is not None]
        if aug:
            raise ConfigError(f"augmentation={cfg.augmentation.name} ({', '.join(aug)}) transforms images, and "
                              f"data={d.name} gives {train.kind}. Use `augmentation=none`.")
        if train.kind == "features":
            _agree(d, "features", train.shape[0])
            derived["features"] = train.shape[0]
        else:
            _agree(d, "seq_len", train.shape[0])
            derived["seq_len"] = train.shape[0]
    if train.kind == "tokens" or train.target_kind == "tokens":
        vocab = _vocab(d, train, test)
        derived["vocab_size"] = vocab
        for split in (train, test):
            for what, t in (("input", split.inputs), ("target", split.targets)):
                if t is None or t.is_floating_point():
                    continue
                ignore = cfg.task.get("ignore_index") if what == "target" else None
                bad = ((t < 0) | (t >= vocab)) & (t != ignore if ignore is not None else True)
                if bad.any():
                    i = int(bad.nonzero()[0][0])
                    raise DataError(f"data={d.name}: a {what} token id of item {i} in {split.source} is "
                                    f"{int(t[i][bad[i]][0])}, outside the vocabulary (0..{vocab - 1}). Fix the "
                                    f"ids or `data.vocab_size=<n>`.")
    if train.target_kind == "class":
        classes = _classes(d, train)
        derived["num_classes"] = classes
        for split in (train, test):
            if split.targets is None:
                continue
            bad = ((split.targets < 0) | (split.targets >= classes)).nonzero()
            if len(bad):
                i = int(bad[0])
                raise DataError(f"data={d.name}: label {int(split.targets[i])} of item {i} in {split.source} is "
                                f"outside the {classes} classes (0..{classes - 1}). Fix the labels (a corrupt "
                                f"file?) or the class count: `data.num_classes=<n>`.")
    elif train.target_kind == "float":
        _agree(d, "targets", train.targets.shape[1] if train.targets is not None else None)
        derived["targets"] = int(train.targets.shape[1]) if train.targets is not None else d.get("targets")
        if train.targets is not None and not torch.isfinite(train.targets).all():
            raise DataError(f"data={d.name}: the training targets hold NaN or inf. Fix or drop those samples.")
    n, sub = len(train), d.train_subset
    if sub is not None and sub > n:
        raise ConfigError(f"data.train_subset={sub} is invalid: the {d.name} training set "
                          f"has only {n} {noun}. Fix it with `data.train_subset=<1..{n}>`.")
    if train.kind == "image":
        derived["mean"], derived["std"] = _stats(d, train)
    _unread(cfg, train, derived)
    with open_dict(d):
        for key, value in derived.items():
            if d.get(key) is None:
                d[key] = value
    return n


def _unread(cfg, train: Split, derived: dict) -> None:
    """A data key set for data it does not apply to would fork the config and change
    nothing: refused, naming what the data is."""
    d = cfg.data
    for key in ("features", "seq_len", "vocab_size", "targets", "num_classes"):
        if d.get(key) is not None and key not in derived:
            raise ConfigError(f"data.{key}={d[key]} does not apply: data={d.name} gives {train.kind} inputs and "
                              f"{train.target_kind} targets. Remove it (set it to null).")
    if d.get("standardize") is False and train.kind != "features":
        raise ConfigError(f"data.standardize=false does not apply: it standardises feature vectors, and "
                          f"data={d.name} gives {train.kind} inputs. Remove it.")
    if cfg.task.get("ignore_index") is not None and cfg.task.kind != "sequence":
        raise ConfigError(f"task.ignore_index={cfg.task.ignore_index} does not apply to task={cfg.task.name}: "
                          f"only a sequence task skips target positions. Remove it (set it to null).")


# ----------------------------------------------------------------------------- on the device

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
    """The checked set on `device`: images normalised with the per-channel mean and
    std, features standardised, token ids as they are."""
    check(cfg)
    d = cfg.data
    train, test = splits(cfg)
    normalise = _normaliser(cfg, train, device)
    classes = d.get("num_classes") if train.target_kind == "class" else None

    def place(split: Split, n: int):
        if split.inputs is None:
            return Stream(split, n, normalise, device, d.num_workers, classes, d.name)
        return Tensors(normalise(split.inputs[:n]), split.targets[:n].to(device))

    n_train = len(train) if d.train_subset is None else d.train_subset
    image = train.kind == "image"
    return Data(place(train, n_train), place(test, len(test)), train.kind,
                _floats(d.mean) if image else None, _floats(d.std) if image else None)
