"""Identity: what a job of a user's app computes, as its composed values key by key.

A run is named by a fingerprint of its config, so that a finished config is skipped and
an interrupted one resumed. For a user's config (an app of its own, `@hydra.main` or
`@ablate.main`) every key counts, typed (`1` and `"1"` are two values), with run-local
parts written as placeholders:

    run-local   what changes with where or when the job runs, not with what it computes:
                Hydra's output folder, job number and launch folder
                (`${hydra:runtime.output_dir}`, `${hydra:job.num}`, `${hydra:runtime.cwd}`,
                ...) and `${now:...}`, directly or through another key. The identity
                resolves the config once more with each of them as a fixed placeholder,
                so `${paths.root_dir}/data_v2/` is `<hydra:runtime.cwd>/data_v2/`: moving
                the job does not fork its run, pointing it at other data does. The keys
                whose value holds such a part keep their real values in a tag.
    ablate's    the nodes `ablate_study` brings (tracking, report, force, progress,
                design, objective), when the config has them: where results go and
                how they are judged.

ablate's own engine config keeps its own rules (ablate.config.fingerprint)."""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Hydra's keys that differ between two runs of one config
RUN_LOCAL_HYDRA = ("runtime.output_dir", "runtime.cwd", "run.dir", "sweep.dir", "sweep.subdir", "job.num", "job.id")
# The nodes `ablate_study` adds to a user's config: never part of what it computes
ABLATE_NODES = ("tracking", "report", "force", "progress", "design", "objective")


def leaves(node, prefix: str = "") -> dict:
    """A resolved container as dotted keys -> values (numbers, strings, booleans, None).
    A list is one value, as JSON with sorted keys, so `[{width: 32, act: relu}]` and
    `[{act: relu, width: 32}]` are one."""
    out: dict = {}
    if isinstance(node, dict):
        if not node and prefix:
            out[prefix] = "{}"
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, (list, tuple)):
        out[prefix] = json.dumps(node, sort_keys=True, default=str)
    else:
        out[prefix] = node
    return out


def text(value) -> str:
    """A leaf as a param's text."""
    return "null" if value is None else str(value)


def _resolved(cfg) -> dict:
    return leaves(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


def canonical(cfg: DictConfig) -> tuple[dict, dict]:
    """(the config's values with every run-local part as a placeholder, its real values),
    both as leaves. Needs Hydra's config of the job (HydraConfig) when `cfg` reads it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    real = _resolved(cfg)
    if "${" not in OmegaConf.to_yaml(cfg):
        return real, real
    fresh = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # no resolver cache
    hc = HydraConfig.instance()
    before = hc.cfg
    try:
        if before is not None:
            placed = copy.deepcopy(before)
            for key in RUN_LOCAL_HYDRA:
                node, _, leaf = f"hydra.{key}".rpartition(".")
                parent = OmegaConf.select(placed, node)
                if isinstance(parent, DictConfig):
                    with read_write(parent), open_dict(parent):
                        parent[leaf] = -1 if leaf in ("num", "id") else f"<hydra:{key}>"
            hc.cfg = placed
        OmegaConf.register_new_resolver("now", lambda pattern: f"<now:{pattern}>", replace=True)
        placeholders = _resolved(fresh)
    finally:
        hc.cfg = before
        setup_globals()  # Hydra's own `now` (and the other resolvers) again
    return placeholders, real


def run_local(cfg: DictConfig) -> set[str]:
    """The keys of `cfg` (a job's task config) whose resolved value depends on where or
    when the job runs."""
    placeholders, real = canonical(cfg)
    return {k for k, v in real.items() if placeholders.get(k) != v}


@dataclass
class Identity:
    fingerprint: str
    params: dict[str, str]      # what the job computes from (run-local parts as placeholders): the run's params
    run_local: dict[str, str]   # the real values of the keys with a run-local part: one tag


def of(cfg: DictConfig, own: tuple[str, ...] = ()) -> Identity:
    """A user's job config's identity: every key but `own` (ablate's nodes, when the
    config has them), typed, with run-local parts as placeholders. Raises OmegaConf's
    error on an interpolation that does not resolve."""
    placeholders, real = canonical(cfg)
    ours = lambda k: any(k == n or k.startswith(n + ".") for n in own)  # noqa: E731
    kept = {k: v for k, v in placeholders.items() if not ours(k)}
    typed = json.dumps({k: [type(v).__name__, v] for k, v in kept.items()}, sort_keys=True, default=str)
    local = {k: text(real[k]) for k in sorted(real) if not ours(k) and placeholders.get(k) != real[k]}
    return Identity(hashlib.sha256(typed.encode()).hexdigest()[:16], {k: text(v) for k, v in kept.items()}, local)
