"""Paper tables: a report's arms and effects as booktabs LaTeX (pandas'
Styler.to_latex; the document needs `\\usepackage{booktabs,array}`).

    arms     arm, n, mean ± std of the objective (and its other selection)
    effects  effect, Δ [interval of the decision rule], adjusted p, verdict

Numbers are set in math mode ($+0.29 \\pm 0.05$), text is escaped for LaTeX; a
factorial adds its Shapley values."""
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
    lo, hi = (("0" if r.get(f"{m}_clear", False) and v == 0 else _num(v, dg, True))  # a bound the verdict set at 0
              for v in (r[f"{m}_ci_lo"], r[f"{m}_ci_hi"]))
    return f"${d}$ $[{lo}, {hi}]$"


def escape(text: str) -> str:
    """Text for LaTeX: its special characters escaped (a caption holds `%` and a metric
    name's `_`)."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "×": r"$\times$", "−": "-", "Δ": r"$\Delta$"}  # the report's own symbols
    return "".join(special.get(c, c) for c in text)


# the first column (an arm or an effect: a greedy path's arm is every factor so far, joined by +)
# wraps within a third of the line, so a table fits the page (issue 30 item 10: it ran 187 pt
# past it); ragged right needs \usepackage{array}
FIRST = r">{\raggedright\arraybackslash}p{0.32\linewidth}"


def _latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """`caption`, the headers and the cells are LaTeX already: text in them is escape()d."""
    return (df.style.hide(axis="index")
            .to_latex(hrules=True, caption=caption, label=label, position="htbp", position_float="centering",
                      column_format=FIRST + "r" * (len(df.columns) - 1)))


def _name(text: str) -> str:
    """An effect's name: `a x b` (an interaction) as `a $\\times$ b`, the rest escaped; a line
    may break after each + of an arm's factors."""
    return r" $\times$ ".join(escape(part) for part in str(text).split(" x ")).replace("+", r"+\allowbreak{}")


def tables(arms: pd.DataFrame, effects: pd.DataFrame, o: Objective, rule: Rule, dg: int, name: str = "arm",
           verdicts: list[str] | None = None, effect_names: list[str] | None = None, sesoi: float | None = None,
           shapley: pd.DataFrame | None = None, label: str = "ablate") -> str:
    """The tables as one LaTeX text. `arms`: one row per arm (`name` column, `n`, and
    `<column>_mean/_std` for the objective's two selections); `effects`: one row per
    effect as effects.analyse or report.build give them (`verdicts`: the words per row;
    `sesoi`: the bound of "equivalent"); `shapley`: a factorial's Shapley values
    (effects.shapley_table); `label`: the prefix of the tables' \\label, e.g. the design's name."""
    h, b = o.column, o.other
    unit = f" ({o.unit})" if o.unit else ""
    named = o.named()[0].upper() + o.named()[1:]
    arm_table = pd.DataFrame({
        name: arms[name].map(_name), "$n$": arms["n"].map(lambda n: f"${int(n)}$"),
        escape(f"{o.named()}{unit}"): [_pm(r[f"{h}_mean"], r[f"{h}_std"], dg) for _, r in arms.iterrows()],
        escape(f"{o.named(o.other_select)}{unit}"): [_pm(r[f"{b}_mean"], r[f"{b}_std"], dg)
                                                     for _, r in arms.iterrows()],
    })
    out = [_latex(arm_table, escape(f"{named}{unit}: mean ") + "$\\pm$"
                  + escape(f" std over seeds (best: {o.chosen_words})."),
                  f"tab:{label}-arms")]
    if len(effects):
        units = f" ({o.units})" if o.units else ""
        eff = pd.DataFrame({
            "effect": [_name(x) for x in (effect_names if effect_names is not None else effects["effect"])],
            f"$\\Delta${escape(units)} [{escape(rule.percent())} CI]": [_delta(r, h, dg)
                                                                       for _, r in effects.iterrows()],
            "$n$": effects[f"{h}_n"].map(lambda n: f"${int(n)}$"),
            escape(rule.p_label()).replace("p", "$p$", 1): effects[f"{h}_p_adj"].map(_p),
            "verdict": [escape(v) or "--" for v in (verdicts if verdicts is not None else [""] * len(effects))],
        })
        caption = (escape(f"Effects on the {o.named()} ({o.direction}), paired over the seeds both sides have. ")
                   + escape(rule.describe().removeprefix("Decision rule: ")))
        if sesoi is not None:
            caption += escape(f" Equivalent when its {100 * (1 - 2 * rule.equivalence):.4g}% interval lies inside "
                              f"±{sesoi:g}{units}, the smallest effect of interest")
        out.append(_latex(eff, caption.rstrip(".") + ".", f"tab:{label}-effects"))
    if shapley is not None and len(shapley):
        units = f" ({o.units})" if o.units else ""
        shap = pd.DataFrame({
            "factor": shapley["factor"].map(_name),
            "Shapley [unadjusted 95\\% CI]": [f"${_num(r['shapley'], dg, True)}$ "
                                    + ("" if math.isnan(r["ci_lo"]) else
                                       f"$[{_num(r['ci_lo'], dg, True)}, {_num(r['ci_hi'], dg, True)}]$")
                                    for _, r in shapley.iterrows()],
            "leave-one-out": shapley["leave_one_out"].map(lambda v: f"${_num(v, dg, True)}$"),
            "add-one-in": shapley["add_one_in"].map(lambda v: f"${_num(v, dg, True)}$"),
        })
        out.append(_latex(shap, escape(f"Shapley values of the factors on the {o.named()}{units}, exact from the "
                                       f"full factorial, per seed; they add up to all on minus all off."),
                          f"tab:{label}-shapley"))
    return "\n".join(out)
