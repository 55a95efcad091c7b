"""Report: what each change bought, across seeds, with the noise shown.

`python -m ablate.report` reads runs from MLflow into a DataFrame, pools seeds
per configuration, and compares each configuration with the previous one and
the first (an ordered study such as step=1..7) or with a baseline. Computing
returns DataFrames; rendering (terminal, CSV, Markdown, HTML, PNG) is separate.
"""
from __future__ import annotations

import argparse
import base64
import logging
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from scipy import stats

from ablate import tracking
from ablate.config import is_non_result

log = logging.getLogger(__name__)
METRICS = ("best_test_acc", "final_test_acc")
# Params that never define a configuration: the seed is what we pool over.
POOLED = {"seed", "param_count"}


class ReportError(RuntimeError):
    """Nothing at all can be reported; the message says why."""


@dataclass
class Report:
    runs: pd.DataFrame              # finished runs used, one row per run
    summary: pd.DataFrame           # one row per configuration
    deltas: pd.DataFrame            # one row per comparison
    keys: list[str]                 # the params that vary between configurations
    notes: list[str] = field(default_factory=list)  # problems found, said once each


# ----------------------------------------------------------------------------- loading

def _ignored(param: str) -> bool:
    return param in POOLED or is_non_result(param)


def load_runs(uri: str, experiment: str, sweep_id: str | None = None, run_filter: str = "",
              fingerprints: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Job runs (not sweep parents) as a DataFrame, and notes on runs left out."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ReportError(f"No experiment {experiment!r} in {uri}. Experiments there: {names}. "
                          f"Pick one with --experiment.")
    filters = [f for f in (run_filter,) if f]
    if sweep_id:
        filters.append(f"tags.`{tracking.SWEEP_ID}` = '{sweep_id}'")
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs([exp.experiment_id], " and ".join(filters), max_results=50_000)
    if df.empty:
        where = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment!r}"
        raise ReportError(f"No runs in {where} ({uri}). Check --sweep-id / --filter.")
    df = df[df.get("params.seed").notna()] if "params.seed" in df else df.iloc[:0]  # drop sweep parents
    if fingerprints is not None:
        df = df[df[f"tags.{tracking.FINGERPRINT}"].isin(fingerprints)]
    notes = []
    unfinished = df[df["status"] != "FINISHED"]
    for _, r in unfinished.iterrows():
        notes.append(f"left out {r['status']} run {r['run_id']} ({r.get('tags.mlflow.runName', '')})"
                     + (f": {r[f'tags.{tracking.ERROR}']}" if isinstance(r.get(f"tags.{tracking.ERROR}"), str) else ""))
    df = df[df["status"] == "FINISHED"]
    for metric in METRICS:
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
        raise ReportError("No finished runs with best_test_acc and final_test_acc to report on. "
                          + " ".join(notes))
    return df.reset_index(drop=True), notes


# ----------------------------------------------------------------------------- computing

def _sort_key(values: pd.Series):
    numeric = pd.to_numeric(values, errors="coerce")
    return numeric if numeric.notna().all() else values


def mean_ci(x: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean; NaN with fewer than two values."""
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:  # identical values: scipy would give NaN for a zero-width interval
        return float(x[0]), float(x[0])
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    return float(lo), float(hi)


def compare(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> dict:
    """b - a for one metric: paired by seed when both have the same seeds, else Welch."""
    sa, sb = a.set_index("seed")[metric], b.set_index("seed")[metric]
    paired = set(sa.index) == set(sb.index) and len(sa) >= 2
    if not paired and (len(sa) < 2 or len(sb) < 2):
        return {"delta": sb.mean() - sa.mean(), "ci_lo": math.nan, "ci_hi": math.nan,
                "p": math.nan, "test": "none (n<2)"}
    with warnings.catch_warnings():
        # Equal differences on every seed (say, all at 100%) have zero variance: scipy
        # warns of precision loss on every sweep; the interval is then just the point.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        if paired:
            sb = sb.loc[sa.index]
            test = stats.ttest_rel(sb.to_numpy(), sa.to_numpy())
        else:
            test = stats.ttest_ind(sb.to_numpy(), sa.to_numpy(), equal_var=False)
        ci = test.confidence_interval(0.95)
    return {"delta": float(sb.mean() - sa.mean()), "ci_lo": float(ci.low), "ci_hi": float(ci.high),
            "p": float(test.pvalue), "test": "paired t" if paired else "Welch t"}


def _is_child(key: str, parents) -> bool:
    return any(key.startswith(p + ".") for p in parents)


def changed(a: dict, b: dict, skip: tuple = ()) -> str:
    """Config keys whose values differ, as 'key: old→new; ...'. When a group's choice
    changed (scheduler: none→onecycle), detail keys that only one option has are
    implied and left out; shared ones (model.dropout) are still shown."""
    keys = sorted(k for k in set(a) | set(b) if not _ignored(k) and k not in skip and a.get(k) != b.get(k))
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
          baseline: str | None = None) -> Report:
    """Summary per configuration and deltas between configurations."""
    notes = list(notes or [])
    params = {c[len("params."):]: c for c in runs.columns if c.startswith("params.")}
    keys = [k for k, c in params.items() if not _ignored(k) and runs[c].nunique(dropna=False) > 1]
    order = order or ("step" if "step" in keys else None)
    if order and order not in params:
        raise ReportError(f"--order {order}: no such param. Params that vary: {', '.join(keys) or 'none'}.")
    df = pd.DataFrame({
        "seed": pd.to_numeric(runs["params.seed"]),
        "param_count": runs["metrics.param_count"],
        "best_epoch": runs["metrics.best_epoch"],
        **{m: runs[f"metrics.{m}"] for m in METRICS},
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
               "param_count": int(g["param_count"].iloc[0])}
        if g["param_count"].nunique() > 1:
            notes.append(f"{label}: runs disagree on param_count ({sorted(g['param_count'].unique())})")
        for m in METRICS:
            lo, hi = mean_ci(g[m].to_numpy())
            row.update({f"{m}_mean": g[m].mean(), f"{m}_std": g[m].std(ddof=1) if len(g) > 1 else math.nan,
                        f"{m}_ci_lo": lo, f"{m}_ci_hi": hi})
        row["best_epoch_mean"] = g["best_epoch"].mean()
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
    for a, b, kind in pairs:
        row = {"from": a, "to": b, "vs": kind,
               "delta_params": int(members[b]["param_count"].iloc[0] - members[a]["param_count"].iloc[0]),
               "changed": changed(first_params[a], first_params[b], skip=(order,))}
        for m in METRICS:
            row.update({f"{m}_{k}": v for k, v in compare(members[a], members[b], m).items()})
        comparisons.append(row)
    return Report(runs, summary, pd.DataFrame(comparisons), keys, notes)


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

def _pm(mean, std, digits=2) -> str:
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _ci(lo, hi) -> str:
    return "n<2" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"


def _delta(d: pd.Series, m: str) -> str:
    if math.isnan(d[f"{m}_ci_lo"]):
        return f"{d[f'{m}_delta']:+.2f} (no CI)"
    return f"{d[f'{m}_delta']:+.2f} [{d[f'{m}_ci_lo']:+.2f}, {d[f'{m}_ci_hi']:+.2f}]"


def table(rep: Report) -> pd.DataFrame:
    """The readable table: the seed's columns plus seeds, CIs and the step's delta."""
    prev = {r["to"]: r for _, r in rep.deltas.iterrows() if r["vs"] in ("previous", "baseline")}
    out = []
    for _, s in rep.summary.iterrows():
        d = prev.get(s["config"])
        out.append({
            "config": s["config"], "n": s["n"], "params": f"{s['param_count']:,}",
            "best test acc % (mean ± std)": _pm(s["best_test_acc_mean"], s["best_test_acc_std"]),
            "95% CI": _ci(s["best_test_acc_ci_lo"], s["best_test_acc_ci_hi"]),
            "final test acc %": _pm(s["final_test_acc_mean"], s["final_test_acc_std"]),
            "best epoch": f"{s['best_epoch_mean']:.1f}",
            "Δ best [95% CI]": "" if d is None else _delta(d, "best_test_acc"),
            "Δ params": "" if d is None else f"{d['delta_params']:+,}",
            "changed": "" if d is None else d["changed"],
        })
    return pd.DataFrame(out)


def delta_table(rep: Report) -> pd.DataFrame:
    if rep.deltas.empty:
        return pd.DataFrame()
    d = rep.deltas
    return pd.DataFrame({
        "from": d["from"], "to": d["to"], "vs": d["vs"],
        "Δ best [95% CI]": [_delta(r, "best_test_acc") for _, r in d.iterrows()],
        "Δ final [95% CI]": [_delta(r, "final_test_acc") for _, r in d.iterrows()],
        "test": d["best_test_acc_test"], "p (best)": d["best_test_acc_p"].map(lambda p: f"{p:.3f}"),
        "Δ params": d["delta_params"].map(lambda x: f"{x:+,}"), "changed": d["changed"],
    })


def markdown(rep: Report) -> str:
    parts = ["## Summary\n", table(rep).to_markdown(index=False), ""]
    if not rep.deltas.empty:
        parts += ["## Deltas\n", delta_table(rep).to_markdown(index=False), ""]
    parts.append("Accuracies in %. Mean ± std over seeds; 95% CIs are t-intervals. Δ is paired by seed "
                 "where both sides have the same seeds, Welch otherwise. \"Best\" picks its epoch on the "
                 "test set, so it is optimistic; \"final\" is the last epoch.")
    if rep.notes:
        parts += ["", "Notes:", *[f"- {n}" for n in rep.notes]]
    return "\n".join(parts) + "\n"


def plot(rep: Report, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = rep.summary
    x = np.arange(len(s))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(s) + 3), 4.5))
    for m, marker, offset in (("best_test_acc", "o", -0.08), ("final_test_acc", "s", 0.08)):
        mean = s[f"{m}_mean"].to_numpy()
        err = np.vstack([mean - s[f"{m}_ci_lo"].to_numpy(), s[f"{m}_ci_hi"].to_numpy() - mean])
        ax.errorbar(x + offset, mean, yerr=np.nan_to_num(err), fmt=marker, capsize=4,
                    label=f"{m.replace('_', ' ')} (mean, 95% CI)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(x, s["config"], rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    twin = ax.twinx()
    twin.bar(x, s["param_count"], alpha=0.15, color="gray", label="parameters")
    twin.set_ylabel("parameters")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    lines, labels = ax.get_legend_handles_labels()
    bars, bar_labels = twin.get_legend_handles_labels()
    ax.legend(lines + bars, labels + bar_labels, loc="lower right", fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write(rep: Report, out: Path, title: str = "ablate report") -> dict[str, Path]:
    """All outputs into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("summary", "summary.csv"), ("deltas", "deltas.csv"),
                                    ("runs", "runs.csv"), ("md", "report.md"), ("html", "report.html"),
                                    ("png", "report.png"))}
    rep.summary.to_csv(paths["summary"], index=False)
    rep.deltas.to_csv(paths["deltas"], index=False)
    rep.runs.to_csv(paths["runs"], index=False)
    paths["md"].write_text(f"# {title}\n\n" + markdown(rep))
    plot(rep, paths["png"])
    img = base64.b64encode(paths["png"].read_bytes()).decode()
    notes = "".join(f"<li>{n}</li>" for n in rep.notes)
    paths["html"].write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}</style></head><body>"
        f"<h1>{title}</h1><img src='data:image/png;base64,{img}'><h2>Summary</h2>"
        f"{table(rep).to_html(index=False)}<h2>Deltas</h2>{delta_table(rep).to_html(index=False)}"
        f"<p>Mean ± std over seeds; 95% CIs; Δ paired by seed where possible, Welch otherwise. "
        f"'Best' picks its epoch on the test set and is optimistic; 'final' is the last epoch.</p>"
        f"<ul>{notes}</ul></body></html>")
    return paths


def for_sweep(client: MlflowClient, parent_id: str, cfg, fingerprints: list[str], out: Path) -> Path:
    """The report at the end of a multirun, also logged to the sweep's parent run."""
    exp = client.get_experiment(client.get_run(parent_id).info.experiment_id)
    runs, notes = load_runs(client.tracking_uri, exp.name, fingerprints=fingerprints)
    rep = build(runs, notes)
    paths = write(rep, out, title=f"ablate report: {cfg.tracking.experiment}")
    client.log_artifacts(parent_id, str(out), "report")
    print(table(rep).to_string(index=False))
    log.info(f"Report: {paths['md']} (also in the parent run's artifacts)")
    return paths["md"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=None, help="default: sqlite:///./mlflow.db")
    ap.add_argument("--experiment", default="ablate")
    ap.add_argument("--sweep-id", default=None, help="only runs of this sweep (tag ablate.sweep_id)")
    ap.add_argument("--filter", default="", help="an MLflow filter string, e.g. \"params.step != '4'\"")
    ap.add_argument("--order", default=None, help="param that orders the study (default: step, if it varies)")
    ap.add_argument("--baseline", default=None, help="compare every configuration with this one, e.g. norm=none")
    ap.add_argument("--out", default="reports/latest", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runs, notes = load_runs(tracking.resolve_uri(args.tracking_uri), args.experiment,
                                args.sweep_id, args.filter)
        rep = build(runs, notes, order=args.order, baseline=args.baseline)
    except ReportError as exc:
        print(f"ablate.report: {exc}", file=sys.stderr)
        return 1
    paths = write(rep, args.out, title=f"ablate report: {args.experiment}")
    print(table(rep).to_string(index=False))
    if not rep.deltas.empty:
        print()
        print(delta_table(rep).to_string(index=False))
    for n in rep.notes:
        print(f"note: {n}")
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
