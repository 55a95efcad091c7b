"""Config: compose a job from conf/ (and a user's --config-dir), check its values,
and flatten it for MLflow."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ablate import schema
from ablate.errors import ConfigError, from_hydra

__all__ = ["ConfigError", "compose", "fingerprint", "flatten", "name_options", "validate"]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Keys that say where or how a job runs, or how it is judged, not what it computes: they
# stay out of the fingerprint, so moving the store or the device, or judging a run on
# another metric, never forks a run.
NON_RESULT_KEYS = ("tracking", "report", "force", "progress", "device", "design", "objective",
                   "train.eval_batch_size", "train.threads", "train.channels_last",
                   "data.root", "data.download", "data.memory_limit_mb", "data.num_workers")

NORMS = ("none", "bn_before_relu", "bn_after_relu")  # what the block-list builder knows
# Config groups whose option is logged by name (`model=my_net`): an option without
# a `name` key is named after its file.
GROUPS = ("model", "norm", "augmentation", "optimizer", "scheduler", "data", "task")


def is_non_result(key: str) -> bool:
    """True for a NON_RESULT_KEYS entry or any key below one."""
    return any(key == k or key.startswith(k + ".") for k in NON_RESULT_KEYS)


def unquoted(override: str) -> str:
    """An override as a run name shows it: without the quotes Hydra's grammar needed."""
    return override.replace('"', "").replace("'", "")


def is_seed(param: str) -> bool:
    """`seed`, or a per-source seed (`seeds.init`, ...). `seeds.common` says how the
    seeds are used, which changes what is computed: a setting, not a seed."""
    return param == "seed" or (param.startswith("seeds.") and param != "seeds.common")


def is_setting(param: str) -> bool:
    """A logged param that defines a configuration: not a seed (reports pool over
    them), not param_count (a result), not where or how a job runs."""
    return not is_seed(param) and param != "param_count" and not is_non_result(param)


_STEP_ARG = re.compile(r"^(\+{0,2}step)=(\d+(?:,\d+)*|range\((\d+),\s*(\d+)\))$")


def quote_step_args(args: list[str]) -> list[str]:
    """`step=3` and `step=1,2,3` (or `range(1,8)`) -> quoted choices.

    Hydra reads `3` as an int, and it accepts only strings as group choices, so
    the preset files 1.yaml..7.yaml are named with quoted strings: `step="3"`.
    """
    out = []
    for arg in args:
        m = _STEP_ARG.match(arg)
        if m:
            values = (range(int(m[3]), int(m[4])) if m[3] else m[2].split(","))
            arg = f"{m[1]}=" + ",".join(f'"{v}"' for v in values)
        out.append(arg)
    return out


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The job config that `python -m ablate [--config-dir DIR] <overrides>` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = quote_step_args(list(overrides))
    if config_dir is not None:  # what --config-dir does: the user's conf/ goes on the search path
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app already: its own primary config
            from hydra.core.hydra_config import HydraConfig
            name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "config"
            cfg = hydra_compose(name or "config", overrides=overrides, return_hydra_config=True)
        else:
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(from_hydra(exc)) from None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return name_options(cfg, choices)


def name_options(cfg: DictConfig, choices: dict) -> DictConfig:
    """Give each group node without a `name` its option's file name, so a user's option
    can hold only `_target_` and arguments and still log as `model=my_net`."""
    for group in GROUPS:
        node, choice = cfg.get(group), choices.get(group)
        if isinstance(node, DictConfig) and node.get("name") is None and choice:
            with open_dict(node):
                node.name = Path(str(choice)).name
    return cfg


def model_string(model: DictConfig) -> str:
    """Blocks as one compact, readable param: c8p1-c24p1-M-c16-...|gap."""
    parts = []
    for block in model.blocks:
        if block == "pool":
            parts.append("M")
            continue
        k, p = block.get("kernel", 3), block.get("padding", 0)
        parts.append(f"c{block.conv}" + (f"k{k}" if k != 3 else "") + (f"p{p}" if p else ""))
    head = model.head
    return "-".join(parts) + f"|{head.type}" + (f"{head.kernel}" if head.type == "conv" else "")


def flatten(cfg: DictConfig) -> dict[str, str]:
    """Resolved config as dotted keys. A group node's `name` is logged under the
    group's own key (`norm=bn_before_relu`), so params read like the overrides."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for key, value in node.items():
                dotted = f"{prefix}.{key}" if prefix else str(key)
                if key == "name" and prefix:
                    out[prefix] = str(value)
                elif prefix == "model" and "_target_" not in node and key == "blocks":
                    out[dotted] = model_string(node)  # the block list as one readable param
                elif key != "head" or prefix != "model" or "_target_" in node:
                    walk(value, dotted)
        elif isinstance(node, ListConfig):  # dicts inside by sorted keys: their order is not the config's
            out[prefix] = json.dumps(OmegaConf.to_container(node), sort_keys=True)
        else:
            out[prefix] = "null" if node is None else str(node)

    walk(cfg, "")
    return {k: v for k, v in out.items() if not (k == "design" or k.startswith("design."))}  # tags, not params


# Options added after runs existed: hashed as absent while they are off, so a run from
# before keeps its identity.
OFF = {"data.val": "null", "train.early_stopping.patience": "null", "seeds.common": "False"}
# ablate's own optimizer and scheduler options chose their class by `name` before they
# were `_target_` nodes: that class is hashed as absent (and `_partial_`, which says how
# it is built, always), so their runs keep their identity.
BY_NAME = {"optimizer": {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam"},
           "scheduler": {"step": "torch.optim.lr_scheduler.StepLR", "onecycle": "torch.optim.lr_scheduler.OneCycleLR",
                         "plateau": "torch.optim.lr_scheduler.ReduceLROnPlateau"}}


def fingerprint(cfg: DictConfig) -> str:
    """Stable hash of everything that changes results (see NON_RESULT_KEYS)."""
    params = flatten(cfg)
    kept = {k: v for k, v in params.items() if not is_non_result(k)}
    for group, classes in BY_NAME.items():
        kept.pop(f"{group}._partial_", None)
        if kept.get(f"{group}._target_") == classes.get(kept.get(group)):
            kept.pop(f"{group}._target_", None)
    if kept.get("seeds.common") == "True":  # under common random numbers seeds.<source>=<seed> is the default's own
        for source in schema.SEED_SOURCES:
            if kept.get(f"seeds.{source}") == kept.get("seed"):
                kept[f"seeds.{source}"] = "null"
    for key, off in OFF.items():
        if kept.get(key) == off:
            parent = key.rsplit(".", 1)[0] if key.startswith("train.early_stopping") else key
            kept = {k: v for k, v in kept.items() if not (k == parent or k.startswith(parent + "."))}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def _check(ok: bool, key: str, allowed: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}. Fix it with `{key}=<value>`.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value, before any data, run or training.
    The model itself is checked against the data later (model.check_model)."""
    schema.check_keys(cfg)
    t = cfg.train
    # torch.manual_seed's range: a larger seed would fail inside a job, after the pre-flight
    _check(isinstance(cfg.seed, int) and -2**63 <= cfg.seed < 2**64, "seed", "must be an integer in [-2^63, 2^64)",
           cfg.seed)
    for source, value in (cfg.get("seeds") or {}).items():
        if source != "common":
            _check(value is None or (isinstance(value, int) and -2**63 <= value < 2**64), f"seeds.{source}",
                   "must be null or an integer in [-2^63, 2^64)", value)
    _check(isinstance(t.epochs, int) and t.epochs >= 1, "train.epochs", "must be an integer >= 1", t.epochs)
    _check(isinstance(t.batch_size, int) and t.batch_size >= 1, "train.batch_size",
           "must be an integer >= 1", t.batch_size)
    _check(isinstance(t.eval_batch_size, int) and t.eval_batch_size >= 1, "train.eval_batch_size",
           "must be an integer >= 1", t.eval_batch_size)
    _check(isinstance(t.lr, (int, float)) and t.lr > 0, "train.lr", "must be a number > 0", t.lr)
    _check(t.threads is None or (isinstance(t.threads, int) and t.threads >= 1), "train.threads",
           "must be null or an integer >= 1", t.threads)
    tr = cfg.tracking
    for key in ("grace_s", "heartbeat_s"):
        _check(isinstance(tr[key], (int, float)) and tr[key] > 0, f"tracking.{key}", "must be a number > 0", tr[key])
    m = cfg.model
    if "_target_" in m and cfg.norm.name != "none" and "${norm" not in OmegaConf.to_yaml(m):
        raise ConfigError(f"norm={cfg.norm.name} changes nothing: model={m.name} does not read it. Pass it to your "
                          f"model (`norm: ${{norm.name}}` in its option), or leave norm at none.")
    if "_target_" not in m:  # a block list: the builder's own keys
        missing = [k for k in ("blocks", "head", "dropout") if k not in m]
        if missing:
            raise ConfigError(f"model={m.name} has neither `_target_` nor a whole block list (missing: "
                              f"{', '.join(missing)}). Fix the model option: name a class with `_target_`, "
                              f"or give blocks, head and dropout as conf/model/base.yaml does.")
        _check(isinstance(m.dropout, (int, float)) and 0 <= m.dropout < 1, "model.dropout",
               "must be in [0, 1)", m.dropout)
        _check(cfg.norm.name in NORMS, "norm", f"must be one of {', '.join(NORMS)}", cfg.norm.name)
        supported = m.get("norms")  # a model may list the norms it was designed for
        if supported is not None:
            _check(cfg.norm.name in supported, "norm",
                   f"model '{m.name}' takes only {', '.join(supported)}", cfg.norm.name)
    d = cfg.data
    for key in ("download", "standardize"):
        _check(isinstance(d.get(key, True), bool), f"data.{key}", "must be true or false", d.get(key))
    for key in ("num_classes", "features", "seq_len", "vocab_size", "targets"):
        _check(d.get(key) is None or (isinstance(d[key], int) and d[key] >= 1), f"data.{key}",
               "must be null or an integer >= 1", d.get(key))
    sub = d.train_subset
    _check(sub is None or (isinstance(sub, int) and sub >= 1), "data.train_subset",
           "must be null or an integer >= 1", sub)
    val = d.get("val")
    _check(val is None or isinstance(val, DictConfig) or (isinstance(val, float) and 0 < val < 1)
           or (isinstance(val, int) and not isinstance(val, bool) and val >= 1), "data.val",
           "must be null, a fraction in (0, 1) (0.1), a count >= 1 (5000) or a node with _target_", val)
    es = t.early_stopping
    _check(es.patience is None or es.patience >= 1, "train.early_stopping.patience",
           "must be null (off) or an integer >= 1", es.patience)
    _check(es.min_delta >= 0, "train.early_stopping.min_delta", "must be a number >= 0", es.min_delta)
    if es.patience is None and es.min_delta != 0:
        raise ConfigError(f"train.early_stopping.min_delta={es.min_delta} changes nothing: early stopping is off. "
                          f"Turn it on with `train.early_stopping.patience=<epochs>`, or remove min_delta.")
    if es.patience is not None and val is None:
        raise ConfigError(f"train.early_stopping.patience={es.patience} needs a validation split to stop on "
                          f"(stopping on the test set would report a number it chose). Add one with "
                          f"`data.val=0.1` (a fraction) or `data.val=5000` (a count).")
    _check(isinstance(d.memory_limit_mb, (int, float)) and d.memory_limit_mb >= 0, "data.memory_limit_mb",
           "must be a number >= 0", d.memory_limit_mb)
    _check(isinstance(d.num_workers, int) and d.num_workers >= 0, "data.num_workers",
           "must be an integer >= 0", d.num_workers)
    aug = cfg.augmentation
    if aug.get("crop") is not None:
        _check(isinstance(aug.crop.padding, int) and aug.crop.padding >= 0, "augmentation.crop.padding",
               "must be an integer >= 0", aug.crop.padding)
    if aug.get("flip") is not None:
        _check(0 <= aug.flip.p <= 1, "augmentation.flip.p", "must be in [0, 1]", aug.flip.p)
    if aug.get("rotate") is not None:
        _check(0 <= aug.rotate.degrees <= 180, "augmentation.rotate.degrees", "must be in [0, 180]",
               aug.rotate.degrees)
        _check(aug.rotate.interpolation in ("nearest", "bilinear"), "augmentation.rotate.interpolation",
               "must be nearest or bilinear", aug.rotate.interpolation)
    if aug.get("erase") is not None:
        _check(0 <= aug.erase.p <= 1, "augmentation.erase.p", "must be in [0, 1]", aug.erase.p)
        lo, hi = aug.erase.scale
        _check(0 < lo <= hi < 1, "augmentation.erase.scale", "must be [lo, hi] with 0 < lo <= hi < 1",
               list(aug.erase.scale))
