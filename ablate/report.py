"""Report: what each change bought, across seeds, with the noise shown.

`python -m ablate.report` reads runs from MLflow into a DataFrame, pools seeds
per configuration, and compares each configuration with the previous one and
the first (an ordered study such as step=1..7) or with a baseline. Computing
returns DataFrames; rendering (terminal, CSV, Markdown, HTML, PNG) is separate.
Everything is judged on the runs' objective (ablate.metrics.Objective, from their
tags): its column (final or best test value of its metric), with the other
selection beside, its range for the intervals and its direction for the verdicts.
"""
from __future__ import annotations

import argparse
import base64
import html
import logging
import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from ablate import effects, latex, source, stats, tracking
from ablate.config import is_setting
from ablate.errors import AblateError
from ablate.metrics import Objective

log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """Nothing at all can be reported; the message says why."""


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


# ----------------------------------------------------------------------------- loading

def load_runs(uri: str, experiment: str, sweep_id: str | None = None, run_filter: str = "",
              fingerprints: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Job runs (not sweep parents) as a DataFrame, and notes on runs left out."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ReportError(f"No experiment {experiment!r} in {uri}. Experiments there: {names}. "
                          f"Pick one with --experiment.")
    if exp.lifecycle_stage == "deleted":
        raise ReportError(f"Experiment {experiment!r} was deleted in {uri} (it is in MLflow's trash, id "
                          f"{exp.experiment_id}): restore it with `mlflow experiments restore --experiment-id "
                          f"{exp.experiment_id}` to report on its runs.")
    filters = [f for f in (run_filter,) if f]
    if sweep_id:
        filters.append(f"tags.`{tracking.SWEEP_ID}` = '{sweep_id}'")
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs([exp.experiment_id], " and ".join(filters), max_results=50_000)
    if df.empty:
        where = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment!r}"
        raise ReportError(f"No runs in {where} ({uri}). Check --sweep-id / --filter.")
    if f"tags.{tracking.FINGERPRINT}" not in df:
        raise ReportError(f"The runs in {experiment!r} ({uri}) were not written by ablate (none has the tag "
                          f"{tracking.FINGERPRINT}), so their configs and seeds are unknown. Point --experiment or "
                          f"--filter at ablate's runs.")
    df = df[df.get("params.seed").notna()] if "params.seed" in df else df.iloc[:0]  # drop sweep parents
    df = df[df[f"tags.{tracking.FINGERPRINT}"].notna()]  # runs of other tools in the same experiment
    if fingerprints is not None:
        df = df[df[f"tags.{tracking.FINGERPRINT}"].isin(fingerprints)]
    notes = []
    unfinished = df[df["status"] != "FINISHED"]
    for _, r in unfinished.iterrows():
        notes.append(f"left out {r['status']} run {r['run_id']} ({r.get('tags.mlflow.runName', '')})"
                     + (f": {r[f'tags.{tracking.ERROR}']}" if isinstance(r.get(f"tags.{tracking.ERROR}"), str) else ""))
    df = df[df["status"] == "FINISHED"]
    objective = Objective.from_runs(df)  # runs from before objectives: final test accuracy
    for metric in (objective.column, objective.other):
        col = f"metrics.{metric}"
        missing = df[col].isna() if col in df else pd.Series(True, index=df.index)
        for _, r in df[missing].iterrows():
            notes.append(f"left out run {r['run_id']}: it has no {metric} metric")
        df = df[~missing]
    # A forced rerun of one config would count its seed twice: keep the newest.
    before = len(df)
    df = df.sort_values("start_time").drop_duplicates(f"tags.{tracking.FINGERPRINT}", keep="last")
    if len(df) < before:
        notes.append(f"{before - len(df)} older duplicate run(s) of the same config left out")
    if df.empty:
        raise ReportError(f"No finished runs with {objective.column} and {objective.other} to report on. "
                          + " ".join(notes))
    notes += source.mixed(df)
    return df.reset_index(drop=True), notes



# ----------------------------------------------------------------------------- computing

def _sort_key(values: pd.Series):
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values


def mean_ci(x: np.ndarray, bounds=None) -> tuple[float, float]:
    """95% t-interval of the mean, cut to the metric's `bounds` (none: not cut); NaN
    with fewer than two values."""
    return stats.t_interval(x, bounds)


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str, bounds=None, rule: stats.Rule | None = None,
            sesoi: float | None = None) -> dict:
    """b - a for one metric, judged by `rule`: paired over the seeds both sides have
    (the others are named in `unpaired`), Welch's test when fewer than two are shared.
    The interval is cut to `bounds`, the range of a difference (stats.py)."""
    rule = rule or stats.Rule()
    sa, sb = a.set_index("seed")[metric], b.set_index("seed")[metric]
    shared = sorted(set(sa.index) & set(sb.index))
    if len(shared) >= 2:
        out = stats.paired(sa.loc[shared].to_numpy(), sb.loc[shared].to_numpy(), bounds, rule, sesoi).as_dict()
        out["unpaired"] = ",".join(str(x) for x in sorted(set(sa.index) ^ set(sb.index)))
    else:
        out = {**stats.welch(sa.to_numpy(), sb.to_numpy(), bounds, rule, sesoi).as_dict(), "unpaired": ""}
    return out


def _is_child(key: str, parents) -> bool:
    return any(key.startswith(p + ".") for p in parents)


def changed(a: dict, b: dict, skip: tuple = ()) -> str:
    """Config keys whose values differ, as 'key: old→new; ...'. When a group's choice
    changed (scheduler: none→onecycle), detail keys that only one option has are
    implied and left out; shared ones (model.dropout) are still shown."""
    keys = sorted(k for k in set(a) | set(b) if is_setting(k) and k not in skip and a.get(k) != b.get(k))
    keys = [k for k in keys if not (_is_child(k, keys) and (k not in a or k not in b))]
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
    keys = [k for k, c in params.items() if is_setting(k) and runs[c].nunique(dropna=False) > 1]
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
            lo, hi = mean_ci(g[m].to_numpy(), objective.bounds)
            blo, bhi = stats.bootstrap_interval(g[m].to_numpy())
            row.update({f"{m}_mean": g[m].mean(), f"{m}_std": g[m].std(ddof=1) if len(g) > 1 else math.nan,
                        f"{m}_ci_lo": lo, f"{m}_ci_hi": hi, f"{m}_boot_lo": blo, f"{m}_boot_hi": bhi,
                        f"{m}_spread": not stats.no_spread(g[m].to_numpy(dtype=float))})
        row["best_epoch_mean"] = g["best_epoch"].mean()
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
        for m in metrics:
            comp = compare(members[a], members[b], m, objective.delta_bounds, rule, sesoi)
            row.update({f"{m}_{k}": v for k, v in comp.items()})
        if row[f"{objective.column}_test"] == "Welch t":
            notes.append(f"{b} vs {a}: unpaired (Welch's test), as fewer than two seeds were run on both sides")
        elif row[f"{objective.column}_unpaired"]:
            notes.append(f"{b} vs {a}: paired on the {row[f'{objective.column}_n']} seeds both have; seed(s) "
                         f"{row[f'{objective.column}_unpaired']} left out (run on one side only)")
        comparisons.append(row)
    deltas = pd.DataFrame(comparisons)
    for m in metrics if len(deltas) else ():
        deltas[f"{m}_better"] = objective.sign * deltas[f"{m}_delta"] > 0  # an improvement, by the objective
    variance = pd.DataFrame()
    if len(effects.seed_columns(runs)) > 1:  # per-source seeds: how much of the spread each one makes
        variance = pd.concat([effects.variance_by_source(runs.loc[g.index], objective.column).assign(config=label)
                              for label, g in members.items()], ignore_index=True)
    return Report(runs, summary, deltas, keys, notes, variance, objective, rule, sesoi)


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


# ----------------------------------------------------------------------------- rendering

def objective_line(o: Objective) -> str:
    """Every report's first line: what the runs are scored by, and which sign of a Δ is
    the better one (a Δ is always b − a, whichever way is better)."""
    return f"Objective: {o.describe()}. A {'positive' if o.goal == 'max' else 'negative'} Δ is an improvement."


def _name(o: Objective, select: str | None = None) -> str:
    """A column's name in a header: `final test accuracy %`, `best test RMSE`."""
    return o.named(select) + (f" {o.unit}" if o.unit else "")


def _units(o: Objective) -> str:
    """After a difference or a spread: ` pp` for an accuracy in %, the metric's unit, or nothing."""
    return f" {o.units}" if o.units else ""


def digits(o: Objective, spread) -> int:
    """Decimals to show: 2 for a %, as always; otherwise enough for two significant
    digits of the typical seed-to-seed std (an RMSE of 150 ± 12, a bpc of 1.4523 ± 0.0031)."""
    if o.unit == "%":
        return 2
    spread = pd.Series(spread, dtype=float).dropna()
    spread = spread[spread > 0]
    if spread.empty:
        return 3
    return int(min(10, max(0, 1 - math.floor(math.log10(spread.median())))))


def _pm(mean, std, digits=2) -> str:
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _ci(lo, hi, sign: bool = False, digits: int = 2, spread: bool = True) -> str:
    f = f"+.{digits}f" if sign else f".{digits}f"
    if not spread:
        return "no spread observed"
    return "n<2" if math.isnan(lo) else f"[{lo:{f}}, {hi:{f}}]"


def _delta(d: pd.Series, m: str, digits: int = 2) -> str:
    f = f"+.{digits}f"
    if not d.get(f"{m}_spread", True):
        return f"{d[f'{m}_delta']:{f}} (no spread observed)"
    if math.isnan(d[f"{m}_ci_lo"]):
        return f"{d[f'{m}_delta']:{f}} (no CI)"
    return f"{d[f'{m}_delta']:{f}} [{d[f'{m}_ci_lo']:{f}}, {d[f'{m}_ci_hi']:{f}}]"


def _p(p: float) -> str:
    return "" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _claim(r: pd.Series, m: str) -> str:
    """What the rule lets the report say of one effect: `improves`, `worsens`, `equivalent`
    (no effect beyond ±sesoi), both where a clear effect is also inside ±sesoi, or nothing."""
    clear, equivalent = r.get(f"{m}_clear", False), r.get(f"{m}_equivalent", False)
    if clear:  # clear and equivalent: a real effect, but smaller than any that matters
        return ("improves" if r[f"{m}_better"] else "worsens") + (", but within ±sesoi" if equivalent else "")
    return "equivalent" if equivalent else ""


def rule_line(rule: stats.Rule, sesoi: float | None, o: Objective, chosen: bool = False) -> str:
    """Every report's second line: the rule behind each claim, and the family it controls.
    `chosen`: the comparisons are a greedy path's steps, chosen on these same seeds."""
    line = rule.describe()
    if chosen:
        line += (" Here the steps were chosen on these same seeds among many candidates, so that guarantee does "
                 "not hold for them: confirm them with fresh seeds.")
    if sesoi is not None:
        line += (f" Equivalent (no effect beyond ±{sesoi:g}{_units(o)}, the smallest effect of interest): its "
                 f"{100 * (1 - 2 * rule.each):.4g}% interval lies inside ±{sesoi:g} (two one-sided tests at the "
                 f"same level).")
    return line


STATS_NOTE = ("Mean ± std over seeds; an arm's interval is its 95% t-interval, cut to the metric's range where it "
              "has one. Δ is paired over the seeds both sides have (Welch's test where fewer than two are shared); "
              "its interval is the one the decision rule uses, so a Δ is clear exactly when that interval excludes "
              "0. Where every seed gives the same Δ there is no spread to build a t-interval on: the p is an exact "
              "sign-flip test instead, and no interval is shown. A bootstrap interval is shown only from "
              f"{stats.BOOTSTRAP_MIN} seeds up: below that it covers far less than it says. \"detectable\" estimates "
              "the smallest true Δ the rule would call clear with power 0.8, from the spread of these seeds. "
              "\"Best\" picks its epoch by the objective's own metric (for ablate's engine, the test set's), so it is "
              "optimistic; \"final\" is the last epoch. Verdicts "
              "are drawn on the objective's selection only; the other is shown for reference.")


def noise_floor(std: pd.Series, n: int, mdd: pd.Series, metric: str, units: str = "", digits: int = 2,
                floor: pd.Series | None = None, rule: stats.Rule | None = None) -> str:
    """One line: how noisy the seeds are, how much of that the test set alone makes
    (`floor`: binomial, per configuration), and the smallest difference the rule could
    detect. `metric`: what is measured, in words."""
    std = std.dropna()
    if std.empty:
        return "Noise floor: a single seed per configuration, so no estimate of seed noise."
    f = f".{digits}f"
    line = (f"Noise floor ({metric}): seed-to-seed std per configuration "
            f"{std.min():{f}}–{std.max():{f}}{units} (median {std.median():{f}})")
    floor = pd.Series(dtype=float) if floor is None else floor.dropna()
    if len(floor):
        fl, sd = floor.median(), std.median()
        line += (f"; the test set's own binomial noise √(p(1−p)/N) is {fl:{f}}{units} (median; Jordan 2024), "
                 + (f"{fl / sd:.1f} × the seeds' median std: differences this small are below what this test set "
                    f"can resolve" if fl >= sd else
                    f"so about {(fl / sd) ** 2:.0%} of the seeds' variance is the size the test set alone would give, "
                    f"the rest is training"))
    mdd = mdd.dropna()
    if len(mdd):
        at = f"at the rule's α {rule.each:.2g}" if rule is not None else "α 0.05"
        line += (f"; with {n} seeds the rule would call a true Δ of about {mdd.median():{f}}{units} clear with "
                 f"power 0.8 (an estimate from the seeds' spread, median over comparisons, {at})")
    return line + "."


def _words(o: Objective, metric: str) -> str:
    return o.named() if metric == o.column else metric.replace("_", " ")


def grid_noise(rep: Report, metric: str | None = None) -> str:
    o = rep.objective
    metric = metric or o.column
    mdd = rep.deltas.get(f"{metric}_mdd", pd.Series(dtype=float))
    return noise_floor(rep.summary[f"{metric}_std"], int(rep.summary["n"].median()), mdd, _words(o, metric),
                       _units(o), digits(o, rep.summary[f"{metric}_std"]),
                       rep.summary.get("floor") if metric == o.column else None, rep.rule)


def design_noise(rep: effects.DesignReport, metric: str | None = None) -> str:
    o = rep.objective
    metric = metric or o.column
    mdd = rep.effects.get(f"{metric}_mdd", pd.Series(dtype=float))
    return noise_floor(rep.arms[f"{metric}_std"], int(rep.arms["finished"].median()), mdd, _words(o, metric),
                       _units(o), digits(o, rep.arms[f"{metric}_std"]),
                       rep.arms.get("floor") if metric == o.column else None, rep.rule)


def _boot(frame: pd.DataFrame, m: str, sign: bool, dg: int) -> dict:
    """The bootstrap column, only where some row has enough seeds for it to be honest."""
    if frame.get(f"{m}_boot_lo", pd.Series(dtype=float)).notna().any():
        return {"bootstrap": [_ci(r[f"{m}_boot_lo"], r[f"{m}_boot_hi"], sign, dg) for _, r in frame.iterrows()]}
    return {}


def _eq(frame: pd.DataFrame, m: str, rule: stats.Rule, sesoi: float | None, dg: int) -> dict:
    """With a sesoi, the interval the equivalence test decides with: (1 - 2 alpha/(m L))."""
    if sesoi is None:
        return {}
    return {f"{100 * (1 - 2 * rule.each):.4g}% CI (vs ±{sesoi:g})": [
        _ci(r[f"{m}_eq_lo"], r[f"{m}_eq_hi"], True, dg, r.get(f"{m}_spread", True)) for _, r in frame.iterrows()]}


def table(rep: Report) -> pd.DataFrame:
    """The readable table: the seed's columns plus seeds, CIs and the step's delta."""
    o, h, b = rep.objective, rep.objective.column, rep.objective.other
    dg = digits(o, rep.summary[f"{h}_std"])
    prev = {r["to"]: r for _, r in rep.deltas.iterrows() if r["vs"] in ("previous", "baseline")}
    boot = _boot(rep.summary, h, False, dg)
    out = []
    for i, s in rep.summary.iterrows():
        d = prev.get(s["config"])
        out.append({
            "config": s["config"], "n": s["n"], "params": "" if pd.isna(s["param_count"]) else f"{s['param_count']:,}",
            f"{_name(o)} (mean ± std)": _pm(s[f"{h}_mean"], s[f"{h}_std"], dg),
            "95% CI (t)": _ci(s[f"{h}_ci_lo"], s[f"{h}_ci_hi"], digits=dg, spread=s[f"{h}_spread"]),
            **({"bootstrap": boot["bootstrap"][i]} if boot else {}),
            _name(o, o.other_select): _pm(s[f"{b}_mean"], s[f"{b}_std"], dg),
            "best epoch": f"{s['best_epoch_mean']:.1f}",
            f"Δ {o.select} [{rep.rule.percent()} CI]": "" if d is None else _delta(d, h, dg),
            "Δ params": "" if d is None or pd.isna(d["delta_params"]) else f"{d['delta_params']:+,}",
            "changed": "" if d is None else d["changed"],
        })
    return pd.DataFrame(out)


def variance_table(rep: Report) -> pd.DataFrame:
    v, o = rep.variance, rep.objective
    dg = digits(o, v["std"]) + 1
    return pd.DataFrame({"config": v["config"], "source": v["source"], "runs": v["runs"], "df": v["df"],
                         f"std of {o.named()}" + (f" ({o.units})" if o.units else ""):
                             v["std"].map(lambda x: f"{x:.{dg}f}")})


def delta_table(rep: Report) -> pd.DataFrame:
    if rep.deltas.empty:
        return pd.DataFrame()
    d, o = rep.deltas, rep.objective
    h, b = o.column, o.other
    dg = digits(o, rep.summary[f"{h}_std"])
    return pd.DataFrame({
        "from": d["from"], "to": d["to"], "vs": d["vs"],
        f"Δ {o.select} [{rep.rule.percent()} CI]": [_delta(r, h, dg) for _, r in d.iterrows()],
        **_eq(d, h, rep.rule, rep.sesoi, dg), **_boot(d, h, True, dg),
        f"Δ {o.other_select} [{rep.rule.percent()} CI]": [_delta(r, b, dg) for _, r in d.iterrows()],
        "test": d[f"{h}_test"], "n": d[f"{h}_n"], f"p ({o.select})": d[f"{h}_p"].map(_p),
        f"p × {rep.rule.comparisons * rep.rule.looks}": d[f"{h}_p_adj"].map(_p),
        "verdict": [_claim(r, h) for _, r in d.iterrows()],
        "Δ params": d["delta_params"].map(lambda x: "" if pd.isna(x) else f"{x:+,}"), "changed": d["changed"],
    })


def markdown(rep: Report) -> str:
    parts = [objective_line(rep.objective), "", rule_line(rep.rule, rep.sesoi, rep.objective), "",
             "## Summary\n", table(rep).to_markdown(index=False), ""]
    if not rep.deltas.empty:
        parts += ["## Deltas\n", delta_table(rep).to_markdown(index=False), ""]
    if not rep.variance.empty:
        parts += ["## Seed variance by source\n", variance_table(rep).to_markdown(index=False), "",
                  "Each source's std is among runs that differ in that source alone, the other seeds held fixed.", ""]
    parts += [grid_noise(rep), "", STATS_NOTE]
    if rep.notes:
        parts += ["", "Notes:", *[f"- {n}" for n in rep.notes]]
    return "\n".join(parts) + "\n"


# --- designs

def _effect_name(rep: effects.DesignReport, r: pd.Series) -> str:
    """An effect's name, with its stratum where the table has more than one."""
    where = ", ".join(f"{k}={r[k]}" for k in rep.strata)
    return f"{r['effect']} ({where})" if where else str(r["effect"])


def effects_table(rep: effects.DesignReport) -> pd.DataFrame:
    e, o = rep.effects, rep.objective
    if e.empty:
        return pd.DataFrame()
    h, b = o.column, o.other
    dg = digits(o, rep.arms[f"{h}_std"])
    return pd.DataFrame({
        **{k: e[k] for k in rep.strata},
        "effect": e["effect"], "what": e["what"],
        f"Δ {o.select} [{rep.rule.percent()} CI]": [_delta(r, h, dg) for _, r in e.iterrows()],
        **_eq(e, h, rep.rule, rep.sesoi, dg), **_boot(e, h, True, dg),
        "n": e[f"{h}_n"], "p": e[f"{h}_p"].map(_p), f"p × {rep.rule.comparisons * rep.rule.looks}":
            e[f"{h}_p_adj"].map(_p),
        "verdict": [_claim(r, h) for _, r in e.iterrows()],
        "detectable (est.)": e[f"{h}_mdd"].map(lambda v: _detectable(v, o, dg)),
        f"Δ {o.other_select} [{rep.rule.percent()} CI]": [_delta(r, b, dg) for _, r in e.iterrows()],
        **({"seeds": e["seeds"], "stopped": e["stopped"]} if "stopped" in e else {}),
        "status": e["status"],
    })


def _detectable(v: float, o: Objective, dg: int) -> str:
    """The detectable-difference estimate, or `> range` where it exceeds any difference
    the metric allows (2 seeds at a strict level)."""
    if math.isnan(v):
        return ""
    top = o.delta_bounds[1]
    return f"> {top:g}" if top is not None and v > top else f"{v:.{dg}f}"


def shapley_table(rep: effects.DesignReport) -> pd.DataFrame:
    s, o = rep.shapley, rep.objective
    if s is None or s.empty:
        return pd.DataFrame()
    dg = digits(o, rep.arms[f"{o.column}_std"])
    f = f"+.{dg}f"
    return pd.DataFrame({
        "factor": s["factor"],
        "Shapley value [95% CI]": [f"{r['shapley']:{f}} {_ci(r['ci_lo'], r['ci_hi'], True, dg)}"
                                   for _, r in s.iterrows()],
        "leave-one-out (all − all but f)": s["leave_one_out"].map(lambda v: f"{v:{f}}"),
        "add-one-in (f alone − none)": s["add_one_in"].map(lambda v: f"{v:{f}}"),
        "path (in the order given)": s["path"].map(lambda v: f"{v:{f}}"),
        "seeds": s["n"],
    })


def shapley_line(rep: effects.DesignReport) -> str:
    s, o = rep.shapley, rep.objective
    dg = digits(o, rep.arms[f"{o.column}_std"])
    total, parts = s.attrs["total"], s["shapley"].sum()
    gap = (s["leave_one_out"] - s["shapley"]).abs().max()
    return (f"Shapley values (exact, from all {2 ** len(s)} cells, per seed): each factor's gain averaged over every "
            f"order of switching the factors on, so they do not depend on an order and add up to all on − all off: "
            f"{parts:+.{dg}f} = {total:+.{dg}f}{_units(o)}. Leave-one-out measures a factor with all others on, "
            f"add-one-in with all others off, a path in one order; they differ from the Shapley value by the "
            f"interactions (here leave-one-out by up to {gap:.{dg}f}{_units(o)}). Their 95% intervals describe; "
            f"no claim is drawn from them (they are outside the rule's family).")


def rounds_table(rep: effects.DesignReport) -> pd.DataFrame:
    r, o = rep.rounds, rep.objective
    if r is None or r.empty:
        return pd.DataFrame()
    dg = digits(o, rep.arms[f"{o.column}_std"])
    return pd.DataFrame({
        "round": r["round"], "from": r["from"], "candidate": r["factor"],
        "mean Δ (with − from) [95% CI]": [f"{x['gain']:+.{dg}f} {_ci(x['lo'], x['hi'], True, dg)}"
                                          for _, x in r.iterrows()],
        "seeds": r["n"], "raced out at": r["dropped_at"].map(lambda v: "" if pd.isna(v) else f"{int(v)} seeds"),
        "chosen": r["chosen"].map(lambda c: "yes" if c else ""),
    })


def path_line(rep: effects.DesignReport) -> str:
    """A greedy path against the order the factors were given in."""
    from scipy.stats import kendalltau
    given, found = list(rep.design.factors), list(rep.design.order)
    tau = kendalltau([given.index(f) for f in found], range(len(found))).statistic if len(found) > 1 else 1.0
    return (f"Path found: {' → '.join(found)}. Order given: {' → '.join(given)}. Kendall's τ between the two "
            f"orders: {tau:+.2f} (1: the same order). Each round keeps the candidate whose mean Δ improves the "
            f"objective most ({rep.objective.direction}), measured on the seeds that chose it, so the steps of the "
            f"path look better than they are: confirm them with fresh seeds (a path design in the order found). "
            f"Racing drops a candidate only when another beats it by the decision rule over every pair of the "
            f"round's candidates and every look.")


def adaptive_line(rep: effects.DesignReport) -> str:
    p, o = rep.adaptive["policy"], rep.objective
    stop = {"decisive": "excludes 0 or is narrower than ±{h}", "precise": "is narrower than ±{h}",
            "settled": "excludes 0 or lies inside ±sesoi (equivalent)"}[p["until"]].format(
        h=f"{p['halfwidth']}{_units(o)} (in {p.get('metric') or o.column}'s own units)")
    line = (f"Seeds chosen by the study: {p['min']} for every arm, then one more a round for the arms of each "
            f"comparison until its interval at the rule's level {stop}, up to {p['max']} seeds. The rule above "
            f"counts all {rep.rule.looks} looks")
    if "decisions" not in rep.adaptive:
        line += ": the study is unfinished, and the effects use the seeds run so far."
    elif rep.adaptive.get("rule") is None:
        line += (". This study was decided by an older rule (Bonferroni over looks alone), so a comparison it "
                 "called decisive need not be clear here: the verdicts here are today's rule's.")
    else:
        line += ", so a comparison that stopped as decisive is clear here, with the interval that decided it."
    early = rep.effects[rep.effects.get("stopped", pd.Series("", index=rep.effects.index)).astype(str)
                        .str.startswith("decisive")] if "stopped" in rep.effects else rep.effects.iloc[:0]
    if len(early):
        line += (" The means of comparisons that stopped early because they looked large are biased away from 0 "
                 "(the winner's curse): confirm a size that matters with fresh seeds.")
    return line


def arms_table(rep: effects.DesignReport) -> pd.DataFrame:
    a, o = rep.arms, rep.objective
    h, b = o.column, o.other
    dg = digits(o, a[f"{h}_std"])
    return pd.DataFrame({
        **{k: a[k] for k in rep.strata},
        "arm": a["arm"], "finished": [f"{r['finished']}/{r['runs']}" for _, r in a.iterrows()],
        "params": a["param_count"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        f"{_name(o)} (mean ± std)": [_pm(r[f"{h}_mean"], r[f"{h}_std"], dg) for _, r in a.iterrows()],
        "95% CI (t)": [_ci(r[f"{h}_ci_lo"], r[f"{h}_ci_hi"], digits=dg, spread=r.get(f"{h}_spread", True))
                       for _, r in a.iterrows()],
        _name(o, o.other_select): [_pm(r[f"{b}_mean"], r[f"{b}_std"], dg) for _, r in a.iterrows()],
        "overrides": a["overrides"], "error": a["error"],
    })


def verdict(rep: effects.DesignReport) -> str:
    """The design's answer in one line, by the rule: which effects are clear (and whether
    each improves or worsens the objective), which are equivalent to no effect, and
    which are neither."""
    e, o = rep.effects, rep.objective
    if e.empty:
        return "No effect could be computed: see the arms and notes."
    h = o.column
    dg = digits(o, rep.arms[f"{h}_std"])
    known = e[e[f"{h}_delta"].notna()]
    clear = known[known[f"{h}_clear"]]
    equiv = known[known[f"{h}_equivalent"] & ~known[f"{h}_clear"]]
    rest = known[~known[f"{h}_clear"] & ~known[f"{h}_equivalent"]]

    def fmt(rows, say: bool):
        return ", ".join(f"{_effect_name(rep, r)} ({r[f'{h}_delta']:+.{dg}f}{_units(o)}"
                         + (f", {_claim(r, h)})" if say else ")") for _, r in rows.iterrows()) or "none"
    line = f"Clear ({o.named()}, {o.direction}; by the rule above, over {len(e)} effects): {fmt(clear, True)}."
    if rep.sesoi is not None:
        line += f" Equivalent (no effect beyond ±{rep.sesoi:g}{_units(o)}): {fmt(equiv, False)}."
    line += f" Neither: {fmt(rest, False)}."
    if len(known) < len(e):
        missing = [_effect_name(rep, r) for _, r in e[e[f"{h}_delta"].isna()].iterrows()]
        line += f" Not computed (failed or missing arms): {', '.join(missing)}."
    return line


def design_markdown(rep: effects.DesignReport) -> str:
    d = rep.design
    base = " ".join(d.baseline) or "the defaults"
    kind = "greedy path" if rep.rounds is not None else d.kind.replace("_", " ")
    parts = [objective_line(rep.objective), "", rule_line(rep.rule, rep.sesoi, rep.objective, rep.rounds is not None),
             "", f"Design **{d.name}**: {kind} from `{base}`, factors: "
             + "; ".join(f"{f} = `{' '.join(o)}`" for f, o in d.factors.items()) + ".", ""]
    if rep.rounds is not None:
        parts += [path_line(rep), "", "## Rounds\n", rounds_table(rep).to_markdown(index=False), ""]
    if rep.adaptive and rep.rounds is None:
        parts += [adaptive_line(rep), ""]
    parts += ["## Effects\n", effects_table(rep).to_markdown(index=False), "", verdict(rep), "", design_noise(rep), ""]
    if rep.shapley is not None and not rep.shapley.empty:
        parts += ["## Shapley values\n", shapley_table(rep).to_markdown(index=False), "", shapley_line(rep), ""]
    parts += ["## Arms\n", arms_table(rep).to_markdown(index=False), "",
              "Effects are paired by seed" + (": main effects and two-way interactions of a 2^k factorial, the "
                                              "seeds as replicates." if d.kind == "factorial" else "."), "", STATS_NOTE]
    if rep.notes:
        parts += ["", "Notes:", *[f"- {n}" for n in rep.notes]]
    return "\n".join(parts) + "\n"


# --- files

def _html(title: str, images: list[Path], sections: list[tuple[str, pd.DataFrame]], text: list[str],
          lead: str = "") -> str:
    """`lead`: the line under the title (the objective)."""
    imgs = "".join(f"<img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>" for p in images)
    body = "".join(f"<h2>{h}</h2>{t.to_html(index=False)}" for h, t in sections if not t.empty)
    paras = "".join(f"<p>{html.escape(t)}</p>" for t in text)  # factor names are the user's: text, not markup
    title, lead = html.escape(title), html.escape(lead)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + title + "</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}img{max-width:100%}"
            f"</style></head><body><h1>{title}</h1>{f'<p><b>{lead}</b></p>' if lead else ''}{imgs}{body}{paras}"
            "</body></html>")


def write(rep: Report, out: Path, title: str = "ablate report") -> dict[str, Path]:
    """All outputs into `out`; returns their paths."""
    from ablate import plots
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("summary", "summary.csv"), ("deltas", "deltas.csv"),
                                    ("runs", "runs.csv"), ("md", "report.md"), ("html", "report.html"),
                                    ("png", "report.png"), ("tex", "report.tex"))}
    rep.summary.to_csv(paths["summary"], index=False)
    rep.deltas.to_csv(paths["deltas"], index=False)
    rep.runs.to_csv(paths["runs"], index=False)
    if not rep.variance.empty:
        paths["variance"] = out / "variance.csv"
        rep.variance.to_csv(paths["variance"], index=False)
    paths["md"].write_text(f"# {title}\n\n" + markdown(rep))
    plots.configs(rep.summary, paths["png"], rep.objective)
    paths["html"].write_text(_html(title, [paths["png"]], [("Summary", table(rep)), ("Deltas", delta_table(rep))],
                                   [rule_line(rep.rule, rep.sesoi, rep.objective), grid_noise(rep), STATS_NOTE,
                                    *rep.notes], objective_line(rep.objective)))
    d = rep.deltas
    paths["tex"].write_text(latex.tables(
        rep.summary, d, rep.objective, rep.rule, digits(rep.objective, rep.summary[f"{rep.objective.column}_std"]),
        "config", [_claim(r, rep.objective.column) for _, r in d.iterrows()],
        [f"{r['to']} vs {r['from']}" for _, r in d.iterrows()] if len(d) else None, rep.sesoi))
    return paths


def write_design(rep: effects.DesignReport, runs: pd.DataFrame, out: Path, title: str) -> dict[str, Path]:
    from ablate import plots
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("arms", "arms.csv"), ("effects", "effects.csv"), ("runs", "runs.csv"),
                                    ("md", "report.md"), ("html", "report.html"), ("png", "report.png"),
                                    ("tex", "report.tex"))}
    rep.arms.to_csv(paths["arms"], index=False)
    rep.effects.to_csv(paths["effects"], index=False)
    if rep.rounds is not None:
        paths["rounds"] = out / "rounds.csv"
        rep.rounds.to_csv(paths["rounds"], index=False)
    if rep.shapley is not None and not rep.shapley.empty:
        paths["shapley"] = out / "shapley.csv"
        rep.shapley.to_csv(paths["shapley"], index=False)
    runs.to_csv(paths["runs"], index=False)
    paths["md"].write_text(f"# {title}\n\n" + design_markdown(rep))
    plots.forest(rep, paths["png"])
    images = [paths["png"]]
    if rep.design.kind == "factorial":
        paths["interactions"] = out / "interactions.png"
        plots.interactions(rep, paths["interactions"])
        images.append(paths["interactions"])
    shap = rep.shapley is not None and not rep.shapley.empty
    text = [rule_line(rep.rule, rep.sesoi, rep.objective, rep.rounds is not None), verdict(rep), design_noise(rep),
            *([shapley_line(rep)] if shap else []), *([path_line(rep)] if rep.rounds is not None else []),
            *([adaptive_line(rep)] if rep.adaptive and rep.rounds is None else []), STATS_NOTE, *rep.notes]
    sections = [("Effects", effects_table(rep)), ("Shapley values", shapley_table(rep)), ("Rounds", rounds_table(rep)),
                ("Arms", arms_table(rep))]
    paths["html"].write_text(_html(title, images, sections, text, objective_line(rep.objective)))
    o, e = rep.objective, rep.effects
    paths["tex"].write_text(latex.tables(
        rep.arms.rename(columns={"finished": "n"}), e, o, rep.rule, digits(o, rep.arms[f"{o.column}_std"]), "arm",
        [_claim(r, o.column) for _, r in e.iterrows()], [_effect_name(rep, r) for _, r in e.iterrows()], rep.sesoi,
        rep.shapley, re.sub(r"[^A-Za-z0-9]+", "-", rep.design.name)))
    return paths


# ----------------------------------------------------------------------------- designs from MLflow

def design_of(client: MlflowClient, parent_id: str) -> dict | None:
    """The design.json a design sweep's parent run keeps, or None for a grid sweep."""
    import json
    import tempfile
    if tracking.DESIGN not in client.get_run(parent_id).data.tags:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(parent_id, tracking.DESIGN_FILE, tmp)).read_text())


def design_runs(client: MlflowClient, experiment_id: str, spec: dict, where: str = "") -> pd.DataFrame:
    """Every run of the design's configs, whatever its status and whichever sweep ran it;
    `where`: an MLflow filter string that narrows them (--filter)."""
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        df = mlflow.search_runs([experiment_id], filter_string=where, max_results=50_000)
    except mlflow.exceptions.MlflowException as exc:
        raise ReportError(f"--filter {where!r}: {' '.join(str(exc).split())[:200]}") from None
    col = f"tags.{tracking.FINGERPRINT}"
    if df.empty or col not in df:
        raise ReportError(f"No runs of this design match --filter {where!r}." if where else
                          "No runs of this design in the store yet.")
    return df[df[col].isin(list(spec["fingerprints"]))].reset_index(drop=True)


def _parent(client: MlflowClient, experiment_id: str, sweep_id: str | None, design: str | None):
    query = f"tags.`{tracking.DESIGN}` = '{design}'" if design else f"tags.`{tracking.SWEEP_ID}` = '{sweep_id}'"
    query += " and tags.`ablate.jobs` != ''"  # the sweep's parent run, not its jobs
    found = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=50)
    # a design's newest sweep that finished, over a newer one that failed (a typo's)
    return next((r for r in found if r.info.status == "FINISHED"), found[0] if found else None)


def with_test_samples(runs: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """Runs from before `test_samples` was logged, given the test set's size by hand."""
    if n is None:
        return runs
    runs = runs.copy()
    runs["metrics.test_samples"] = runs.get("metrics.test_samples", pd.Series(math.nan, index=runs.index)).fillna(n)
    return runs


def report_design(client: MlflowClient, parent, out: Path, title: str, spec: dict | None = None,
                  sesoi: float | None = None, test_samples: int | None = None, where: str = "",
                  judge: tuple[str | None, str | None, str | None] = (None, None, None),
                  ) -> tuple[effects.DesignReport, dict]:
    """`judge`: (--metric, --goal, --select) to judge the runs on another logged metric."""
    spec = spec or design_of(client, parent.info.run_id)
    runs = with_test_samples(design_runs(client, parent.info.experiment_id, spec, where), test_samples)
    if spec.get("swept") is None:  # a design.json from before it recorded the swept keys
        spec = {**spec, "swept": tracking.swept_keys(parent)}
    base = effects.objective_of(spec, runs)
    rep = effects.analyse(runs, spec, objective=rejudged(base, runs, *judge), sesoi=sesoi)
    return rep, write_design(rep, runs, out, title)


def for_sweep(client: MlflowClient, parent_id: str, cfg, fingerprints: list[str], out: Path,
              design_spec: dict | None = None) -> Path:
    """The report at the end of a multirun, also logged to the sweep's parent run."""
    parent = client.get_run(parent_id)
    exp = client.get_experiment(parent.info.experiment_id)
    title = f"ablate report: {cfg.tracking.experiment}"
    if tracking.DESIGN in parent.data.tags:
        rep, paths = report_design(client, parent, out, f"{title}, design {parent.data.tags[tracking.DESIGN]}",
                                   design_spec, cfg.report.get("sesoi"))
        print(objective_line(rep.objective))
        print(rule_line(rep.rule, rep.sesoi, rep.objective))
        print(effects_table(rep).to_string(index=False))
        print(verdict(rep))
        print(design_noise(rep))
    else:
        runs, notes = load_runs(client.tracking_uri, exp.name, fingerprints=fingerprints)
        rep = build(runs, notes, sesoi=cfg.report.get("sesoi"))
        paths = write(rep, out, title=title)
        print(objective_line(rep.objective))
        print(rule_line(rep.rule, rep.sesoi, rep.objective))
        print(table(rep).to_string(index=False))
        print(grid_noise(rep))
    client.log_artifacts(parent_id, str(out), "report")
    log.info(f"Report: {paths['md']} (also in the parent run's artifacts)")
    return paths["md"]


def rejudged(base: Objective, runs: pd.DataFrame, metric: str | None, goal: str | None,
             select: str | None) -> Objective:
    """The runs' objective, or another metric they logged (--metric, --goal, --select):
    judging on it retrains nothing and changes no run's identity. A metric other than
    the objective's needs its direction: ablate never guesses one."""
    if metric is None and goal is None and select is None:
        return base
    metric = metric or base.metric
    if metric == base.metric:
        if goal is not None and goal != base.goal:
            raise ReportError(f"--goal {goal}: the runs' objective {metric} is better when "
                              f"{'higher' if base.goal == 'max' else 'lower'}; drop --goal.")
        o = replace(base, select=select or base.select)
    else:
        if goal is None:
            raise ReportError(f"--metric {metric} needs --goal max or min: a metric always carries its direction.")
        o = replace(base, metric=metric, goal=goal, select=select or base.select, bounds=(None, None), label=metric,
                    unit="")
    if f"metrics.{o.column}" not in runs or runs[f"metrics.{o.column}"].isna().all():
        logged = sorted(c[len("metrics."):] for c in runs.columns
                        if c.startswith("metrics.final_") and runs[c].notna().any())
        raise ReportError(f"--metric {metric}: no run logged {o.column} (they logged {', '.join(logged) or 'none'}).")
    if f"metrics.{o.other}" not in runs:  # a user loop keeps best_ only for its own objective: shown as missing
        runs[f"metrics.{o.other}"] = math.nan
    return o


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=None, help="default: sqlite:///./mlflow.db")
    ap.add_argument("--experiment", default="ablate")
    ap.add_argument("--sweep-id", default=None, help="only runs of this sweep (tag ablate.sweep_id); "
                                                     "a design sweep gets the design's report")
    ap.add_argument("--design", default=None, help="the newest sweep of this design, e.g. step7_loo")
    ap.add_argument("--filter", default="", help="an MLflow filter string, e.g. \"params.step != '4'\"")
    ap.add_argument("--order", default=None, help="param that orders the study (default: step, if it varies)")
    ap.add_argument("--baseline", default=None, help="compare every configuration with this one, e.g. norm=none")
    ap.add_argument("--sesoi", default=None, type=float,
                    help="smallest effect of interest, in the objective's units: effects whose adjusted interval "
                         "lies inside ±sesoi are called equivalent (default: the study's report.sesoi)")
    ap.add_argument("--test-samples", default=None, type=int,
                    help="the test set's size, for runs that did not log test_samples (the binomial floor)")
    ap.add_argument("--metric", default=None,
                    help="judge the runs on another metric they logged (e.g. r2 beside the objective rmse); "
                         "nothing is retrained")
    ap.add_argument("--goal", default=None, choices=["max", "min"],
                    help="the direction of --metric: required for a metric other than the objective's")
    ap.add_argument("--select", default=None, choices=["final", "best"], help="the epoch of --metric's value")
    ap.add_argument("--out", default="reports/latest", type=Path)
    args = ap.parse_args(argv)
    judge = (args.metric, args.goal, args.select)
    try:
        stats.check_sesoi(args.sesoi, "--sesoi")
    except AblateError as exc:
        print(f"ablate.report: {exc}", file=sys.stderr)
        return 2
    if args.test_samples is not None and args.test_samples < 1:
        print(f"ablate.report: --test-samples {args.test_samples} is invalid: give the test set's size, e.g. "
              f"--test-samples 10000.", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pd.set_option("display.width", 250)
    uri = tracking.resolve_uri(args.tracking_uri)
    title = f"ablate report: {args.experiment}"
    try:
        tracking.require_store(uri)
        if args.design or args.sweep_id:
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name(args.experiment)
            parent = exp and _parent(client, exp.experiment_id, args.sweep_id, args.design)
            if args.design and parent is None:
                raise ReportError(f"No sweep of design {args.design!r} in experiment {args.experiment!r} ({uri}).")
            if parent is not None and tracking.DESIGN in parent.data.tags:
                rep, paths = report_design(client, parent, args.out,
                                           f"{title}, design {parent.data.tags[tracking.DESIGN]}", None, args.sesoi,
                                           args.test_samples, args.filter, judge)
                _say([objective_line(rep.objective), rule_line(rep.rule, rep.sesoi, rep.objective), effects_table(rep),
                      verdict(rep)], rep.notes, paths)
                return 0
        runs, notes = load_runs(uri, args.experiment, args.sweep_id, args.filter)
        rep = build(with_test_samples(runs, args.test_samples), notes, order=args.order, baseline=args.baseline,
                    objective=rejudged(Objective.from_runs(runs), runs, *judge), sesoi=args.sesoi)
    except (ReportError, AblateError) as exc:  # a missing store; runs scored by different objectives
        print(f"ablate.report: {exc}", file=sys.stderr)
        return 2
    paths = write(rep, args.out, title=title)
    _say([objective_line(rep.objective), rule_line(rep.rule, rep.sesoi, rep.objective), table(rep), delta_table(rep),
          grid_noise(rep)], rep.notes, paths)
    return 0


def _say(parts: list, notes: list[str], paths: dict) -> None:
    """The report on the terminal: its tables and lines, its notes, where the files went."""
    for part in parts:
        if isinstance(part, pd.DataFrame):
            if not part.empty:
                print(part.to_string(index=False), end="\n\n")
        else:
            print(part, end="\n\n")
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    sys.exit(main())
