"""The report's tables: computed frames turned into the readable columns of the
terminal, Markdown and HTML (numbers formatted to the seeds' own precision)."""
from __future__ import annotations

import math

import pandas as pd

from ablate import effects, stats
from ablate.report.grid import Report
from ablate.report.text import (
    adaptive_line,
    claim,
    column_name,
    detectable,
    digits,
    fmt_ci,
    fmt_delta,
    fmt_p,
    fmt_pm,
    noise,
    objective_line,
    path_line,
    rule_line,
    shapley_line,
    stats_note,
    units_suffix,
    verdict,
)


def _md(frame: pd.DataFrame) -> str:
    """A table as Markdown, a `|` in a cell (a factor's override, an error) kept inside it."""
    return frame.map(lambda v: v.replace("|", "\\|").replace("\n", " ") if isinstance(v, str) else v).to_markdown(
        index=False)


def _boot(frame: pd.DataFrame, m: str, sign: bool, dg: int) -> dict:
    """The bootstrap column, only where some row has enough seeds for it to be honest."""
    if frame.get(f"{m}_boot_lo", pd.Series(dtype=float)).notna().any():
        return {"bootstrap": [fmt_ci(r[f"{m}_boot_lo"], r[f"{m}_boot_hi"], sign, dg) for _, r in frame.iterrows()]}
    return {}


def _any_outlying(frame: pd.DataFrame) -> bool:
    """Whether any arm or configuration names an outlying seed: only then the column shows."""
    return bool(frame.get("outlying", pd.Series("", index=frame.index)).astype(bool).any())


def _eq(frame: pd.DataFrame, m: str, rule: stats.Rule, sesoi: float | None, dg: int) -> dict:
    """With a sesoi, the interval the equivalence test decides with: (1 - 2 alpha_1), Rule.equivalence."""
    if sesoi is None:
        return {}
    return {f"{100 * (1 - 2 * rule.equivalence):.4g}% CI (vs ±{sesoi:g})": [
        fmt_ci(r[f"{m}_eq_lo"], r[f"{m}_eq_hi"], True, dg, r.get(f"{m}_spread", True)) for _, r in frame.iterrows()]}


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
            f"{column_name(o)} (mean ± std)": fmt_pm(s[f"{h}_mean"], s[f"{h}_std"], dg),
            "95% CI (t)": fmt_ci(s[f"{h}_ci_lo"], s[f"{h}_ci_hi"], digits=dg, spread=s[f"{h}_spread"]),
            **({"bootstrap": boot["bootstrap"][i]} if boot else {}),
            column_name(o, o.other_select): fmt_pm(s[f"{b}_mean"], s[f"{b}_std"], dg),
            "best epoch": f"{s['best_epoch_mean']:.1f}",
            **({"outlying seeds": s["outlying"]} if _any_outlying(rep.summary) else {}),
            f"Δ {o.select} [{rep.rule.percent()} CI]": "" if d is None else fmt_delta(d, h, dg),
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
        f"Δ {o.select} [{rep.rule.percent()} CI]": [fmt_delta(r, h, dg) for _, r in d.iterrows()],
        **_eq(d, h, rep.rule, rep.sesoi, dg), **_boot(d, h, True, dg),
        f"Δ {o.other_select} [{rep.rule.percent()} CI]": [fmt_delta(r, b, dg) for _, r in d.iterrows()],
        "test": d[f"{h}_test"], "n": d[f"{h}_n"], f"p ({o.select})": d[f"{h}_p"].map(fmt_p),
        rep.rule.p_label(): d[f"{h}_p_adj"].map(fmt_p),
        "sign-flip p": d.get(f"{h}_sign_flip_p", pd.Series(math.nan, index=d.index)).map(fmt_p),
        "verdict": [claim(r, h) for _, r in d.iterrows()],
        "Δ params": d["delta_params"].map(lambda x: "" if pd.isna(x) else f"{x:+,}"), "changed": d["changed"],
    })


def markdown(rep: Report) -> str:
    parts = [objective_line(rep.objective), "", rule_line(rep.rule, rep.sesoi, rep.objective), "",
             "## Summary\n", table(rep).pipe(_md), ""]
    if not rep.deltas.empty:
        parts += ["## Deltas\n", delta_table(rep).pipe(_md), ""]
    if not rep.variance.empty:
        parts += ["## Seed variance by source\n", variance_table(rep).pipe(_md), "",
                  "Each source's std is among runs that differ in that source alone, the other seeds held fixed.", ""]
    parts += [noise(rep), "", stats_note(rep.objective, rep.random_numbers)]
    if rep.notes:
        parts += ["", "Notes:", *[f"- {n}" for n in rep.notes]]
    return "\n".join(parts) + "\n"


def effects_table(rep: effects.DesignReport) -> pd.DataFrame:
    e, o = rep.effects, rep.objective
    if e.empty:
        return pd.DataFrame()
    h, b = o.column, o.other
    dg = digits(o, rep.arms[f"{h}_std"])
    return pd.DataFrame({
        **{k: e[k] for k in rep.strata},
        "effect": e["effect"], "what": e["what"],
        f"Δ {o.select} [{rep.rule.percent()} CI]": [fmt_delta(r, h, dg) for _, r in e.iterrows()],
        **_eq(e, h, rep.rule, rep.sesoi, dg), **_boot(e, h, True, dg),
        "n": e[f"{h}_n"], "p": e[f"{h}_p"].map(fmt_p), rep.rule.p_label(): e[f"{h}_p_adj"].map(fmt_p),
        "sign-flip p": e[f"{h}_sign_flip_p"].map(fmt_p),
        "verdict": [claim(r, h) for _, r in e.iterrows()],
        "detectable (est.)": e[f"{h}_mdd"].map(lambda v: detectable(v, o, dg)),
        f"Δ {o.other_select} [{rep.rule.percent()} CI]": [fmt_delta(r, b, dg) for _, r in e.iterrows()],
        **({"seeds": e["seeds"], "stopped": e["stopped"]} if "stopped" in e else {}),
        "status": e["status"],
    })


def shapley_table(rep: effects.DesignReport) -> pd.DataFrame:
    s, o = rep.shapley, rep.objective
    if s is None or s.empty:
        return pd.DataFrame()
    dg = digits(o, rep.arms[f"{o.column}_std"])
    f = f"+.{dg}f"
    return pd.DataFrame({
        "factor": s["factor"],
        # not the rule's interval of the effects table beside it: a reader must not take one for the other
        "Shapley value [unadjusted 95% CI: describes, claims nothing]": [
            f"{r['shapley']:{f}} {fmt_ci(r['ci_lo'], r['ci_hi'], True, dg)}" for _, r in s.iterrows()],
        "leave-one-out (all − all but f)": s["leave_one_out"].map(lambda v: f"{v:{f}}"),
        "add-one-in (f alone − none)": s["add_one_in"].map(lambda v: f"{v:{f}}"),
        "path (in the order given)": s["path"].map(lambda v: f"{v:{f}}"),
        "seeds": s["n"],
    })


def rounds_table(rep: effects.DesignReport) -> pd.DataFrame:
    r, o = rep.rounds, rep.objective
    if r is None or r.empty:
        return pd.DataFrame()
    dg = digits(o, rep.arms[f"{o.column}_std"])
    return pd.DataFrame({
        "round": r["round"], "from": r["from"], "candidate": r["factor"],
        "mean Δ (with − from) [95% CI]": [f"{x['gain']:+.{dg}f} {fmt_ci(x['lo'], x['hi'], True, dg)}"
                                          for _, x in r.iterrows()],
        "seeds": r["n"], "raced out at": r["dropped_at"].map(lambda v: "" if pd.isna(v) else f"{int(v)} seeds"),
        "chosen": r["chosen"].map(lambda c: "yes" if c else ""),
    })


def arms_table(rep: effects.DesignReport) -> pd.DataFrame:
    a, o = rep.arms, rep.objective
    h, b = o.column, o.other
    dg = digits(o, a[f"{h}_std"])
    return pd.DataFrame({
        **{k: a[k] for k in rep.strata},
        "arm": a["arm"], "finished": [f"{r['finished']}/{r['runs']}" for _, r in a.iterrows()],
        "params": a["param_count"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        f"{column_name(o)} (mean ± std)": [fmt_pm(r[f"{h}_mean"], r[f"{h}_std"], dg) for _, r in a.iterrows()],
        "95% CI (t)": [fmt_ci(r[f"{h}_ci_lo"], r[f"{h}_ci_hi"], digits=dg, spread=r.get(f"{h}_spread", True))
                       for _, r in a.iterrows()],
        column_name(o, o.other_select): [fmt_pm(r[f"{b}_mean"], r[f"{b}_std"], dg) for _, r in a.iterrows()],
        **({"outlying seeds": a["outlying"]} if _any_outlying(a) else {}),
        "overrides": a["overrides"], "error": a["error"],
    })


def design_markdown(rep: effects.DesignReport) -> str:
    d = rep.design
    base = " ".join(d.baseline) or "the defaults"
    kind = "greedy path" if rep.rounds is not None else d.kind.replace("_", " ")
    parts = [objective_line(rep.objective), "", rule_line(rep.rule, rep.sesoi, rep.objective, rep.rounds is not None),
             "", f"Design **{d.name}**: {kind} from `{base}`, factors: "
             + "; ".join(f"{f} = `{' '.join(o)}`" for f, o in d.factors.items()) + ".", ""]
    if rep.rounds is not None:
        parts += [path_line(rep), "", "## Rounds\n", rounds_table(rep).pipe(_md), ""]
    if rep.adaptive and rep.rounds is None:
        parts += [adaptive_line(rep), ""]
    parts += ["## Effects\n", effects_table(rep).pipe(_md), "", verdict(rep), "", noise(rep), ""]
    if rep.shapley is not None and not rep.shapley.empty:
        parts += ["## Shapley values\n", shapley_table(rep).pipe(_md), "", shapley_line(rep), ""]
    parts += ["## Arms\n", arms_table(rep).pipe(_md), "",
              "Effects are paired by seed" + (": main effects and two-way interactions of a 2^k factorial, the "
                                              "seeds as replicates." if d.kind == "factorial" else "."), "",
              stats_note(rep.objective, rep.random_numbers)]
    if rep.notes:
        parts += ["", "Notes:", *[f"- {n}" for n in rep.notes]]
    return "\n".join(parts) + "\n"


def plan_table(rep, effect: float) -> pd.DataFrame:
    """`--plan EFFECT`: for each comparison, the seeds per arm a fixed design needs so that
    a true effect of `effect` (the objective's units) is clear with power 0.8 under the
    rule over the same family, from the spread of its paired differences so far, with the
    range that spread's 80% interval gives (stats.planned_seeds)."""
    design = isinstance(rep, effects.DesignReport)
    rows = rep.effects if design else rep.deltas
    h, o = rep.objective.column, rep.objective
    rule = stats.Rule(comparisons=rep.rule.comparisons)  # planned as a fixed design: one look
    out = []
    for _, r in rows.iterrows():
        low, mid, high = stats.planned_seeds(effect, r[f"{h}_sd"], int(r[f"{h}_n"]), rule)
        seeds = "" if math.isnan(mid) else (f"{mid:.0f}" if math.isinf(mid) else
                                            f"{mid:.0f} ({low:.0f}–{high:.0f})").replace("inf", ">1000")
        out.append({"comparison": r["effect"] if design else f"{r['to']} vs {r['from']}",
                    "n so far": int(r[f"{h}_n"]),
                    f"sd of Δ ({o.units})" if o.units else "sd of Δ": "" if pd.isna(r[f"{h}_sd"]) else
                    f"{r[f'{h}_sd']:.3g}",
                    f"seeds for ±{effect:g} (80% range)": seeds or "no spread yet: no estimate"})
    return pd.DataFrame(out)


def plan_line(rep, effect: float) -> str:
    return (f"Plan: the seeds per arm with which a true effect of {effect:g}{units_suffix(rep.objective)} is clear "
            f"with power 0.8 under the rule over {rep.rule.comparisons} comparison(s) at its strictest step (a fixed "
            f"design), from each comparison's spread so far; the range is what that spread's 80% interval allows, "
            f"since a spread seen on a few seeds is itself uncertain.")
