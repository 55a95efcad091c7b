"""The report's sentences: the objective, the rule behind every claim, the noise floor
and the verdicts, each one line of plain text built from a computed report."""
from __future__ import annotations

import math
import re

import pandas as pd

from ablate import effects, stats
from ablate.metrics import Objective


def markdown_safe(text: str) -> str:
    """Markdown whose user text (an experiment's or a factor's name, an override, an
    error) cannot become markup: no raw HTML (`<script>`, `<img onerror=…>`: a `<`
    before a tag's first character is written `&lt;`) and no inline link (`](`).
    `n<2` and `p <0.001` stay as they are."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text).replace("](", "]\\(")


def objective_line(o: Objective) -> str:
    """Every report's first line: what the runs are scored by, and which sign of a Δ is
    the better one (a Δ is always b − a, whichever way is better)."""
    return f"Objective: {o.describe()}. A {'positive' if o.goal == 'max' else 'negative'} Δ is an improvement."


def column_name(o: Objective, select: str | None = None) -> str:
    """A column's name in a header: `final test accuracy %`, `best test RMSE`."""
    return o.named(select) + (f" {o.unit}" if o.unit else "")


def units_suffix(o: Objective) -> str:
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


def fmt_pm(mean, std, digits=2) -> str:
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def fmt_ci(lo, hi, sign: bool = False, digits: int = 2, spread: bool = True) -> str:
    f = f"+.{digits}f" if sign else f".{digits}f"
    if not spread:
        return "no spread observed"
    return "n<2" if math.isnan(lo) else f"[{lo:{f}}, {hi:{f}}]"


def fmt_delta(d: pd.Series, m: str, digits: int = 2) -> str:
    f = f"+.{digits}f"
    if not d.get(f"{m}_spread", True):
        return f"{d[f'{m}_delta']:{f}} (no spread observed)"
    if math.isnan(d[f"{m}_ci_lo"]):
        return f"{d[f'{m}_delta']:{f}} (no CI)"
    ends = [("0" if d.get(f"{m}_clear", False) and v == 0 else f"{v:{f}}")  # a bound the verdict set at 0
            for v in (d[f"{m}_ci_lo"], d[f"{m}_ci_hi"])]
    return f"{d[f'{m}_delta']:{f}} [{ends[0]}, {ends[1]}]"


def fmt_p(p: float) -> str:
    return "" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def claim(r: pd.Series, m: str) -> str:
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
        line += (f" Equivalent (no effect beyond ±{sesoi:g}{units_suffix(o)}, the smallest effect of interest): its "
                 f"{100 * (1 - 2 * rule.equivalence):.4g}% interval lies inside ±{sesoi:g} (two one-sided tests, "
                 f"Bonferroni over the comparisons{', sequential over the looks' if rule.looks > 1 else ''}).")
    return line


def stats_note(o: Objective, random_numbers: str | None = None) -> str:
    """The closing paragraph: how every number was made, how the runs drew their random
    numbers (`random_numbers`, effects.random_numbers), and, once, which split made the
    choices (the test set's choices make the numbers optimistic)."""
    chosen = ("Every choice (the best epoch, a plateau scheduler's steps, early stopping, an adaptive study's "
              "stops, racing and a greedy path's steps) was made on the validation split (data.val); every number "
              "shown is the test set's." if o.chosen_on == "val" else
              "No validation split: every choice (the best epoch, a plateau scheduler's steps, an adaptive study's "
              "stops, racing and a greedy path's steps) was made on the test set, so the numbers that depend on "
              "them are optimistic; set data.val to choose on a validation split (docs/validation.md).")
    return ("Mean ± std over seeds; an arm's interval is its 95% t-interval, cut to the metric's range where it "
            "has one. Δ is paired over the seeds both sides have (Welch's test where fewer than two are shared); "
            "its interval is the decision rule's, so it agrees with the verdict: a Δ that is not clear has an "
            "interval that holds 0, and a clear Δ's interval ends at 0 on the side its sign rules out. Where every "
            "seed gives the same Δ there is no spread to build a t-interval on: the p is an exact sign-flip test "
            "instead, and no interval is shown; beside every t-test's p stands the exact sign-flip p, a check that "
            "assumes no normality (at least 2^(1-n): 0.25 at 3 seeds). An arm's bootstrap interval is shown only "
            f"from {stats.BOOTSTRAP_MIN} seeds up: below that it covers far less than it says. \"detectable\" "
            "estimates the smallest true Δ the rule would call clear with power 0.8 at its strictest step, from the "
            "spread of these seeds: its power averages 0.6-0.7 at 3-5 seeds, not 0.8, since that spread is itself "
            "a guess (plan with --plan, which says how uncertain it is). "
            f"\"Best\" is the test value at the best epoch: {o.chosen_words}; \"final\" is the last epoch. Verdicts "
            f"are drawn on the objective's selection only; the other is shown for reference. {chosen}"
            + (f" {random_numbers}" if random_numbers else ""))


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
        fl = floor.median()
        # issue 30 item 2: the floor is one run's sampling noise over test sets of this size; it
        # does not bound a paired Δ, and seeds' spread below it is expected, so it signals nothing
        line += (f"; the test set's own binomial noise √(p(1−p)/N) is {fl:{f}}{units} (median): how much one run's "
                 f"score would move on a fresh test set of this size. It does not limit a paired Δ, which is "
                 f"measured on the same test examples in both arms (how finely depends on how much their errors "
                 f"overlap, not measured here), and a seed-to-seed std below it is what converged training gives "
                 f"(Jordan 2024), not a sign of anything")
    mdd = mdd.dropna()
    if len(mdd):
        at = f"at the rule's strictest α, {rule.each:.2g} per look" if rule is not None else "α 0.05"
        line += (f"; with {n} seeds the rule would call a true Δ of about {mdd.median():{f}}{units} clear with "
                 f"power 0.8 (an estimate from the seeds' spread, median over comparisons, {at})")
    return line + "."


def _words(o: Objective, metric: str) -> str:
    return o.named() if metric == o.column else metric.replace("_", " ")


def noise(rep, metric: str | None = None) -> str:
    """The noise-floor line of a grid's report (grid.Report) or a design's
    (effects.DesignReport), on the objective's column unless `metric` is given."""
    o = rep.objective
    metric = metric or o.column
    if isinstance(rep, effects.DesignReport):
        arms, comparisons, n = rep.arms, rep.effects, rep.arms["finished"]
    else:
        arms, comparisons, n = rep.summary, rep.deltas, rep.summary["n"]
    mdd = comparisons.get(f"{metric}_mdd", pd.Series(dtype=float))
    return noise_floor(arms[f"{metric}_std"], int(n.median()), mdd, _words(o, metric), units_suffix(o),
                       digits(o, arms[f"{metric}_std"]), arms.get("floor") if metric == o.column else None, rep.rule)


def effect_name(rep: effects.DesignReport, r: pd.Series) -> str:
    """An effect's name, with its stratum where the table has more than one."""
    where = ", ".join(f"{k}={r[k]}" for k in rep.strata)
    return f"{r['effect']} ({where})" if where else str(r["effect"])


def detectable(v: float, o: Objective, dg: int) -> str:
    """The detectable-difference estimate, or `> range` where it exceeds any difference
    the metric allows (2 seeds at a strict level)."""
    if math.isnan(v):
        return ""
    top = o.delta_bounds[1]
    return f"> {top:g}" if top is not None and v > top else f"{v:.{dg}f}"


def shapley_line(rep: effects.DesignReport) -> str:
    s, o = rep.shapley, rep.objective
    dg = digits(o, rep.arms[f"{o.column}_std"])
    total, parts = s.attrs["total"], s["shapley"].sum()
    gap = (s["leave_one_out"] - s["shapley"]).abs().max()
    return (f"Shapley values (exact, from all {2 ** len(s)} cells, per seed): each factor's gain averaged over every "
            f"order of switching the factors on, so they do not depend on an order and add up to all on − all off: "
            f"{parts:+.{dg}f} = {total:+.{dg}f}{units_suffix(o)}. Leave-one-out measures a factor with all others on, "
            f"add-one-in with all others off, a path in one order; they differ from the Shapley value by the "
            f"interactions (here leave-one-out by up to {gap:.{dg}f}{units_suffix(o)}). Their 95% intervals describe; "
            f"no claim is drawn from them (they are outside the rule's family).")


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
        h=f"{p['halfwidth']}{units_suffix(o)} (in {p.get('metric') or o.column}'s own units)")
    line = (f"Seeds chosen by the study: {p['min']} for every arm, then one more a round for the arms of each "
            f"comparison until its interval at the rule's level {stop}, up to {p['max']} seeds. The rule above "
            f"counts all {rep.rule.looks} looks")
    if "decisions" not in rep.adaptive:
        line += ": the study is unfinished, and the effects use the seeds run so far."
    elif rep.adaptive.get("rule") is None:
        line += (". This study was decided by an older rule (Bonferroni over looks alone), so a comparison it "
                 "called decisive need not be clear here: the verdicts here are today's rule's.")
    else:
        line += (", so a comparison that stopped as decisive is clear here: later looks only add evidence, and "
                 "Holm's verdicts never undo one.")
    early = rep.effects[rep.effects.get("stopped", pd.Series("", index=rep.effects.index)).astype(str)
                        .str.startswith("decisive")] if "stopped" in rep.effects else rep.effects.iloc[:0]
    if len(early):
        line += (" The means of comparisons that stopped early because they looked large are biased away from 0 "
                 "(the winner's curse): confirm a size that matters with fresh seeds.")
    return line


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
        return ", ".join(f"{effect_name(rep, r)} ({r[f'{h}_delta']:+.{dg}f}{units_suffix(o)}"
                         + (f", {claim(r, h)})" if say else ")") for _, r in rows.iterrows()) or "none"
    line = f"Clear ({o.named()}, {o.direction}; by the rule above, over {len(e)} effects): {fmt(clear, True)}."
    if rep.sesoi is not None:
        line += f" Equivalent (no effect beyond ±{rep.sesoi:g}{units_suffix(o)}): {fmt(equiv, False)}."
    line += f" Neither: {fmt(rest, False)}."
    if len(known) < len(e):
        missing = [effect_name(rep, r) for _, r in e[e[f"{h}_delta"].isna()].iterrows()]
        line += f" Not computed (failed or missing arms): {', '.join(missing)}."
    return line
