"""Optimizer and learning-rate scheduler from their config nodes.

Both are `_target_` nodes with `_partial_: true`, the idiom of lightning-hydra-template,
so any torch.optim optimizer or scheduler, or a class of yours, works:

    optimizer: {_target_: torch.optim.AdamW, _partial_: true, weight_decay: 0.05}
    scheduler: {_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true,
                T_max: ${train.epochs}}

The engine passes what only it knows: the parameters, and `lr` (train.lr, the one
learning-rate key) to the optimizer; the optimizer, and where the scheduler's signature
takes them and its node does not give them, `epochs` (train.epochs), `steps_per_epoch`
(batches per epoch) and `max_lr` (train.lr x the node's `max_lr_factor`) to the scheduler.

ablate's own keys in a node, read and never passed on: `name` (the option, logged as
`optimizer=<name>`); in a scheduler, `interval` (`epoch` or `step`: when it steps, as
in Lightning's scheduler config; by default `step` for OneCycleLR and CyclicLR, which
are built for it, and `epoch` otherwise) and `max_lr_factor`. A scheduler node with no
`_target_` (scheduler=none) keeps the rate constant. ReduceLROnPlateau steps on the
validation loss (the test loss without a validation split; engine.fit).
"""
from __future__ import annotations

import inspect

import torch
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from ablate.errors import ConfigError, instantiate_error, one_line
from ablate.schema import refuse

Scheduler = torch.optim.lr_scheduler.LRScheduler  # ReduceLROnPlateau is one too (torch >= 2.2)
PER_STEP = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)
OWN = {"optimizer": {"name"}, "scheduler": {"name", "interval", "max_lr_factor"}}
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
BASE = {"optimizer": "torch.optim.Optimizer", "scheduler": "torch.optim.lr_scheduler.LRScheduler"}
EXAMPLE = {"optimizer": "torch.optim.AdamW", "scheduler": "torch.optim.lr_scheduler.CosineAnnealingLR"}


def _class(cfg, group: str, base: type) -> type:
    """The class a node's `_target_` names, which must be a `base`."""
    target = cfg[group]["_target_"]
    try:
        cls = get_object(target)
    except Exception as exc:
        raise ConfigError(f"{group}._target_={target!r} does not name a class: {instantiate_error(exc)}. Name "
                          f"one, e.g. `{group}._target_={EXAMPLE[group]}`.") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{group}._target_={target}: {getattr(cls, '__name__', target)} is not a {BASE[group]}. "
                          f"Name one, e.g. `{group}._target_={EXAMPLE[group]}`.")
    return cls


def _arguments(cfg, group: str, cls: type, passed: set[str]) -> dict:
    """The node's arguments for `cls`: ablate's own keys out; a key the class does not
    take, or one the engine passes, refused in one line."""
    node = cfg[group]
    args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
            if k not in OWN[group] and k not in HYDRA_KEYS}
    if "lr" in args and group == "optimizer":
        raise ConfigError(f"optimizer.lr={args['lr']}: the learning rate is train.lr, one key for every optimizer "
                          f"and schedule. Set `train.lr={args['lr']}` and remove optimizer.lr.")
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return args
    takes = {k for k in list(params)[1:] if k not in passed}  # the first is the params or the optimizer
    for key in args:
        if key not in takes:
            raise refuse(f"{group}.{key}", takes | OWN[group],
                         f"{group}={node.get('name', '?')}, a {node['_target_']}")
    return args


def _build(cfg, group: str, args: dict, *positional, **passed):
    node = {"_target_": cfg[group]["_target_"], "_partial_": True, **args}
    try:
        return instantiate(node, _convert_="all")(*positional, **passed)
    except Exception as exc:
        raise ConfigError(f"{group}: cannot build {node['_target_']}: {instantiate_error(exc)}. Fix "
                          f"{group}'s arguments.") from None


def build(cfg, parameters, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Scheduler | None, bool]:
    """The optimizer over `parameters`, its scheduler (None: a constant rate), and whether
    the scheduler steps after every batch (else once per epoch). ConfigError, in one
    line, for a class that is not an optimizer or scheduler or for arguments it refuses."""
    parameters = list(parameters)
    cls = _class(cfg, "optimizer", torch.optim.Optimizer)
    passed = {"lr": cfg.train.lr}
    # One kernel for all parameters instead of a foreach op per update term: SGD's
    # step on step 7's 22 small tensors took 101 -> 49 us on CPU (2 threads).
    if "fused" in inspect.signature(cls).parameters and parameters[0].device.type in ("cpu", "cuda"):
        passed["fused"] = True
    args = _arguments(cfg, "optimizer", cls, {"lr"})
    passed = {k: v for k, v in passed.items() if k not in args}  # `fused: false` in the node wins
    opt = _build(cfg, "optimizer", args, parameters, **passed)
    node = cfg.get("scheduler")
    if node is None or node.get("_target_") is None:
        return opt, None, False
    cls = _class(cfg, "scheduler", Scheduler)
    takes = inspect.signature(cls).parameters
    fills = {"epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch}
    if "max_lr" in takes and node.get("max_lr_factor") is not None:
        fills["max_lr"] = cfg.train.lr * node.max_lr_factor
    args = _arguments(cfg, "scheduler", cls, set())
    given = set(args) | ({"epochs", "steps_per_epoch"} if args.get("total_steps") is not None else set())
    passed = {k: v for k, v in fills.items() if k in takes and k not in given}
    sched = _build(cfg, "scheduler", args, opt, **passed)
    interval = node.get("interval") or ("step" if issubclass(cls, PER_STEP) else "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval={interval!r} is invalid: must be epoch or step. Fix it with "
                          f"`scheduler.interval=epoch`.")
    return opt, sched, interval == "step"


def check_optim(cfg) -> None:
    """Build both on a stand-in parameter, before any run exists: a bad class, key or
    value fails here, in one line."""
    try:
        build(cfg, [torch.nn.Parameter(torch.zeros(1))], steps_per_epoch=1)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"optimizer or scheduler: {one_line(exc)}. Fix their arguments.") from None
