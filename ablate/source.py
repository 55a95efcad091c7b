"""Source: what a run's result depends on beyond its config, so that a run is never
resumed by other code, and a result from other code never passes unremarked.

    ablate      the modules that decide what is computed (config, data, task, model, engine, ...)
    your code   the package (or module) of every `_target_` in the config that is not an
                installed library, every .py file of it; for a training function of your
                own (ablate.study), the .py files beside its script
    libraries   an installed `_target_`'s distribution and version (torchvision==0.24.1)

Each part is a short digest of the files' bytes; a run carries them as the tags
`ablate.code` (one digest of all) and `ablate.code.parts` ("ablate=3f2a91 digits_study=9c1b07").
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

TAG, PARTS = "ablate.code", "ablate.code.parts"
HERE = Path(__file__).resolve().parent
# ablate's modules that decide what a job computes (not how it is tracked or reported)
RESULT_MODULES = ("augment", "checkpoint", "config", "data", "engine", "kernels", "metrics", "model", "schema",
                  "study", "task")


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _ablate() -> str:
    return _digest([HERE / f"{m}.py" for m in RESULT_MODULES])  # read each time: an edit counts at once


def _installed(path: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.parts) or \
        str(path).startswith(sys.base_prefix)


@lru_cache(maxsize=1)
def _distributions() -> dict:
    return metadata.packages_distributions()


def _part(module: str) -> tuple[str, str] | None:
    """(name, digest or version) of the code a `_target_`'s module comes from."""
    top = module.split(".")[0]
    if top == "ablate":
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None  # not importable: the job's own check says so
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    if _installed(origin):
        dists = _distributions().get(top, [top])
        try:
            return top, f"{dists[0]}=={metadata.version(dists[0])}"
        except metadata.PackageNotFoundError:
            return top, "installed"
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    return top, _digest(files)


def _targets(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_" and isinstance(v, str):
                out.append(v.rsplit(".", 1)[0])
            else:
                out += _targets(v)
    elif isinstance(node, list):
        for v in node:
            out += _targets(v)
    return out


def parts(cfg, script: Path | None = None) -> dict[str, str]:
    """What this config's result depends on, name -> digest or version."""
    out = {"ablate": _ablate()}
    container = OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg
    for module in dict.fromkeys(_targets(container)):
        if (p := _part(module)) is not None:
            out[p[0]] = p[1]
    if script is not None:  # a training function of your own: its script's folder
        out[script.stem] = _digest(sorted(script.parent.glob("*.py")))
    return out


def tags(p: dict[str, str]) -> dict[str, str]:
    return {TAG: hashlib.sha256(repr(sorted(p.items())).encode()).hexdigest()[:12],
            PARTS: " ".join(f"{k}={v}" for k, v in p.items())}


def changed(run_tags: dict, mine: dict[str, str]) -> str | None:
    """None if a run's code is this code; else what differs, in words."""
    if run_tags.get(TAG) == tags(mine)[TAG]:
        return None
    if TAG not in run_tags:
        return "it records no code version (written before ablate recorded one)"
    theirs = dict(p.split("=", 1) for p in run_tags.get(PARTS, "").split() if "=" in p)
    diff = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
    return "the code changed since: " + ", ".join(diff)


def mixed(runs) -> list[str]:
    """A note when a DataFrame of runs (mlflow.search_runs' columns) comes from more than
    one version of the code: a result is never mixed across code versions unremarked."""
    col = f"tags.{TAG}"
    versions = runs[col].fillna("unrecorded") if col in runs else None
    if versions is None or versions.nunique() < 2:
        return []
    counts = ", ".join(f"{v} ({n} runs)" for v, n in versions.value_counts().items())
    return [f"these runs come from {versions.nunique()} versions of the code (ablate.code: {counts}), so their "
            f"comparisons mix code versions; rerun the older ones with force=true to compare like with like"]
