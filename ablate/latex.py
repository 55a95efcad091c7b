"""Paper tables: a report's arms and effects as booktabs LaTeX (pandas'
Styler.to_latex; the document needs `\\usepackage{booktabs}`).

    arms     arm, n, mean ± std of the objective (and its other selection)
    effects  effect, Δ [interval of the decision rule], adjusted p, verdict

Numbers are set in math mode ($+0.29 \\pm 0.05$), text is escaped for LaTeX."""
from __future__ import annotations

import math

import pandas as pd

from ablate.metrics import Objective
from ablate.stats import Rule


def _num(x: float, dg: int, sign: bool = False) -> str:
    return f"{x:{'+' if sign else ''}.{dg}f}"


def _pm(mean: float, std: float, dg: int) -> str:
    if math.isnan(mean):
        return "--"
    return f"${_num(mean, dg)}$" if math.isnan(std) else f"${_num(mean, dg)} \\pm {_num(std, dg)}$"


def _p(p: float) -> str:
    return "" if math.isnan(p) else ("$<0.001$" if p < 0.001 else f"${p:.3f}$")


def _delta(r: pd.Series, m: str, dg: int) -> str:
    d = f"{_num(r[f'{m}_delta'], dg, True)}"
    if not r.get(f"{m}_spread", True):
        return f"${d}$ (no spread)"
    if math.isnan(r[f"{m}_ci_lo"]):
        return f"${d}$"
    return f"${d}$ $[{_num(r[f'{m}_ci_lo'], dg, True)}, {_num(r[f'{m}_ci_hi'], dg, True)}]$"


def escape(text: str) -> str:
    """Text for LaTeX: its special characters escaped (a caption holds `%` and a metric
    name's `_`)."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(c, c) for c in text)


def _latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """`caption`: LaTeX already (escape() its text)."""
    return (df.style.hide(axis="index").format(escape="latex-math").format_index(escape="latex-math", axis=1)
            .to_latex(hrules=True, caption=caption, label=label, position="htbp", position_float="centering",
                      column_format="l" + "r" * (len(df.columns) - 1)))


def tables(arms: pd.DataFrame, effects: pd.DataFrame, o: Objective, rule: Rule, dg: int, name: str = "arm",
           verdicts: list[str] | None = None, effect_names: list[str] | None = None) -> str:
    """Both tables as one LaTeX text. `arms`: one row per arm (`name` column, `n`, and
    `<column>_mean/_std` for the objective's two selections); `effects`: one row per
    effect as effects.analyse or report.build give them (`verdicts`: the words per row)."""
    h, b = o.column, o.other
    unit = f" ({o.unit})" if o.unit else ""
    arm_table = pd.DataFrame({
        name: arms[name].astype(str), "$n$": arms["n"].map(lambda n: f"${int(n)}$"),
        f"{o.named()}{unit}": [_pm(r[f"{h}_mean"], r[f"{h}_std"], dg) for _, r in arms.iterrows()],
        f"{o.named(_other(o))}{unit}": [_pm(r[f"{b}_mean"], r[f"{b}_std"], dg) for _, r in arms.iterrows()],
    })
    out = [_latex(arm_table, escape(f"{o.named().capitalize()}{unit}: mean ") + "$\\pm$ std over seeds.",
                  "tab:ablate-arms")]
    if len(effects):
        units = f" ({o.units})" if o.units else ""
        level = rule.percent()
        eff = pd.DataFrame({
            "effect": effect_names if effect_names is not None else effects["effect"].astype(str),
            f"$\\Delta${units} [{level} CI]": [_delta(r, h, dg) for _, r in effects.iterrows()],
            "$n$": effects[f"{h}_n"].map(lambda n: f"${int(n)}$"),
            f"$p \\times {rule.comparisons * rule.looks}$": effects[f"{h}_p_adj"].map(_p),
            "verdict": verdicts if verdicts is not None else [""] * len(effects),
        })
        family = f"{rule.comparisons} comparison{'s' if rule.comparisons != 1 else ''}"
        out.append(_latex(eff, escape(f"Effects on the {o.named()} ({o.direction}), paired over the seeds both "
                                      f"sides have. Intervals and ") + "$p$" + escape(f" are Bonferroni-adjusted over "
                                                                                       f"{family}")
                          + (f" $\\times$ {rule.looks} looks" if rule.looks > 1 else "")
                          + "; an effect is clear when its interval excludes 0.", "tab:ablate-effects"))
    return "\n".join(out)


def _other(o: Objective) -> str:
    return "best" if o.select == "final" else "final"
