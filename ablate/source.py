"""Source: what a run's result depends on beyond its config, so that a run is never
resumed by other code, and a result from other code never passes unremarked.

    ablate      the modules that decide what is computed (config, data, task, model, engine, ...)
    your code   the package (or module) of every `_target_` in the config that is not an
                installed library, every .py file of it; for an app of your own
                (ablate.app, ablate.study), the files that run: its script and every
                module of yours that the script or a `_target_` imports, followed
                through their imports (at any depth, in functions too), one part a file
    libraries   an installed `_target_`'s distribution and version (torchvision==0.24.1)

Each part is a short digest of the files' bytes; a run carries them as the tags
`ablate.code` (one digest of all) and `ablate.code.parts` ("ablate=3f2a91 digits_study=9c1b07").
"""
from __future__ import annotations

import ast
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


def _digest(files: list[Path], base: Path | None = None) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update((f.relative_to(base).as_posix() if base else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _ablate() -> str:
    """ablate's result modules (a package: all its files); read each time, so an edit counts at once."""
    files = [f for m in RESULT_MODULES
             for f in ([HERE / f"{m}.py"] if (HERE / f"{m}.py").exists() else sorted((HERE / m).glob("*.py")))]
    return _digest(files, HERE)


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


def _spec_origin(name: str) -> tuple[Path, bool] | None:
    """(file, is a package) of an importable module that is not installed, not ablate's."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # an attribute (`from x import f`), or a module that does not import
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen") or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin).resolve()
    if _installed(origin) or origin.is_relative_to(HERE) or origin.is_relative_to(HERE.parent / "hydra_plugins"):
        return None
    return origin, spec.submodule_search_locations is not None


def user_files(script: Path | None, modules: list[str] = ()) -> dict[Path, str]:
    """The files of yours that run: `script` and the `modules`, and every module of
    yours they import, followed through the imports of each (statically, with `ast`:
    imports inside functions count; an installed library or ablate stops the walk).
    file -> module name ('' for the script)."""
    todo: list[tuple[Path, str, bool]] = [(script, "", False)] if script is not None else []
    for m in modules:
        if (found := _spec_origin(m)) is not None:
            todo.append((found[0], m, found[1]))
    seen: dict[Path, str] = {}
    while todo:
        path, name, is_pkg = todo.pop()
        if path in seen:
            continue
        seen[path] = name
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        package = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package
                    parts_ = package.split(".") if package else []
                    if node.level - 1 > len(parts_) or not package:
                        continue
                    base = ".".join(parts_[:len(parts_) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
            for full in names:
                pieces = full.split(".")
                for i in range(1, len(pieces) + 1):  # a.b.c imports a and a.b first
                    if (found := _spec_origin(".".join(pieces[:i]))) is not None and found[0] not in seen:
                        todo.append((found[0], ".".join(pieces[:i]), found[1]))
    return seen


def _file_name(path: Path, name: str, script: Path | None) -> str:
    if script is not None and path.is_relative_to(script.parent):
        return str(path.relative_to(script.parent))
    return name.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py" else ".py")


def parts(cfg, script: Path | None = None) -> dict[str, str]:
    """What this config's result depends on, name -> digest or version. With `script`
    (an app of your own): ablate, then each file of yours that runs (user_files), by its
    path from the script's folder, and each installed `_target_`'s distribution."""
    out = {"ablate": _ablate()}
    container = OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg
    targets = list(dict.fromkeys(_targets(container)))
    if script is None:
        for module in targets:
            if (p := _part(module)) is not None:
                out[p[0]] = p[1]
        return out
    for module in targets:  # installed libraries by version; your own modules file by file, below
        p = _part(module)
        if p is not None and ("==" in p[1] or p[1] == "installed"):
            out[p[0]] = p[1]
    files = user_files(script, [m for m in targets if _spec_origin(m) is not None])
    for path, name in sorted(files.items(), key=lambda kv: _file_name(kv[0], kv[1], script)):
        out[_file_name(path, name, script)] = _digest([path])
    return out


def tags(p: dict[str, str]) -> dict[str, str]:
    return {TAG: hashlib.sha256(repr(sorted(p.items())).encode()).hexdigest()[:12],
            PARTS: " ".join(f"{k}={v}" for k, v in p.items())[:8000]}


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
