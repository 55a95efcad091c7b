"""Figures for the reports, drawn with matplotlib off screen (Agg): the objective per
configuration, a forest plot of a design's effects, a factorial's interactions. Axes
are labelled with the objective's metric and unit (ablate.metrics.Objective)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.metrics import Objective

# matplotlib builds its font cache on first use and says so at INFO: not sweep output
logging.getLogger("matplotlib").setLevel(logging.WARNING)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _paren(unit: str) -> str:
    return f" ({unit})" if unit else ""


def _errors(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.vstack([mean - lo, hi - mean]))


def configs(summary: pd.DataFrame, path: Path, objective: Objective | None = None) -> None:
    """The objective's mean (and its other selection's) per configuration with 95%
    t-intervals, and each configuration's parameter count as grey bars."""
    plt = _pyplot()
    o = objective or Objective()
    s = summary
    x = np.arange(len(s))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(s) + 3), 4.5))
    for m, marker, offset in ((o.column, "o", -0.08), (o.other, "s", 0.08)):
        mean = s[f"{m}_mean"].to_numpy()
        ax.errorbar(x + offset, mean, yerr=_errors(mean, s[f"{m}_ci_lo"].to_numpy(), s[f"{m}_ci_hi"].to_numpy()),
                    fmt=marker, capsize=4, label=f"{m.replace('_', ' ')} (mean, 95% CI)")
    ax.set_ylabel(f"test {o.label}{_paren(o.unit)}, {o.direction}")
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


def forest(rep, path: Path, metric: str | None = None) -> None:
    """Each effect with the interval of the decision rule (bar; ablate.stats.Rule), a
    zero line, the clear effects in colour, and ±sesoi shaded when one is set. Effects
    with no spread across seeds are drawn as a point with a hollow marker."""
    plt = _pyplot()
    o = rep.objective
    metric = metric or o.column
    e = rep.effects
    labels = [" | ".join([*(str(r[k]) for k in rep.strata), r["effect"]]) for _, r in e.iterrows()]
    y = np.arange(len(e))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(e) + 1.6))
    if len(e):
        mean = e[f"{metric}_delta"].to_numpy(dtype=float)
        clear = e[f"{metric}_clear"].to_numpy(dtype=bool)
        equivalent = e.get(f"{metric}_equivalent", pd.Series(False, index=e.index)).to_numpy(dtype=bool)
        colours = np.where(clear, "tab:blue", np.where(equivalent, "tab:green", "tab:gray"))
        level = rep.rule.percent()
        for i in range(len(e)):
            lo, hi = e[f"{metric}_ci_lo"].to_numpy()[i:i + 1], e[f"{metric}_ci_hi"].to_numpy()[i:i + 1]
            ax.errorbar(mean[i], y[i], xerr=None if np.isnan(lo[0]) else _errors(mean[i:i + 1], lo, hi),
                        fmt="o", mfc=None if not np.isnan(lo[0]) else "white",
                        color=colours[i], capsize=4, label=f"{level} interval (the rule's)" if i == 0 else None)
    if rep.sesoi is not None:
        ax.axvspan(-rep.sesoi, rep.sesoi, color="tab:green", alpha=0.1, label=f"±sesoi ({rep.sesoi:g})")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels)
    kind = {"leave_one_out": "contribution (baseline − without)", "add_one_in": "effect of adding (with − baseline)",
            "path": "step (this − previous)", "factorial": "effect",
            "grid": "difference (this − first)"}[rep.design.kind]
    better = "right" if o.goal == "max" else "left"
    ax.set_xlabel(f"{kind}, {metric.replace('_', ' ')}{_paren(o.units)}; better to the {better}")
    ax.set_title(f"{rep.design.name}: blue = clear by the rule (Holm over {rep.rule.comparisons} effects"
                 + (f", {rep.rule.looks} looks)" if rep.rule.looks > 1 else ")")
                 + ("; green = equivalent" if rep.sesoi is not None else ""), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def interactions(rep, path: Path, metric: str | None = None) -> None:
    """One panel per pair of factors: the objective's mean with the first off and on, one
    line for each level of the second. Parallel lines: no interaction."""
    plt = _pyplot()
    o = rep.objective
    metric = metric or o.column
    factors = list(rep.design.factors)
    pairs = [(a, b) for i, a in enumerate(factors) for b in factors[i + 1:]]
    arms = rep.arms
    # one y-axis for every panel: a small interaction must look small
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(4 * max(1, len(pairs)), 3.6), squeeze=False,
                             sharey=True)
    for ax, (f, g) in zip(axes[0], pairs, strict=False):
        for level, style in (("off", "--"), ("on", "-")):
            means = [arms[(arms[f"level.{f}"] == fl) & (arms[f"level.{g}"] == level)][f"{metric}_mean"].mean()
                     for fl in ("off", "on")]
            ax.plot([0, 1], means, style, marker="o", label=f"{g} {level}")
        ax.set_xticks([0, 1], [f"{f} off", f"{f} on"])
        ax.set_title(f"{f} × {g}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    unit = f"{o.unit}, " if o.unit else ""
    axes[0][0].set_ylabel(f"{metric.replace('_', ' ')} ({unit}mean over the other factors and seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
