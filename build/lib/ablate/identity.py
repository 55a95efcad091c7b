"""Identity: what a job of a user's app computes, as its composed values key by key.

A run is named by a fingerprint of its config, so that a finished config is skipped and
an interrupted one resumed. For a user's config (an app of its own, `@hydra.main` or
`@ablate.main`) every key counts, with two kinds of exception:

    run-local   values that change with where or when the job runs, not with what it
                computes: anything that resolves through Hydra's output folder, job
                number or launch folder (`${hydra:runtime.output_dir}`, `${hydra:job.num}`,
                ...) or through `${now:...}`, directly or by interpolating such a key.
                They are found by resolving the config twice, under two different
                output folders, times and job numbers: a key whose value moves is
                run-local. They are kept on the run as a tag, not as params.
    ablate's    the nodes `ablate_study` brings (tracking, report, force, progress,
                design, objective): where results go and how they are judged.

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


def leaves(node, prefix: str = "") -> dict[str, str]:
    """A resolved container as dotted keys -> text. Lists are one value, as JSON with
    sorted keys, so `[{width: 32, act: relu}]` and `[{act: relu, width: 32}]` are one."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        if not node and prefix:
            out[prefix] = "{}"
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(node, (list, tuple)):
        out[prefix] = json.dumps(node, sort_keys=True, default=str)
    else:
        out[prefix] = "null" if node is None else str(node)
    return out


def _resolved(cfg) -> dict[str, str]:
    return leaves(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


def run_local(cfg: DictConfig) -> set[str]:
    """The keys of `cfg` (a job's task config) whose resolved value depends on where or
    when the job runs. Needs Hydra's config of the job (HydraConfig) when `cfg` reads it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    text = OmegaConf.to_yaml(cfg)
    if "${" not in text:
        return set()
    fresh = lambda: OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # noqa: E731  no resolver cache
    here = _resolved(fresh())
    hc = HydraConfig.instance()
    real = hc.cfg
    try:
        if real is not None:
            moved = copy.deepcopy(real)
            for key in RUN_LOCAL_HYDRA:
                node, _, leaf = f"hydra.{key}".rpartition(".")
                parent = OmegaConf.select(moved, node)
                if isinstance(parent, DictConfig):
                    with read_write(parent), open_dict(parent):
                        parent[leaf] = -7 if leaf in ("num", "id") else f"/ablate-elsewhere/{key}"
            hc.cfg = moved
        OmegaConf.register_new_resolver("now", lambda pattern: "ablate-another-time", replace=True)
        there = _resolved(fresh())
    finally:
        hc.cfg = real
        setup_globals()  # Hydra's own `now` (and the other resolvers) again
    return {k for k, v in here.items() if there.get(k) != v}


@dataclass
class Identity:
    fingerprint: str
    params: dict[str, str]      # what the job computes from: logged as the run's params
    run_local: dict[str, str]   # where and when it runs: logged as one tag


def of(cfg: DictConfig, own: tuple[str, ...] = ABLATE_NODES) -> Identity:
    """A user's job config's identity: every key but ablate's nodes (`own`) and the
    run-local ones. Raises OmegaConf's error on an interpolation that does not resolve."""
    values = _resolved(cfg)
    local = run_local(cfg)
    ours = lambda k: any(k == n or k.startswith(n + ".") for n in own)  # noqa: E731
    params = {k: v for k, v in values.items() if not ours(k) and k not in local}
    fp = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return Identity(fp, params, {k: values[k] for k in sorted(local) if not ours(k)})
