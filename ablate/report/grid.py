"""A grid of configurations (an ordered study such as step=1..7, or any sweep): seeds
pooled per configuration, and each configuration compared with the previous one and
the first, or with a baseline, as one family under the decision rule."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate import effects, stats
from ablate.config import is_setting
from ablate.metrics import Objective
from ablate.report.load import ReportError


@dataclass
class Report:
    runs: pd.DataFrame              # finished runs used, one row per run
    summary: pd.DataFrame           # one row per configuration
    deltas: pd.DataFrame            # one row per comparison
    keys: list[str]                 # the params that vary between configurations
    notes: list[str] = field(default_factory=list)  # problems found, said once each
    variance: pd.DataFrame = field(default_factory=pd.DataFrame)  # seed spread by source, when sources vary
    objective: Objective = field(default_factory=Objective)  # what the runs are scored by
    rule: stats.Rule = field(default_factory=stats.Rule)  # what made a Δ clear: every comparison of the table
    sesoi: float | None = None  # the smallest effect of interest (equivalence), in the objective's units
    random_numbers: str | None = None  # how the runs drew theirs (effects.random_numbers)


def _sort_key(values: pd.Series):
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values


def mean_ci(x: np.ndarray, bounds=None) -> tuple[float, float]:
    """95% t-interval of the mean, cut to the metric's `bounds` (none: not cut); NaN
    with fewer than two values."""
    return stats.t_interval(x, bounds)


def comparison(a: pd.DataFrame, b: pd.DataFrame, metric: str, bounds=None, rule: stats.Rule | None = None,
               sesoi: float | None = None) -> tuple[stats.Comparison, str]:
    """b - a for one metric: paired over the seeds both sides have (in seed order),
    Welch's test when fewer than two are shared; and the seeds left out ("4,7"). Judged
    as a family of one; Rule.judge judges the table's. The interval is cut to `bounds`,
    the range of a difference (stats.py)."""
    rule = rule or stats.Rule()
    sa, sb = a.set_index("seed")[metric], b.set_index("seed")[metric]
    shared = sorted(set(sa.index) & set(sb.index))
    if len(shared) >= 2:
        comp = stats.paired(sa.loc[shared].to_numpy(), sb.loc[shared].to_numpy(), bounds, rule, sesoi)
        return comp, ",".join(str(x) for x in sorted(set(sa.index) ^ set(sb.index)))
    return stats.welch(sa.to_numpy(), sb.to_numpy(), bounds, rule, sesoi), ""


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str, bounds=None, rule: stats.Rule | None = None,
            sesoi: float | None = None) -> dict:
    """`comparison` as a dict of its fields and `unpaired`."""
    comp, unpaired = comparison(a, b, metric, bounds, rule, sesoi)
    return {**comp.as_dict(), "unpaired": unpaired}


def _is_child(key: str, parents) -> bool:
    return any(key.startswith(p + ".") for p in parents)


def changed(a: dict, b: dict, skip: tuple = ()) -> str:
    """Config keys whose values differ, as 'key: old→new; ...'. When a group's choice
    changed (scheduler: none→onecycle), detail keys that only one option has are
    implied and left out, as is the class it builds (`optimizer._target_`); shared ones
    (model.dropout) are still shown."""
    keys = sorted(k for k in set(a) | set(b) if is_setting(k) and k not in skip and a.get(k) != b.get(k))
    keys = [k for k in keys if not (_is_child(k, keys) and (k not in a or k not in b
                                                            or k.endswith(("._target_", "._partial_"))))]
    return "; ".join(f"{k}: {a.get(k, '∅')}→{b.get(k, '∅')}" for k in keys)


def label_keys(df: pd.DataFrame, keys: list[str], order: str | None) -> list[str]:
    """The keys that name a configuration: top-level varied keys, order key first,
    without those the order key already determines (step=3 implies norm=...)."""
    top = [k for k in keys if not _is_child(k, keys)]
    if order in top:
        dependent = [k for k in top if k != order and (df.groupby(order)[k].nunique() <= 1).all()]
        top = [order] + [k for k in top if k != order and k not in dependent]

    def same_split(a: str, b: str) -> bool:  # one value of a for each of b, and back
        return bool((df.groupby(a)[b].nunique() <= 1).all() and (df.groupby(b)[a].nunique() <= 1).all())

    named: list[str] = []  # a key that only echoes another (model.norm with norm) names nothing new
    for k in sorted(top, key=lambda k: (k != order, "." in k)):
        if not any(same_split(j, k) for j in named):
            named.append(k)
    return [k for k in top if k in named]


def build(runs: pd.DataFrame, notes: list[str] | None = None, order: str | None = None,
          baseline: str | None = None, objective: Objective | None = None, sesoi: float | None = None) -> Report:
    """Summary per configuration and deltas between configurations, on the objective's
    column and its other selection (`objective`: by default, the runs' own). Every
    delta of the table is one family under stats.Rule; `sesoi` turns on equivalence."""
    notes = list(notes or [])
    sesoi = stats.check_sesoi(sesoi)
    objective = objective or Objective.from_runs(runs)
    metrics = (objective.column, objective.other)
    params = {c[len("params."):]: c for c in runs.columns if c.startswith("params.")}
    # sorted: MLflow's column order differs between calls, and a label must read the same each time
    keys = sorted(k for k, c in params.items() if is_setting(k) and runs[c].nunique(dropna=False) > 1)
    order = order or ("step" if "step" in keys else None)
    if order and order not in params:
        raise ReportError(f"--order {order}: no such param. Params that vary: {', '.join(keys) or 'none'}.")
    df = pd.DataFrame({
        "seed": effects.pair_key(runs),
        "param_count": runs.get("metrics.param_count", pd.Series(math.nan, index=runs.index)),  # a user loop: maybe
        "best_epoch": runs["metrics.best_epoch"],
        "test_samples": runs.get("metrics.test_samples", pd.Series(math.nan, index=runs.index)),
        **{m: runs[f"metrics.{m}"] for m in metrics},
        "all": "all runs",
    })
    for k in keys:
        df[k] = runs[params[k]].fillna("∅").astype(str)
    group_cols = keys or ["all"]
    named = label_keys(df, keys, order)
    rows, members = [], {}
    for values, g in df.groupby(group_cols, sort=False):
        values = dict(zip(group_cols, values if isinstance(values, tuple) else (values,), strict=True))
        label = ", ".join(f"{k}={values[k]}" for k in named) if named else "all runs"
        members[label] = g
        row = {"config": label, **{k: values[k] for k in keys}, "n": len(g),
               "seeds": ",".join(str(s) for s in sorted(g["seed"])),
               "param_count": _count(g["param_count"].iloc[0])}
        if g["param_count"].nunique() > 1:
            notes.append(f"{label}: runs disagree on param_count ({sorted(g['param_count'].unique())})")
        for m in metrics:
            row.update({f"{m}_{k}": v for k, v in stats.describe(g[m], objective.bounds).items()})
        row["best_epoch_mean"] = g["best_epoch"].mean()
        row["outlying"] = ",".join(str(x) for x in stats.outlying(g.set_index("seed")[objective.column]))
        if row["outlying"]:
            notes.append(f"{label}: seed(s) {row['outlying']} lie far from the others (robust z > "
                         f"{stats.OUTLYING:g}); look at those runs before trusting its interval")
        if effects.has_floor(objective, runs):
            row["floor"] = effects.binomial_floor(row[f"{objective.column}_mean"], g["test_samples"].max())
        rows.append(row)
        if len(g) < 2:
            notes.append(f"{label}: a single seed, so no confidence interval")
    summary = pd.DataFrame(rows)
    if order:
        summary = summary.sort_values(order, key=_sort_key, kind="stable").reset_index(drop=True)
    first_params = {label: _params_of(runs, members[label]) for label in summary["config"]}
    comparisons = []
    labels = list(summary["config"])
    if baseline is not None:
        base = _find(labels, baseline)
        pairs = [(base, label, "baseline") for label in labels if label != base]
    elif order:
        pairs = [(labels[i - 1], labels[i], "previous") for i in range(1, len(labels))]
        pairs += [(labels[0], labels[i], "first") for i in range(2, len(labels))]
    else:
        pairs = [(labels[0], label, "baseline") for label in labels[1:]]
    rule = stats.Rule(comparisons=len(pairs))  # every comparison in the table is one family
    for a, b, kind in pairs:
        row = {"from": a, "to": b, "vs": kind,
               "delta_params": _count(members[b]["param_count"].iloc[0] - members[a]["param_count"].iloc[0]),
               "changed": changed(first_params[a], first_params[b], skip=(order,))}
        row["_comps"] = {}
        for m in metrics:
            row["_comps"][m], row[f"{m}_unpaired"] = comparison(members[a], members[b], m, objective.delta_bounds,
                                                                rule, sesoi)
        comparisons.append(row)
    effects.judge_family(comparisons, rule)  # every delta of the table: one family
    for row in comparisons:
        if row[f"{objective.column}_test"] == "Welch t":
            notes.append(f"{b} vs {a}: unpaired (Welch's test), as fewer than two seeds were run on both sides")
        elif row[f"{objective.column}_unpaired"]:
            notes.append(f"{b} vs {a}: paired on the {row[f'{objective.column}_n']} seeds both have; seed(s) "
                         f"{row[f'{objective.column}_unpaired']} left out (run on one side only)")
    deltas = pd.DataFrame(comparisons)
    for m in metrics if len(deltas) else ():
        deltas[f"{m}_better"] = objective.sign * deltas[f"{m}_delta"] > 0  # an improvement, by the objective
    variance = pd.DataFrame()
    if len(effects.seed_columns(runs)) > 1:  # per-source seeds: how much of the spread each one makes
        variance = pd.concat([effects.variance_by_source(runs.loc[g.index], objective.column).assign(config=label)
                              for label, g in members.items()], ignore_index=True)
    return Report(runs, summary, deltas, keys, notes, variance, objective, rule, sesoi, effects.random_numbers(runs))


def _count(value) -> float:
    """A parameter count as an int; NaN where the runs did not log one."""
    return math.nan if pd.isna(value) else int(value)


def _params_of(runs: pd.DataFrame, group: pd.DataFrame) -> dict:
    row = runs.loc[group.index[0]]
    return {c[len("params."):]: row[c] for c in runs.columns if c.startswith("params.") and pd.notna(row[c])}


def _find(labels: list[str], baseline: str) -> str:
    hits = [label for label in labels if baseline == label or baseline in label.split(", ")]
    if len(hits) != 1:
        raise ReportError(f"--baseline {baseline!r} matches {len(hits)} configurations; "
                          f"choose one of: {' | '.join(labels)}")
    return hits[0]
