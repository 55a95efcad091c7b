"""Sources: where a split comes from. A data option's `_target_` (a torchvision-style
class built as (root, train=..., download=...)) or its `train`/`test`/`val` nodes,
Debian's archives, one-line diagnoses of missing or corrupt files, the per-process
cache, and the validation split held out of the training split."""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from pydoc import locate
from typing import NamedTuple

import numpy as np
import torch
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from ablate.data.items import Split, _arrays, _items, _kinds
from ablate.errors import ConfigError, DataError, instantiate_error, one_line
from ablate.schema import DATA_KEYS

log = logging.getLogger(__name__)

# Filled in from the data set when the config leaves them null (those that apply to it).
DERIVED = ("channels", "height", "width", "num_classes", "mean", "std", "features", "seq_len", "vocab_size",
           "targets")

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


def _build(d, split: str) -> tuple[Dataset, str]:
    """The data set of one split (train, test or val), as its option describes it: the
    split's node's `_target_` called with that node's arguments, or the option's own
    `_target_` called as (root, train=..., download=...). A `val` node is always its own."""
    train = split == "train"
    own = d.get(split)
    if split == "val" or own is not None or d.get("test" if train else "train") is not None:
        if not (own is not None and "_target_" in own):
            if split == "val":
                raise ConfigError("data.val is a node without _target_. Give a fraction in (0, 1) or a count of "
                                  "the training split to hold out, or a node with its own _target_.")
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
def _read(key: str, progress: bool = True) -> tuple[Split, Split, Split | None]:
    """The train and test splits (and a `val` node's split) of a data node's key."""
    d = OmegaConf.create(key)
    limit = d.memory_limit_mb * 2**20
    read, size = [], 0
    for name in ("train", "test", *(["val"] if isinstance(d.get("val"), dict | DictConfig) else [])):
        ds, source = _build(d, name)
        where = f"data={d.name} ({name} split)"
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
        read.append((split, ds, where))
    for split, ds, where in read:
        if size <= limit:
            split.inputs, split.targets = (_arrays(ds) if split.kind == "image" else None) or \
                _items(ds, where, progress)
    if size > limit:
        log.info(f"data={d.name}: {size / 2**20:,.0f} MB as float32 is over data.memory_limit_mb="
                 f"{d.memory_limit_mb}; streaming it through a DataLoader")
    found = [s for s, _, _ in read]
    return found[0], found[1], found[2] if len(found) > 2 else None


def _key(d) -> str:
    """The part of the data node that decides what is read: a cache key. A held-out
    fraction or count is not: it is carved from the split as read."""
    node = OmegaConf.to_container(d, resolve=True)
    node["root"] = str(_root(node["root"]))
    for k in (*DERIVED, "train_subset", "num_workers", "standardize"):
        node.pop(k, None)
    if not isinstance(node.get("val"), dict):
        node.pop("val", None)
    return OmegaConf.to_yaml(node)


# The held-out draw's random_state: fixed, never the run's seed, so every arm and
# every seed of a study is chosen on one validation set.
VAL_DRAW = 0


class Splits(NamedTuple):
    train: Split
    test: Split
    val: Split | None  # none: epochs are chosen on the test split


def _part(split: Split, index: np.ndarray, source: str) -> Split:
    idx = torch.from_numpy(index)
    if split.inputs is None:  # streamed: a view of the data set; its class labels follow
        targets = split.targets[idx] if split.targets is not None else None
        return replace(split, targets=targets, dataset=Subset(split.dataset, index.tolist()), source=source)
    return replace(split, inputs=split.inputs[idx], targets=split.targets[idx], source=source)


def held_out(train: Split, v, name: str) -> tuple[Split, Split]:
    """`data.val` (a fraction in (0, 1) or a count) of the training split held out: one
    draw with random_state VAL_DRAW, stratified by class for class targets (sklearn's
    train_test_split); both parts keep the split's order. Raises ConfigError when the
    split cannot give it."""
    n = len(train)
    count = int(np.ceil(v * n)) if isinstance(v, float) else int(v)
    if count >= n:
        raise ConfigError(f"data.val={v} is invalid: it holds out {count} of the {n} training items of data="
                          f"{name}, leaving none to train on. Use a fraction in (0, 1) or a count below {n}.")
    # Imported here: sklearn.model_selection adds 2.0 s to a job's start (python -X importtime).
    from sklearn.model_selection import train_test_split
    labels = train.targets.numpy() if train.target_kind == "class" and train.targets is not None else None
    try:
        keep, held = train_test_split(np.arange(n), test_size=v, random_state=VAL_DRAW, stratify=labels)
    except ValueError as exc:
        raise ConfigError(f"data.val={v} cannot be drawn from data={name}: {one_line(exc)}. Hold out more "
                          f"(a stratified draw needs at least one item of every class).") from None
    keep, held = np.sort(keep), np.sort(held)
    val = _part(train, held, f"{train.source}, held out by data.val={v}")
    # The draw's digest, logged with the run: two runs with one digest chose on one set.
    val.drawn = f"{len(held)} of {n}{' stratified' if labels is not None else ''}, random_state {VAL_DRAW}, " \
                f"sha256 {hashlib.sha256(held.astype(np.int64).tobytes()).hexdigest()[:12]}"
    return _part(train, keep, train.source), val


@lru_cache(maxsize=2)
def _splits(key: str, val, progress: bool) -> Splits:
    train, test, own = _read(key, progress)
    if own is not None or val is None:
        return Splits(train, test, own)
    kept, held = held_out(train, val, OmegaConf.create(key).get("name"))
    return Splits(kept, test, held)


def splits(cfg) -> Splits:
    """The config's splits, as read (cached per process): train, test, and val when
    the config has one."""
    val = cfg.data.get("val")
    return _splits(_key(cfg.data), None if isinstance(val, DictConfig) else val, bool(cfg.get("progress", True)))
