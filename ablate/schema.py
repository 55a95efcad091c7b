"""Schema: ablate's own config nodes as typed dataclasses (Hydra structured configs,
registered in the ConfigStore as `ablate_schema`, the first entry of conf/config.yaml's
defaults). A value of the wrong type fails when the config is composed.

Hydra's `+key=value` adds a key even to a typed node, so `check_keys` walks the
composed config: a key that nothing reads is refused in one line, whether or not it
came with `+`. A key that changed the config must change what is computed.

Open nodes: the options of the groups `data` and `model` with `_target_` pass their
other keys to that callable, which refuses those it does not take (in one line too);
so do `task.loss` and each `task.metrics.<name>`; `optimizer` and `scheduler` are checked
against their class's signature (ablate.optim). ablate's own group options (block-list
models, norm, augmentation) are checked against OPTION_KEYS.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ablate.errors import HINTS, ConfigError


class Choice(str, Enum):
    """The values a choice key takes. OmegaConf refuses any other when the config is
    composed, in one line that lists these; a member is its string everywhere (==, format,
    JSON, MLflow params), so fingerprints and logged params read as before."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Device(Choice):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class TaskKind(Choice):
    classification = "classification"
    regression = "regression"
    sequence = "sequence"


class Goal(Choice):
    max = "max"
    min = "min"


class Select(Choice):
    final = "final"   # the last epoch's value
    best = "best"     # the best epoch's, chosen on validation (on test without a validation split: optimistic)


class OnRunning(Choice):
    skip = "skip"     # a config another live job is training: skip it
    wait = "wait"     # wait for that job, then read its result


@dataclass
class SeedsConf:
    """A seed per source of variance (Bouthillier et al., MLSys 2021), each defaulting to
    `seed`: sweep one while holding the others (docs/adaptive.md)."""
    # common random numbers across arms: each source draws from a stream of its own, so the
    # arms of one seed share batch order, augmentation and dropout draws where they apply the
    # same ops and layers, and the same initial weights wherever their layers' shapes agree
    # (block-list models). false: the seed study's protocol
    # (the step presets set it): one stream seeded by `seed` drives every source.
    common: bool = True
    init: int | None = None      # the model's initial weights
    data: int | None = None      # the order of the training batches
    augment: int | None = None   # augmentation draws
    dropout: int | None = None   # dropout masks (torch's global stream after the model is built)


# The sources of variance a seed drives (SeedsConf's numbers, not its mode)
SEED_SOURCES = ("init", "data", "augment", "dropout")


@dataclass
class EarlyStoppingConf:
    """On the validation objective (needs data.val), as Lightning's EarlyStopping."""
    patience: int | None = None     # epochs without improvement on the validation objective; null = off
    min_delta: float = 0.0          # an improvement must beat the best by more than this (objective's units)


@dataclass
class TrainConf:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.01
    eval_batch_size: int = 1000     # evaluation only; does not change results
    threads: int | None = None      # torch threads per job; null = $OMP_NUM_THREADS, else cores / parallel jobs
    channels_last: bool = True      # NHWC memory layout for 4-D inputs; same maths, faster conv kernels
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)


@dataclass
class TaskConf:
    name: str = "classification"
    kind: TaskKind = TaskKind.classification
    loss: Any = None                # {_target_: torch.nn.CrossEntropyLoss, <its arguments>}
    metrics: dict[str, Any] = field(default_factory=dict)  # name -> {} (built-in) or {_target_: ..., goal: ...}
    ignore_index: int | None = None  # sequence: target positions that count nowhere


@dataclass
class ObjectiveConf:
    """What the study optimises: one of the task's metrics. It decides the run's best epoch
    and summary, the value returned to Hydra's sweepers, and what every report, adaptive
    seed policy and greedy path compares. With a validation split (data.val) the choices
    are made on its validation value, and the reports show the test value."""
    metric: str | None = None       # a task metric's name (acc, f1, rmse, bpc, ...); null = the task's first
    goal: Goal | None = None        # max | min; null = the metric's own direction (which it must match)
    select: Select = Select.final   # final: the last epoch's; best: the best epoch's (on data.val; else on test)


@dataclass
class TrackingConf:
    uri: str | None = None          # null = sqlite:///<launch dir>/mlflow.db (MLflow's embedded store)
    experiment: str = "ablate"
    checkpoints: bool = True        # per-epoch checkpoint, for resume
    checkpoint_dir: str | None = None  # null = <launch dir>/checkpoints; each run's file is in <dir>/<run id>/
    grace_s: float = 300.0          # a store outage shorter than this is waited out; longer ends the job
    heartbeat_s: float = 1800.0     # a RUNNING run whose heartbeat (set every epoch) is older is dead
    on_running: OnRunning = OnRunning.skip  # a live job trains this config already: skip | wait


@dataclass
class ReportConf:
    auto: bool = True               # write the report at the end of a multirun
    out: str | None = None          # null = <sweep dir>/report
    sesoi: float | None = None  # smallest effect of interest, in the objective's units: turns on equivalence (TOST)


@dataclass
class DesignConf:
    """Set by the ablation sweeper for each of its jobs: the job's place in the design.
    Tags, not params, and not in the fingerprint."""
    name: str | None = None
    kind: str | None = None
    arm: str | None = None
    levels: Any = None  # factor -> on/off; untyped: the sweeper's override merges a dict onto null


@dataclass
class Config:
    seed: int = 0
    seeds: SeedsConf = field(default_factory=SeedsConf)
    step: int | None = None         # set by the step presets, so reports can order runs by it
    device: Device = Device.auto
    force: bool = False             # true: rerun even if a FINISHED run with the same config exists
    progress: bool = True           # tqdm bars; set false in logs and CI
    train: TrainConf = field(default_factory=TrainConf)
    task: TaskConf = field(default_factory=TaskConf)
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    report: ReportConf = field(default_factory=ReportConf)
    design: DesignConf = field(default_factory=DesignConf)
    # the config groups' options: open nodes, checked by check_keys and their callables
    data: Any = None
    model: Any = None
    norm: Any = None
    augmentation: Any = None
    optimizer: Any = None
    scheduler: Any = None


ConfigStore.instance().store(name="ablate_schema", node=Config)

# What ablate reads of its own group options, beside `name`.
OPTION_KEYS: dict[str, dict[str, set[str]]] = {
    "norm": {"*": set()},
    "augmentation": {"*": {"crop", "flip", "rotate", "erase"}},
}
AUGMENT_KEYS = {"crop": {"padding", "fill"}, "flip": {"p"}, "rotate": {"degrees", "fill", "interpolation"},
                "erase": {"p", "scale", "ratio", "value"}}
BLOCK_MODEL_KEYS = {"name", "dropout", "norms", "blocks", "head"}
HEAD_KEYS = {"type", "kernel"}
BLOCK_KEYS = {"conv", "kernel", "padding"}
# ablate's own keys in the data node (config.yaml gives their defaults); every other
# key is an argument of the `_target_` class.
DATA_KEYS = ("name", "root", "download", "archives", "train_subset", "mean", "std", "channels", "height",
             "width", "num_classes", "memory_limit_mb", "num_workers", "standardize", "features", "seq_len",
             "vocab_size", "targets", "train", "test", "val")


def refuse(key: str, allowed, what: str) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    hint = f" {leaf} is set at {HINTS[leaf]}." if leaf in HINTS and not key.startswith(HINTS[leaf]) else ""
    return ConfigError(f"{key}: no such key in {what} (its keys: {', '.join(sorted(allowed)) or 'none'}); it would "
                       f"be read by nothing.{hint} Remove it, or check its spelling (`--cfg job` after your "
                       f"command prints every key).")


def typed(node: DictConfig, prefix: str) -> None:
    """Every key of a dataclass-typed node is one of its fields; recursively."""
    kind = OmegaConf.get_type(node)
    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        return
    fields = {f.name for f in dataclasses.fields(kind)}
    for key in node:
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise refuse(dotted, fields, prefix or "the config's top level")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            typed(child, dotted)


def _option(cfg: DictConfig, group: str) -> None:
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        return
    table = OPTION_KEYS[group]
    allowed = table.get(str(node.get("name")), table.get("*"))
    if allowed is None:
        return  # an option ablate does not know: validate names the choices
    for key in node:
        if key != "name" and key not in allowed:
            raise refuse(f"{group}.{key}", allowed | {"name"}, f"{group}={node.get('name')}")
    if group == "augmentation":
        for op, keys in AUGMENT_KEYS.items():
            sub = node.get(op)
            for key in sub if isinstance(sub, DictConfig) else ():
                if key not in keys:
                    raise refuse(f"augmentation.{op}.{key}", keys, f"augmentation.{op}")


def _block_model(model: DictConfig) -> None:
    for key in model:
        if key not in BLOCK_MODEL_KEYS:
            raise refuse(f"model.{key}", BLOCK_MODEL_KEYS, f"the block-list model {model.get('name')} (a model "
                          f"with _target_ passes its keys to its class)")
    head = model.get("head")
    for key in head if isinstance(head, DictConfig) else ():
        if key not in HEAD_KEYS:
            raise refuse(f"model.head.{key}", HEAD_KEYS, "model.head")
    for i, block in enumerate(model.get("blocks") or []):
        for key in block if isinstance(block, DictConfig) else ():
            if key not in BLOCK_KEYS:
                raise refuse(f"model.blocks[{i}].{key}", BLOCK_KEYS, "a conv block")


def check_keys(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key that nothing reads."""
    typed(cfg, "")
    for group in OPTION_KEYS:
        _option(cfg, group)
    model = cfg.get("model")
    if isinstance(model, DictConfig) and "_target_" not in model:
        _block_model(model)
    data = cfg.get("data")
    if isinstance(data, DictConfig) and (data.get("train") is not None or data.get("test") is not None):
        extra = [k for k in data if k not in DATA_KEYS and k != "_target_"]
        if extra:  # with split nodes, the option's own keys go to no callable
            raise refuse(f"data.{extra[0]}", DATA_KEYS, f"data={data.get('name')}, whose splits are built by "
                          f"data.train and data.test (put a split's arguments in its node)")


# ----------------------------------------------------------------------------- a user's app

@dataclass
class AppObjectiveConf:
    """What a user's app is judged by (ablate.app.objective)."""
    metric: str | None = None       # a metric your function logs per epoch and/or returns
    goal: str | None = None         # max | min: required, a metric always carries its direction
    select: Select | None = None    # final (default): the returned (last) value; best: the best logged epoch's
    bounds: list[Any] | None = None  # [low, high] of the metric's values, null for no end (accuracy %: [0, 100])
    label: str | None = None        # how reports name it; null = the metric's name
    unit: str | None = None


def _study_node() -> DictConfig:
    """ablate's nodes for a user's app (`ablate_study` in its defaults), typed; the root
    stays open for the user's keys."""
    return OmegaConf.create({
        "seed": 0, "force": False, "progress": True,
        "tracking": OmegaConf.structured(TrackingConf), "report": OmegaConf.structured(ReportConf),
        "design": OmegaConf.structured(DesignConf), "objective": OmegaConf.structured(AppObjectiveConf),
        "hydra": {"callbacks": {"ablate": {"_target_": "ablate.callbacks.AblateCallback"}},
                  # microseconds: two runs or sweeps started in one second get two folders
                  "run": {"dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"},
                  "sweep": {"dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}"}},
    })


# Registered here, which the ablation sweeper imports: an app that names `ablate_study`
# in its defaults finds it whether or not its code imports ablate.
ConfigStore.instance().store(name="ablate_study", node=_study_node())
