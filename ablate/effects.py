"""Effects of a design's factors, from its runs, each paired by seed:

    leave_one_out  contribution of f = baseline - (baseline without f)
    add_one_in     gain of f         = (baseline + f) - baseline
    path           step i            = arm i - arm i-1
    factorial      main effect of f  = mean over cells with f on - mean with f off
                   interaction f x g = [(f on, g on) + (f off, g off) - (f on, g off) - (f off, g on)] / 2
                   both per seed, over the seeds that finished every cell

Every effect of the table, over all its strata, is one family judged by one
stats.Rule: Holm's step-down over the effects, each p adjusted, in an adaptive study,
for the looks min..max (whether or not the study finished). An effect is clear when its
Holm-adjusted p is below alpha, and its interval then ends at 0 on the side its sign
rules out; whether it is an improvement or a worsening is the objective's call
(ablate.metrics.Objective: an effect b - a improves when higher is better and it is
positive, or lower is better and it is negative). With a smallest effect of interest
(`sesoi`), an effect whose (1 - 2 alpha_1) interval (Rule.equivalence) lies inside
±sesoi is equivalent: no effect beyond it. A factorial also gets each factor's exact
Shapley value. Effects and arms are computed on the objective's column (final or best
test value of its metric) and its other selection beside. Failed arms are kept: their
seeds and errors are counted."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate import source, stats, tracking
from ablate.adaptive import Decision
from ablate.config import is_seed, is_setting
from ablate.designs import BASELINE, Design, DesignError, arms, contrasts
from ablate.metrics import Objective


def objective_of(spec: dict, runs: pd.DataFrame) -> Objective:
    """The objective a design's runs are scored by: as its design.json records it, else
    (a design.json from before objectives were recorded) as the runs' tags say."""
    if "objective" in spec:
        o = spec["objective"]
        return Objective(**{**o, "bounds": tuple(o["bounds"])})
    return Objective.from_runs(runs)


def _metrics(objective: Objective) -> tuple[str, str]:
    """The columns a report computes: the objective's, then its other selection."""
    return objective.column, objective.other


@dataclass
class DesignReport:
    design: Design
    arms: pd.DataFrame        # one row per arm (and stratum)
    effects: pd.DataFrame     # one row per effect (and stratum)
    strata: list[str]         # params besides the seed that vary within arms (crossed sweep keys)
    notes: list[str] = field(default_factory=list)
    rounds: pd.DataFrame | None = None  # greedy_path: every round's candidates
    adaptive: dict | None = None        # the seed policy, when the sweeper chose the seeds
    objective: Objective = field(default_factory=Objective)
    rule: stats.Rule = field(default_factory=stats.Rule)  # what made an effect clear
    sesoi: float | None = None          # the smallest effect of interest, in the objective's units
    shapley: pd.DataFrame | None = None  # factorial: each factor's Shapley value beside the other answers
    random_numbers: str | None = None   # how the runs drew theirs (random_numbers)


def seed_columns(runs: pd.DataFrame) -> list[str]:
    """`params.seed` and the per-source seeds that any run sets."""
    return [c for c in runs.columns if c.startswith("params.") and is_seed(c[len("params."):])
            and (c == "params.seed" or runs[c].fillna("null").ne("null").any())]


def pair_key(runs: pd.DataFrame) -> pd.Series:
    """What pairs runs across arms: the seed, or every source's seed when some are set
    (runs that share all their seeds are paired)."""
    cols = seed_columns(runs)
    if cols == ["params.seed"]:  # a run with no seed (an app's `seed: null`) pairs with nothing: NaN
        return pd.to_numeric(runs["params.seed"], errors="coerce")
    return runs[cols].fillna("null").astype(str).agg("|".join, axis=1)


def seeds_as_used(runs: pd.DataFrame) -> pd.DataFrame:
    """Engine runs' seed params as the runs used them: a run from before `seeds.common`
    existed drew one stream (False), and under common random numbers a per-source seed
    equal to `seed` is what null gives (config.fingerprint hashes it so too), so it pairs
    and groups as null."""
    if "params.seeds.init" not in runs.columns:
        return runs
    runs = runs.copy()
    runs["params.seeds.common"] = runs.get("params.seeds.common", pd.Series(index=runs.index, dtype=object))
    runs["params.seeds.common"] = runs["params.seeds.common"].fillna("False")
    common = runs["params.seeds.common"].eq("True")
    for col in [c for c in runs.columns if c.startswith("params.seeds.") and c != "params.seeds.common"]:
        runs.loc[common & runs[col].eq(runs["params.seed"]), col] = "null"
    return runs


def random_numbers(runs: pd.DataFrame) -> str | None:
    """How the runs drew their random numbers, in one sentence: common across arms
    (`seeds.common`), one stream per run, or a mix. None for runs that do not record it
    (a user's own loop draws its own). Runs from before the key existed used one stream."""
    if "params.seeds.init" not in runs.columns or runs.empty:
        return None
    common = seeds_as_used(runs)["params.seeds.common"].eq("True")
    if common.all():
        return ("Random numbers: common across arms (seeds.common=true): the arms of one seed saw the same batch "
                "order, drew their augmentation and their dropout masks each from a stream of its own (equal draws "
                "where two arms apply the same ops and layers in the same order; an added one shifts those after "
                "it), and a block-list model's layers of equal shape started from equal weights.")
    if not common.any():
        return ("Random numbers: one stream per run (seeds.common=false, the seed study's protocol): the arms of a "
                "seed share the seed, but their batch order, augmentation and dropout draws part once the models "
                "differ, so a paired Δ keeps that noise; seeds.common=true shares them.")
    return (f"Random numbers: mixed: {int(common.sum())} of {len(runs)} runs drew common random numbers across "
            f"arms (seeds.common=true), the rest one stream per run (seeds.common=false); a Δ across the two pairs "
            f"runs by seed number only. A design's report judges each mode apart; for a grid, report each with "
            f"--filter \"params.seeds.common = 'True'\" (or 'False').")


def variance_by_source(runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The seed-to-seed spread of one configuration's runs, split by source: for each
    seed column that varies, the std among runs that differ in that source alone (the
    others held fixed), pooled over the groups. The last row is the overall std.
    `metric`: a summary metric; by default the runs' objective's column."""
    metric = metric or Objective.from_runs(runs).column
    cols = seed_columns(runs)
    y = runs[f"metrics.{metric}"].astype(float)
    rows = []
    for col in cols:
        others = [c for c in cols if c != col]
        groups = runs.groupby(others, dropna=False) if others else [((), runs)]
        ss, df = 0.0, 0
        for _, g in groups:
            if g[col].nunique() > 1:
                v = y.loc[g.index]
                ss, df = ss + float(((v - v.mean()) ** 2).sum()), df + len(v) - 1
        if df:
            rows.append({"source": col[len("params."):], "runs": len(runs), "df": df, "std": math.sqrt(ss / df)})
    if len(rows) and len(y) > 1:
        rows.append({"source": "all runs", "runs": len(runs), "df": len(y) - 1, "std": float(y.std(ddof=1))})
    return pd.DataFrame(rows)


def binomial_floor(mean_pct: float, n: float) -> float:
    """The test set's own noise of a mean accuracy in %, in pp: 100 sqrt(p (1 - p) / N)
    (stats.binomial_floor); NaN where N was not logged."""
    return math.nan if pd.isna(n) else 100 * stats.binomial_floor(mean_pct / 100, int(n))


def has_floor(o: Objective, runs: pd.DataFrame) -> bool:
    """Accuracy on independent test samples (a classification's acc, not per token):
    the metric whose test-set noise is binomial."""
    task = runs.get("params.task.name", pd.Series("classification", index=runs.index)).fillna("classification")
    return o.metric == "acc" and o.split == "test" and bool((task == "classification").all())


def newest_per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per config fingerprint, the newest: a config run twice (force=true, or a
    FAILED record and its retry) would count its seed twice."""
    return runs.sort_values("start_time").drop_duplicates(f"tags.{tracking.FINGERPRINT}", keep="last")


def _arm_of(runs: pd.DataFrame, spec: dict) -> pd.Series:
    return runs[f"tags.{tracking.FINGERPRINT}"].map(spec["fingerprints"])


def _override_value(text, key: str):
    """`key`'s value in a run's recorded overrides ("data=wine seed=0"), as given."""
    for o in re.findall(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""", str(text or "")):
        k, _, v = o.partition("=")
        if k.lstrip("+~") == key:
            return v.strip("'\"")
    return None


def _strata(runs: pd.DataFrame, swept: list[str] | None = None) -> list[str]:
    """The params besides the seed that vary within arms: the keys the sweep's command
    line crossed with the design (`swept`), named as the user swept them (`data=wine`,
    read from each run's overrides), or, for a design.json that does not record them,
    every setting that varies."""
    if swept is not None:
        col = f"tags.{tracking.OVERRIDES}"
        keys = [k for k in swept if k != "design.arm" and not is_seed(k)]
        if col not in runs:
            return []
        for k in keys:
            runs[f"params.{k}"] = runs[col].map(lambda text, k=k: _override_value(text, k))
        return [f"params.{k}" for k in keys if runs.groupby("arm")[f"params.{k}"].nunique(dropna=False).max() > 1]
    keys = [c for c in runs.columns if c.startswith("params.") and is_setting(c[len("params."):])]
    return [k for k in keys if runs.groupby("arm")[k].nunique(dropna=False).max() > 1]


def _arm_table(design: Design, runs: pd.DataFrame, stratum: dict, objective: Objective) -> list[dict]:
    rows = []
    for arm in arms(design):
        mine = runs[runs["arm"] == arm.name]
        done = mine[mine["status"] == "FINISHED"]
        failed = mine[mine["status"] != "FINISHED"]
        errors = sorted({str(e) for e in failed.get(f"tags.{tracking.ERROR}", pd.Series(dtype=str)).dropna()})
        row = {**stratum, "arm": arm.name, "applied": "+".join(arm.applied), "runs": len(mine),
               "finished": len(done), "failed": len(failed), "error": "; ".join(errors)[:300],
               "seeds": ",".join(str(s) for s in sorted(done["seed"])),
               "param_count": int(done["metrics.param_count"].iloc[0])
               if len(done) and pd.notna(done.get("metrics.param_count", pd.Series([math.nan])).iloc[0]) else math.nan,
               "overrides": " ".join(arm.overrides)}
        if design.kind == "factorial":
            row.update({f"level.{f}": v for f, v in design.levels(arm).items()})
        for m in _metrics(objective):
            row.update({f"{m}_{k}": v for k, v in stats.describe(done[f"metrics.{m}"], objective.bounds).items()})
        # issue 30 item 8: a seed far from its arm's others (one outlier wrecks a t-interval of 3)
        seeds = done.set_index("seed")[f"metrics.{objective.column}"]
        row["outlying"] = ",".join(str(s) for s in stats.outlying(seeds))
        if has_floor(objective, runs) and "metrics.test_samples" in done:
            row["floor"] = binomial_floor(row[f"{objective.column}_mean"], done["metrics.test_samples"].max())
        rows.append(row)
    return rows


def _series(runs: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    done = runs[(runs["arm"] == arm) & (runs["status"] == "FINISHED")]
    return done.set_index("seed")[f"metrics.{metric}"].astype(float)


def _greedy(spec: dict) -> tuple[Design, pd.DataFrame]:
    """A greedy path's report is the path it found (a path design), and its rounds."""
    design = Design.from_spec(spec)
    found = spec["greedy"]["path"]
    rows = [{"round": i + 1, "from": "+".join(r["current"]) or BASELINE, **c, "chosen": c["factor"] == r["chosen"]}
            for i, r in enumerate(spec["greedy"]["rounds"]) for c in r["candidates"]]
    return Design(design.name, "path", design.baseline, design.factors, list(found)), pd.DataFrame(rows)


def _effect_row(name: str, kind: str, what: str, per_seed: dict[str, tuple[pd.Series, pd.Series]],
                status: str) -> dict:
    """An effect before it is judged: `per_seed` holds metric -> (a, b) by seed; `judge`
    compares them once the family (every effect of the table) is known."""
    return {"effect": name, "kind": kind, "what": what, "status": status, "_per_seed": per_seed}


def judge(row: dict, rule: stats.Rule, objective: Objective, sesoi: float | None,
          decided: dict | None = None) -> dict:
    """The effect's comparisons (under `_comps`, for judge_family), paired over the seeds
    both sides have, in seed order (the order an adaptive study added them); for an
    adaptive decision (`decided`, from design.json), over the seeds it was judged on: its
    recorded seed ids, or for a design.json written before they were recorded, the seeds
    below its n (which are not the decision's where a run failed)."""
    out = {k: v for k, v in row.items() if k != "_per_seed"}
    out["_comps"] = {}
    for m, (a, b) in row["_per_seed"].items():
        seeds = sorted(set(a.index) & set(b.index))
        if decided and decided.get("seeds"):
            used = {int(s) for s in decided["seeds"]}
            seeds = [s for s in seeds if isinstance(s, (int, float, np.number)) and int(s) in used]
        elif decided and all(isinstance(s, (int, float, np.number)) for s in seeds):
            seeds = [s for s in seeds if s < decided["n"]]  # an adaptive study's seeds are 0, 1, ...
        out["_comps"][m] = stats.paired(a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy(), objective.delta_bounds,
                                        rule, sesoi)
    return out


def judge_family(rows: list[dict], rule: stats.Rule) -> None:
    """Each metric's comparisons of `rows` (their `_comps`) judged as one family by
    `rule` (Holm's step-down, compatible intervals), written into the rows as
    `<metric>_<field>` columns."""
    for m in dict.fromkeys(m for r in rows for m in r["_comps"]):
        have = [r for r in rows if m in r["_comps"]]
        for r, comp in zip(have, rule.judge([r["_comps"][m] for r in have]), strict=True):
            r.update({f"{m}_{k}": v for k, v in comp.as_dict().items()})
    for r in rows:
        del r["_comps"]


def shapley_table(design: Design, runs: pd.DataFrame, objective: Objective, rule: stats.Rule) -> pd.DataFrame:
    """Each factor's exact Shapley value from a full factorial (every 2^k cell), per seed
    over the seeds that finished every cell, with its 95% t-interval (descriptive: the
    values are attribution, not claims, and are outside the rule's family);
    beside it the answers that depend on an order or a context, from the same cells:
    leave-one-out (all on minus all on but f), add-one-in (f alone minus none) and the
    path in the order given. The Shapley values add up to all-on minus all-off."""
    factors = list(design.factors)
    by_levels = {frozenset(a.applied): a.name for a in arms(design)}
    table = pd.DataFrame({name: _series(runs, name, objective.column) for name in by_levels.values()}).dropna()
    if table.empty:
        return pd.DataFrame()
    v = {s: table[name].to_numpy() for s, name in by_levels.items()}
    phi = stats.shapley(v, factors)
    full, empty = frozenset(factors), frozenset()
    rows = []
    for i, f in enumerate(factors):
        lo, hi = stats.t_interval(phi[f], objective.delta_bounds)
        path = v[frozenset(factors[:i + 1])] - v[frozenset(factors[:i])]
        rows.append({"factor": f, "shapley": float(phi[f].mean()), "ci_lo": lo, "ci_hi": hi, "n": len(table),
                     "leave_one_out": float((v[full] - v[full - {f}]).mean()),
                     "add_one_in": float((v[frozenset({f})] - v[empty]).mean()), "path": float(path.mean())})
    out = pd.DataFrame(rows)
    out.attrs["total"] = float((v[full] - v[empty]).mean())  # what the Shapley values add up to
    return out


def _factorial_rows(design: Design, runs: pd.DataFrame, objective: Objective) -> tuple[list[dict], list[str]]:
    by_levels = {a.applied: a.name for a in arms(design)}
    notes, rows = [], []
    cells = {}  # metric -> DataFrame [seed x arm]
    for m in _metrics(objective):
        table = pd.DataFrame({name: _series(runs, name, m) for name in by_levels.values()})
        complete = table.dropna()
        if len(complete) < len(table) and m == objective.column:
            notes.append(f"factorial effects use the {len(complete)} seed(s) that finished all {len(by_levels)} "
                         f"cells; {len(table) - len(complete)} seed(s) left out")
        cells[m] = complete

    for c in contrasts(design):
        # the mean of the cells where the product of levels is +1, minus where it is -1
        # (for two factors: half the change of one's effect across the other's level)
        sign = pd.Series(c.signs, index=list(c.arms))
        per_seed = {m: (cells[m].loc[:, sign[cells[m].columns] < 0].mean(axis=1),
                        cells[m].loc[:, sign[cells[m].columns] > 0].mean(axis=1)) for m in _metrics(objective)}
        rows.append(_effect_row(c.name, c.kind, c.what, per_seed, "ok" if len(cells[objective.column]) else
                                "cells failed"))
    return rows, notes


def post_hoc_sesoi(given: float, declared: float | None) -> str:
    """The note for a smallest effect of interest chosen at report time (issue 30 item 9)."""
    before = "none" if declared is None else f"±{declared:g}"
    return (f"the smallest effect of interest ±{given:g} was given when reporting, after the results were seen (the "
            f"study declared {before} before its runs): the equivalence calls keep their error rate, but ±{given:g} "
            f"is not a margin fixed in advance")


def analyse(runs: pd.DataFrame, spec: dict, objective: Objective | None = None,
            sesoi: float | None = None) -> DesignReport:
    """`runs`: every run of the design's fingerprints (any status), as mlflow.search_runs
    gives them; `spec`: the design.json the sweep's parent run keeps; `objective`: what
    the runs are scored by (default: objective_of(spec, runs)); `sesoi`: the smallest
    effect of interest in the objective's units (default: the study's, if it set one)."""
    design = Design.from_spec(spec)
    rounds = None
    if design.kind == "greedy_path":
        if "greedy" not in spec:
            raise DesignError(f"the greedy path {design.name} has not finished a round yet, so there is no path to "
                              f"report: run the study's command again to go on.")
        design, rounds = _greedy(spec)
    adaptive = spec.get("adaptive")
    given, declared = sesoi, spec.get("sesoi")
    sesoi = stats.check_sesoi(sesoi if sesoi is not None else declared)
    decided = {d["comparison"]: d for d in (adaptive or {}).get("decisions", [])}
    # every comparison may have been looked at max - min + 1 times, finished or not
    looks = adaptive["policy"]["max"] - adaptive["policy"]["min"] + 1 if adaptive and rounds is None else 1
    first = adaptive["policy"]["min"] if looks > 1 else 2
    runs = runs.copy()
    runs["arm"] = _arm_of(runs, spec)
    runs = runs[runs["arm"].notna()]
    objective = objective or objective_of(spec, runs)
    runs["seed"] = pair_key(runs)
    notes: list[str] = [] if given is None or given == declared else [post_hoc_sesoi(given, declared)]
    if rounds is not None and spec["greedy"].get("in_progress"):
        notes.append(f"the greedy path is unfinished: {len(design.order)} of {len(design.factors)} rounds ended; "
                     f"run the study's command again to go on")
    # a finished run without the objective's value cannot count as a seed of its arm
    blank = (runs["status"] == "FINISHED") & runs.get(f"metrics.{objective.column}", pd.Series(math.nan,
                                                                                               index=runs.index)).isna()
    for _, r in runs[blank].iterrows():
        notes.append(f"left out run {r['run_id']} (arm {r['arm']}, seed {r['seed']}): finished without a value of "
                     f"{objective.column}")
    runs = runs[~blank]
    runs = newest_per_config(runs)
    strata = _strata(runs, spec.get("swept"))
    notes += source.mixed(runs[runs["status"] == "FINISHED"])
    if adaptive and rounds is None and not decided:
        notes.append(f"the adaptive study is unfinished (stopped or still running): the effects use the seeds run so "
                     f"far, still adjusted for the {looks} looks its policy allows; run its command again to finish it")
    arm_rows, pending = [], []
    groups = runs.groupby(strata, dropna=False) if strata else [((), runs)]
    for values, part in groups:
        stratum = dict(zip([k[len("params."):] for k in strata], values if isinstance(values, tuple) else (values,),
                           strict=True))
        arm_rows += _arm_table(design, part, stratum, objective)
        failed = {r["arm"]: r for r in arm_rows[-len(arms(design)):] if r["failed"]}
        rows = []
        if design.kind == "factorial":
            rows, more = _factorial_rows(design, part, objective)
            notes += more
        else:
            for c in contrasts(design):
                a, b = c.arms  # b - a
                bad = [failed[x] for x in (a, b) if x in failed]
                status = "; ".join(f"arm {r['arm']}: {r['failed']} of {r['runs']} seed(s) failed"
                                   + (f" ({r['error']})" if r["error"] else "") for r in bad) or "ok"
                per_seed = {m: (_series(part, a, m), _series(part, b, m)) for m in _metrics(objective)}
                rows.append(_effect_row(c.name, c.kind, c.what, per_seed, status))
        pending += [{**row, **stratum} for row in rows]
    # one family: every effect of the table, over all strata, at every look
    rule = stats.Rule(comparisons=len(pending), looks=looks, first=first)
    judged = [judge(row, rule, objective, sesoi, decided=decided.get(row["effect"])) for row in pending]
    judge_family(judged, rule)
    for out in judged:
        d = decided.get(out["effect"])  # judged on the seeds the decision saw
        if d:
            out["seeds"], out["stopped"] = out[f"{objective.column}_n"], _stopped(d, adaptive.get("rule") is not None)
    effects = pd.DataFrame(judged)
    col = objective.column
    for r in judged:  # issue 30 item 5: why [0.05, 0.05, 0.05] is not clear while [0.05, 0.05, 0.06] may be
        if r.get(f"{col}_test") == "sign-flip (no spread)" and not r[f"{col}_clear"]:
            notes.append(f"{r['effect']}: the same difference on each of its {r[f'{col}_n']} seeds (no spread), so "
                         f"the exact sign-flip test judges it, whose p is at least 2^(1-n) = "
                         f"{2.0 ** (1 - r[f'{col}_n']):.3g}: under the rule it cannot be clear with fewer than "
                         f"{stats.no_spread_seeds(rule)} seeds, however large the difference (one with any spread "
                         f"is judged by its t-interval)")
    for m in _metrics(objective) if len(effects) else ():
        effects[f"{m}_better"] = objective.sign * effects[f"{m}_delta"] > 0  # an improvement, by the objective
    for r in arm_rows:
        if r["failed"]:
            notes.append(f"arm {r['arm']}: {r['failed']} of {r['runs']} seed(s) failed"
                         + (f": {r['error']}" if r["error"] else ""))
        if r["outlying"]:
            notes.append(f"arm {r['arm']}: seed(s) {r['outlying']} lie far from the arm's others (robust z > "
                         f"{stats.OUTLYING:g}): a t-interval over so few seeds is at their mercy; the sign-flip p "
                         f"beside each effect's does not assume normality. Look at those runs before trusting it")
    shap = shapley_table(design, runs, objective, rule) if design.kind == "factorial" and not strata else None
    if design.kind == "factorial" and strata:
        notes.append(f"no Shapley values: the factorial is crossed with {', '.join(s[len('params.'):] for s in strata)}"
                     f", and Shapley values are computed for one factorial at a time (report each value of it with "
                     f"--filter)")
    return DesignReport(design, pd.DataFrame(arm_rows), effects, [s[len("params."):] for s in strata], notes,
                        rounds, adaptive, objective, rule, sesoi, shap,
                        random_numbers(runs[runs["status"] == "FINISHED"]))


def _stopped(decision: dict, current: bool) -> str:
    """Why an adaptive comparison stopped: in today's words when the study was decided by
    today's rule (`current`), else as its design.json says it."""
    if not current:
        return f"{decision.get('reason', decision.get('status'))} (decided by an older rule, over looks alone)"
    fields = {k: decision.get(k, math.nan) for k in ("comparison", "n", "delta", "lo", "hi", "status")}
    try:
        return Decision(**fields).reason
    except KeyError:  # a status this version does not know
        return str(decision.get("reason", decision.get("status")))
