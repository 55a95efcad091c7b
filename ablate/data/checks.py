"""Checks: the data against the task, before any run. Every problem is one line; what
the data decides (image shape, class count, mean and std, ...) is returned, not
written into the config."""
from __future__ import annotations

import torch
from omegaconf import ListConfig, open_dict

from ablate.data.items import Split
from ablate.data.sources import splits
from ablate.errors import ConfigError, DataError

IMAGE_ONLY = ("channels", "height", "width", "mean", "std")
# What a task needs of the targets: class indices, floats, token ids.
TARGETS_OF = {"classification": "class", "regression": "float", "sequence": "tokens"}


def _listed(ds, name: str):
    """A data set's attribute (`classes`, `vocab_size`), also through a held-out Subset."""
    while not hasattr(ds, name) and hasattr(ds, "dataset") and hasattr(ds, "indices"):
        ds = ds.dataset
    return getattr(ds, name, None)


def _classes(d, train: Split) -> int:
    if d.get("num_classes") is not None:
        return int(d.num_classes)
    listed = _listed(train.dataset, "classes")
    if isinstance(listed, (list, tuple)) and len(listed) > 1:
        return len(listed)
    if train.targets is None:
        raise ConfigError(f"data={d.name}: the class count cannot be read off a streamed set without "
                          f".classes or .targets. Set it with `data.num_classes=<n>`.")
    return int(train.targets.max()) + 1


def _vocab(d, every: list[Split]) -> int:
    train = every[0]
    if d.get("vocab_size") is not None:
        return int(d.vocab_size)
    listed = _listed(train.dataset, "vocab_size")
    if isinstance(listed, int) and listed > 0:
        return listed
    if train.inputs is None:
        raise ConfigError(f"data={d.name}: the vocabulary size cannot be read off a streamed set. "
                          f"Set it with `data.vocab_size=<n>`, or give the data set a vocab_size attribute.")
    ids = [t for s in every for t in (s.inputs, s.targets) if t is not None and not t.is_floating_point()]
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


def check_data(cfg) -> dict:
    """Read the data (once per process) and check every split against the task. Every
    problem is one line, raised before any run exists. Returns what the data decides
    of the keys the config leaves null (`fill` writes them in): for images channels,
    height, width, mean and std; features; seq_len and vocab_size for tokens;
    num_classes for class targets; targets (the regression outputs)."""
    d, kind = cfg.data, cfg.task.kind
    train, test, val = parts = splits(cfg)
    others = [(name, s) for name, s in zip(("test", "validation"), (test, val), strict=True) if s is not None]
    for name, other in others:
        if (other.shape, other.kind, other.target_kind) != (train.shape, train.kind, train.target_kind):
            raise DataError(f"data={d.name}: the {name} split gives {other.kind} {other.shape} inputs and "
                            f"{other.target_kind} targets, the training split {train.kind} {train.shape} and "
                            f"{train.target_kind}. Every split must give one kind and shape.")
    every = [s for s in parts if s is not None]
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
        vocab = _vocab(d, every)
        derived["vocab_size"] = vocab
        for split in every:
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
        for split in every:
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
    _finite(d, every)
    n, sub = len(train), d.train_subset
    if sub is not None and sub > n:
        held = f" once data.val={d.val} is held out" if val is not None and val.drawn else ""
        raise ConfigError(f"data.train_subset={sub} is invalid: the {d.name} training set "
                          f"has only {n} {noun}{held}. Fix it with `data.train_subset=<1..{n}>`.")
    if train.kind == "image":
        derived["mean"], derived["std"] = _stats(d, train)
    _unread(cfg, train, derived)
    return {key: value for key, value in derived.items() if d.get(key) is None}


def checked(cfg):
    """The config, checked (`check`) and filled in (`fill`): what `load` takes."""
    fill(cfg, check_data(cfg))
    return cfg


def fill(cfg, derived: dict) -> None:
    """Write what `check` derived into the config's null data keys, so the run's params
    say what it trained on."""
    with open_dict(cfg.data):
        for key, value in derived.items():
            cfg.data[key] = value


def _finite(d, every: list[Split]) -> None:
    """One pass over every float tensor of every split held in memory: a NaN or inf in
    the data is a data error, named with its item, not a divergence in epoch 1 (whose
    fix would be the learning rate). A streamed set is not scanned: it is read while it trains."""
    for split in every:
        for what, t in (("input", split.inputs), ("target", split.targets)):
            if t is None or not t.is_floating_point():
                continue
            bad = ~torch.isfinite(t.reshape(len(t), -1)).all(1)
            if bad.any():
                i = int(bad.nonzero()[0])
                raise DataError(f"data={d.name}: the {what} of item {i} in {split.source} holds NaN or inf "
                                f"({int(bad.sum())} items do). Fix or drop those samples in the data set.")


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


