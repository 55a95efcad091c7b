"""Ablation designs: a baseline and named factors (each a list of overrides) become
the arms of a study, and every arm is crossed with the rest of the sweep (seeds,
any `-m` key). Plain functions, used by the Hydra sweeper (hydra_plugins/
ablate_sweeper), the sweep's pre-flight (callbacks.py) and the report.

    leave_one_out  the baseline, and the baseline with each factor's overrides
                   (a factor's overrides remove one component)
    add_one_in     the baseline, and the baseline plus each factor
    factorial      every on/off combination of the factors: 2^k arms
    path           the factors applied one after another, in order
    greedy_path    the path the data finds, round by round (ablate.adaptive)
    grid           the command line's grid, each combination an arm (for adaptive seeds)
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field, replace

from omegaconf import DictConfig, ListConfig, OmegaConf

from ablate.config import quote_step_args, unquoted
from ablate.errors import ConfigError

KINDS = ("leave_one_out", "add_one_in", "factorial", "path", "greedy_path", "grid")
BASELINE = "baseline"
DESIGN_KEY = "ablation"  # the config group that picks a design: `ablation=step7_loo`


class DesignError(ConfigError):
    """A design that cannot run: one line, before any job."""


@dataclass(frozen=True)
class Arm:
    name: str                       # "baseline", a factor, or factors joined by "+"
    applied: tuple[str, ...]        # the factors whose overrides it applies, in order
    overrides: tuple[str, ...]      # the baseline's and those factors' overrides, merged


@dataclass
class Design:
    name: str
    kind: str
    baseline: list[str]
    factors: dict[str, list[str]]   # in the order given
    order: list[str] = field(default_factory=list)  # path: the order the factors are applied in
    grid: list[list[str]] = field(default_factory=list)  # grid: each arm's overrides

    def levels(self, arm: Arm) -> dict[str, str]:
        return {f: "on" if f in arm.applied else "off" for f in self.factors}

    def spec(self) -> dict:
        """What the sweep's parent run keeps, so a report can be rebuilt from MLflow."""
        return {"name": self.name, "kind": self.kind, "baseline": self.baseline, "factors": self.factors,
                "order": self.order, "grid": self.grid}

    @classmethod
    def from_spec(cls, spec: dict) -> Design:
        return cls(spec["name"], spec["kind"], list(spec["baseline"]), dict(spec["factors"]), list(spec["order"]),
                   [list(g) for g in spec.get("grid", [])])


def _overrides(value, what: str) -> list[str]:
    """A list of overrides, or one string of them separated by spaces (the ad-hoc form)."""
    if value is None:
        return []
    if isinstance(value, str):  # split on spaces outside quotes: "+note='a b' seed=1" is two overrides
        if value.count("'") % 2 or value.count('"') % 2:
            raise DesignError(f"{what}={value!r} has an unclosed quote: a factor's string is split on spaces outside "
                              f"quotes. Close the quotes, or give a list, e.g. [\"+note='a b'\", seed=1].")
        return re.findall(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""", value)
    if isinstance(value, (list, tuple, ListConfig)) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    raise DesignError(f"{what}={value!r} is invalid: give a list of overrides, e.g. [norm=none], or one "
                      f"string of them, e.g. \"norm=none model.dropout=0\".")


def from_config(node) -> Design:
    """The design in the sweeper's config (hydra.sweeper), checked for shape."""
    node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    kind = node.get("design")
    if kind not in KINDS:
        raise DesignError(f"hydra.sweeper.design={kind!r} is invalid: must be one of {', '.join(KINDS)}. "
                          f"Fix it with `hydra.sweeper.design=<kind>`.")
    factors_node = node.get("factors") or {}
    if kind == "grid" and not factors_node:
        baseline = _overrides(node.get("baseline"), "hydra.sweeper.baseline")
        return Design(str(node.get("name") or kind), kind, baseline, {})
    if not isinstance(factors_node, dict) or not factors_node:
        raise DesignError("hydra.sweeper.factors is empty: a design needs named factors, each a list of "
                          "overrides, e.g. `hydra.sweeper.factors={batchnorm:\"norm=none\"}`.")
    factors = {str(k): _overrides(v, f"hydra.sweeper.factors.{k}") for k, v in factors_node.items()}
    for name, overrides in factors.items():
        if not overrides:
            raise DesignError(f"factor {name!r} has no overrides. Give it at least one, e.g. [norm=none].")
    order = [str(f) for f in (node.get("order") or factors)]
    unknown = [f for f in order if f not in factors]
    if unknown:
        raise DesignError(f"hydra.sweeper.order names unknown factor(s) {', '.join(unknown)}: the factors "
                          f"are {', '.join(factors)}. Fix the order or add the factor.")
    if kind == "factorial" and len(factors) > 6:
        raise DesignError(f"a factorial of {len(factors)} factors has {2 ** len(factors)} arms. Use at most "
                          f"6 factors, or leave_one_out / add_one_in.")
    name = node.get("name") or kind
    return Design(str(name), kind, _overrides(node.get("baseline"), "hydra.sweeper.baseline"), factors, order)


def key_of(override: str) -> str:
    """The config key (or group) an override sets: `+model.width=8` -> model.width."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        parsed = OverridesParser.create().parse_overrides([override])[0]
    except Exception as exc:
        raise DesignError(f"override {override!r} does not parse: {' '.join(str(exc).split())}") from None
    return parsed.get_key_element().lstrip("+~")


def merge(*lists) -> list[str]:
    """Override lists in order; where two set one key, the later one wins."""
    merged: dict[str, str] = {}
    for overrides in lists:
        for o in overrides:
            merged.pop(key_of(o), None)
            merged[key_of(o)] = o
    return list(merged.values())


def arm_of(design: Design, applied: tuple[str, ...]) -> Arm:
    """The arm that applies these factors, in this order, to the baseline."""
    applied = tuple(applied)
    overrides = merge(design.baseline, *(design.factors[f] for f in applied))
    return Arm("+".join(applied) or BASELINE, applied, tuple(overrides))


def arms(design: Design) -> list[Arm]:
    factors = list(design.factors)
    if design.kind == "grid":
        return [Arm(grid_name(g), (), tuple(merge(design.baseline, g))) for g in design.grid]
    if design.kind in ("leave_one_out", "add_one_in", "greedy_path"):  # greedy: its first round
        return [arm_of(design, ())] + [arm_of(design, (f,)) for f in factors]
    if design.kind == "path":
        return [arm_of(design, tuple(design.order[:i])) for i in range(len(design.order) + 1)]
    return [arm_of(design, tuple(f for f, on in zip(factors, bits, strict=True) if on))
            for bits in itertools.product((False, True), repeat=len(factors))]


@dataclass(frozen=True)
class Contrast:
    """One question a design asks: a per-seed contrast over some of its arms (the sum of
    sign x arm's value). A pairwise one is b - a over arms (a, b); a factorial effect
    spans every cell, +-1/half the cells each (the mean where on minus where off)."""
    name: str
    kind: str     # contribution, gain, step, difference; main, interaction
    what: str     # what it measures, in words of its arms
    arms: tuple[str, ...]
    signs: tuple[float, ...]


def contrasts(design: Design) -> list[Contrast]:
    """The design's questions, once for the adaptive rounds and the report alike."""
    arm_list = arms(design)
    names = {a.applied: a.name for a in arm_list}

    def pair(name: str, kind: str, what: str, a: str, b: str) -> Contrast:
        return Contrast(name, kind, what, (a, b), (-1.0, 1.0))

    if design.kind == "leave_one_out":
        return [pair(f, "contribution", f"{BASELINE} - without {f}", names[(f,)], BASELINE) for f in design.factors]
    if design.kind == "add_one_in":
        return [pair(f, "gain", f"with {f} - {BASELINE}", BASELINE, names[(f,)]) for f in design.factors]
    if design.kind == "path":
        steps = [(f, names[tuple(design.order[:i])], names[tuple(design.order[:i + 1])])
                 for i, f in enumerate(design.order)]
        return [pair(f, "step", f"{cur} - {prev}", prev, cur) for f, prev, cur in steps]
    if design.kind == "grid":
        first, *rest = [a.name for a in arm_list]
        return [pair(a, "difference", f"{a} - {first}", first, a) for a in rest]
    if design.kind != "factorial":
        return []
    # each main effect and two-way interaction, as a +-1 contrast over all cells
    factors, half = list(design.factors), len(arm_list) // 2
    effects = [(f,) for f in factors] + list(itertools.combinations(factors, 2))
    out = []
    for fs in effects:
        signs = tuple(float((-1) ** sum(f not in a.applied for f in fs)) / half for a in arm_list)
        what = f"mean({fs[0]} on) - mean({fs[0]} off)" if len(fs) == 1 else \
            f"[{fs[0]}'s effect with {fs[1]} on - with {fs[1]} off] / 2"
        out.append(Contrast(" x ".join(fs), "main" if len(fs) == 1 else "interaction", what,
                            tuple(a.name for a in arm_list), signs))
    return out


def grid_name(overrides: list[str]) -> str:
    """A grid arm's name: its overrides, as a run name shows them."""
    return ",".join(unquoted(o) for o in overrides) or BASELINE


def tag_overrides(design: Design, arm: Arm) -> list[str]:
    """Overrides that tell the job its place in the design (the `design` node, which
    is left out of the fingerprint: the same config in two designs is one run)."""
    out = [f"design.name={design.name}", f"design.kind={design.kind}", f"design.arm='{arm.name}'"]
    if design.kind == "factorial":
        out.append("design.levels={" + ",".join(f"{f}:{v}" for f, v in design.levels(arm).items()) + "}")
    return out


def expand(design: Design, others: list[list[str]], tagged: bool = True) -> list[tuple[Arm, list[str]]]:
    """Every job: each arm crossed with each combination of the sweep's other keys. The
    command line may change the baseline (`train.epochs=3`), never a factor's keys."""
    factor_keys = {key_of(o): f for f, overrides in design.factors.items() for o in overrides}
    for other in others:
        for o in other:
            if key_of(o) in factor_keys:
                raise DesignError(f"{o} on the command line sets {key_of(o)}, which factor "
                                  f"{factor_keys[key_of(o)]!r} changes: the design would not hold. "
                                  f"Drop it, or make it part of the design's baseline.")
    return [(arm, job_overrides(design, arm, other, tagged)) for arm in arms(design) for other in others]


def job_overrides(design: Design, arm: Arm, other: list[str], tagged: bool = True) -> list[str]:
    """One job's overrides: the baseline, the command line's own, the arm's factors, and
    (`tagged`: for a config with ablate's `design` node) its tags."""
    base = merge(design.baseline, other)
    extra = [o for o in arm.overrides if o not in design.baseline] if design.kind == "grid" else ()
    body = merge(base, extra, *(design.factors[f] for f in arm.applied))
    return quote_step_args(body) + (tag_overrides(design, arm) if tagged else [])


def tags_of(design: Design, arm: Arm) -> dict[str, str]:
    """A job's place in its design as run tags (tracking.design_tags' for a tagged config)."""
    from ablate import tracking
    tags = {tracking.DESIGN: design.name, tracking.DESIGN_KIND: design.kind, tracking.ARM: arm.name}
    if design.kind == "factorial":
        tags.update({tracking.LEVEL + f: v for f, v in design.levels(arm).items()})
    return tags


def check_design(design: Design, fingerprint_of, common: list[str] = ()) -> None:
    """Every arm composes, with the command line's own overrides (`common`: those of the
    sweep's first job), and every factor changes the config of the arm it extends: a
    factor that changes nothing would report noise as its effect.
    `fingerprint_of(overrides)` -> the fingerprint of the job they compose."""
    configs = {}
    for arm in arms(design):
        overrides = job_overrides(design, arm, list(common), tagged=False)
        try:
            configs[arm.applied] = fingerprint_of(overrides)
        except DesignError:
            raise
        except Exception as exc:
            raise DesignError(f"arm {arm.name!r} ({' '.join(arm.overrides)}) does not compose: "
                              f"{' '.join(str(exc).split())}") from None
    if design.kind == "greedy_path":  # the order decides nothing only if no two factors share a key
        owner: dict[str, str] = {}
        for f, overrides in design.factors.items():
            for o in overrides:
                if (k := key_of(o)) in owner:
                    raise DesignError(f"factors {owner[k]!r} and {f!r} both set {k}: a greedy path could apply "
                                      f"them in either order, which changes the config. Give {k} to one factor.")
                owner[k] = f
    for arm in arms(design):
        if not arm.applied:
            continue
        parent = arm.applied[:-1] if design.kind == "path" else ()
        if design.kind == "factorial" and len(arm.applied) > 1:
            continue  # each factor is checked on its own against the baseline
        if configs[arm.applied] == configs[parent]:
            last = arm.applied[-1]
            raise DesignError(f"factor {last!r} ({' '.join(design.factors[last])}) does not change the config "
                              f"of {'+'.join(parent) or BASELINE} ({' '.join(design.baseline) or 'the defaults'}): "
                              f"its effect would be seed noise. Fix its overrides.")


def to_json(design: Design, job_arms: list[Arm], fingerprints: list[str], objective=None,
            sesoi: float | None = None, swept: list[str] | None = None) -> str:
    """The design, which arm each job's fingerprint belongs to, the objective
    (ablate.metrics.Objective) its jobs are scored by and the smallest effect of
    interest, for the parent run: the report rebuilds the study from this and the runs,
    whichever sweep trained them."""
    arm_of = {fp: arm.name for arm, fp in zip(job_arms, fingerprints, strict=True)}
    spec = {**design.spec(), "arms": [a.name for a in arms(design)], "fingerprints": arm_of, "sesoi": sesoi,
            "swept": swept}
    if objective is not None:
        spec["objective"] = asdict(objective)
    return json.dumps(spec)


UNTIL = ("decisive", "precise", "settled")


@dataclass
class SeedPolicy:
    """Adaptive seeds (ablate.adaptive): `min` seeds for every arm, then more for the
    comparisons still open, up to `max`. Here, not in ablate.adaptive, so that a plan
    can hold one without designs importing adaptive (which imports designs)."""
    min: int = 3
    max: int = 3
    # decisive: the adjusted interval excludes 0, or is narrow enough; precise: narrow enough;
    # settled: excludes 0, or lies inside ±report.sesoi (equivalent)
    until: str = "decisive"
    halfwidth: float = 0.05  # in the metric's own units (percentage points for an accuracy in %)
    metric: str | None = None  # the summary metric that decides; None: the objective's (for_objective)

    @classmethod
    def from_config(cls, node) -> SeedPolicy:
        node = dict(node or {})
        unknown = set(node) - set(cls.__dataclass_fields__)
        if unknown:
            raise DesignError(f"hydra.sweeper.seeds has unknown key(s) {', '.join(sorted(unknown))}: use min, max, "
                              f"until, halfwidth, metric.")
        policy = cls(**node)
        if policy.max < policy.min:
            policy.max = policy.min  # `seeds: {min: 5}` alone means five seeds, no adapting
        if not (isinstance(policy.min, int) and policy.min >= 2):
            raise DesignError(f"hydra.sweeper.seeds.min={policy.min!r} is invalid: an interval needs at least 2 "
                              f"seeds. Fix it with `hydra.sweeper.seeds.min=3`.")
        if policy.until not in UNTIL:
            raise DesignError(f"hydra.sweeper.seeds.until={policy.until!r} is invalid: must be one of "
                              f"{', '.join(UNTIL)}.")
        if not policy.halfwidth > 0:
            raise DesignError(f"hydra.sweeper.seeds.halfwidth={policy.halfwidth!r} is invalid: must be > 0 (in the "
                              f"objective's units).")
        return policy

    def for_objective(self, objective) -> SeedPolicy:
        """The policy deciding on the objective (ablate.metrics.Objective): its summary
        metric on the split that chooses (`objective.decides`: the validation value with a
        validation split, the test column without). Another metric, even the objective's
        other selection, is refused: the report judges the objective, and a comparison
        that stopped as decisive must be about it."""
        if self.metric is None:
            return replace(self, metric=objective.decides)
        if self.metric != objective.decides:
            raise DesignError(f"hydra.sweeper.seeds.metric={self.metric}: the study's objective is "
                              f"{objective.describe()}, so the seeds decide on {objective.decides}. Drop the "
                              f"key, or choose the metric with objective.metric and objective.select.")
        return self

    @property
    def looks(self) -> int:
        """How many times a comparison's interval may be looked at: at min, min+1, ..., max seeds."""
        return self.max - self.min + 1


@dataclass
class Plan:
    """What a sweep will run: every job's overrides, the keys that vary between jobs
    (they name the runs), and, for a design sweep, the design and each job's arm."""
    jobs: list[list[str]]
    swept: list[str]
    design: Design | None = None
    arms: list[Arm] = field(default_factory=list)
    policy: SeedPolicy | None = None  # seeds chosen round by round (None: from the command line)
    race: bool = False              # greedy_path: drop clearly worse candidates early
    other: list[str] = field(default_factory=list)  # an adaptive study's fixed command-line overrides
    common: list[str] = field(default_factory=list)  # the first job's command line: arms are checked with it
    tagged: bool = True             # jobs carry their design tags as overrides (a config with ablate's design node)

    @property
    def adaptive(self) -> bool:
        return self.policy is not None


def is_design_sweep(sweeper_cfg) -> bool:
    return str(sweeper_cfg.get("_target_", "")).startswith("hydra_plugins.ablate_sweeper.")


def plans(sweeper_cfg) -> bool:
    """True for the sweepers whose jobs ablate can list before they run: Hydra's basic
    grid and the ablation sweeper. Another sweeper (Optuna, ...) chooses them as it goes."""
    target = str(sweeper_cfg.get("_target_", ""))
    return is_design_sweep(sweeper_cfg) or target.endswith("BasicSweeper")


def _distinct(lists: list[list[str]]) -> list[list[str]]:
    """The lists once each, in their first order."""
    return [list(t) for t in dict.fromkeys(map(tuple, lists))]


def plan(sweeper_cfg, task_overrides: list[str], tagged: bool = True) -> Plan:
    """The jobs of `python -m ablate -m <task overrides>` as the configured sweeper
    expands them: Hydra's basic grid, or a design crossed with that grid. `tagged`: the
    jobs' config has ablate's `design` node, which their tag overrides set."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    params = [f"{k}={v}" for k, v in (sweeper_cfg.get("params") or {}).items()]
    args = [o for o in [*params, *task_overrides] if key_of(o) != DESIGN_KEY]  # the design's own choice
    parsed = OverridesParser.create().parse_overrides(args)
    swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    grid = [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]
    if not is_design_sweep(sweeper_cfg):
        return Plan(grid, swept)
    design = from_config(sweeper_cfg)
    # each job keeps the design preset's choice: it sets hydra.sweeper to the ablation sweeper,
    # so the command line's hydra.sweeper.* overrides compose in the job too (Hydra applies them
    # to every job's config, where Hydra's basic sweeper has no `seeds`)
    choice = [o for o in task_overrides if key_of(o) == DESIGN_KEY]
    grid = [[*choice, *g] for g in grid]
    seeds = sweeper_cfg.get("seeds")
    if design.kind == "greedy_path" and not seeds:
        seeds = {"min": 3}  # the path is found on three seeds unless told otherwise
    if design.kind == "grid":  # the command line's combinations are the arms, crossed with its seeds
        varied = set(swept) - {"seed"}
        design.grid = _distinct([[o for o in g if key_of(o) in varied] for g in grid])
        grid = _distinct([[o for o in g if key_of(o) not in varied] for g in grid])
    names = swept if design.kind == "grid" else ["design.arm", *swept]  # what run names show
    if not seeds:
        jobs = expand(design, grid, tagged)
        return Plan([overrides for _, overrides in jobs], names, design, [arm for arm, _ in jobs],
                    common=grid[0] if grid else [], tagged=tagged)
    policy = SeedPolicy.from_config(OmegaConf.to_container(seeds) if isinstance(seeds, DictConfig) else seeds)
    fixed = [k for k in swept if k != "seed"] if design.kind != "grid" else []
    if any(key_of(o) == "seed" for g in grid for o in g) or fixed:
        what = "seed" if not fixed else ", ".join(fixed)
        raise DesignError(f"{what} on the command line: an adaptive study chooses the seeds itself "
                          f"(hydra.sweeper.seeds) and crosses no other sweep keys. Drop it, or put it in the design.")
    other = grid[0]
    expand(design, [other])  # the command line may not set a factor's keys
    first = [(arm, s) for arm in arms(design) for s in range(policy.min)]  # the first round, for the pre-flight
    jobs = [job_overrides(design, arm, [*other, f"seed={s}"], tagged) for arm, s in first]
    return Plan(jobs, [*names, "seed"], design, [arm for arm, _ in first], policy, bool(sweeper_cfg.get("race")), other,
                [*other, "seed=0"], tagged)
