"""The report's files: CSV, Markdown, HTML (with its plots inlined), PNG and LaTeX."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from ablate import effects, latex
from ablate.report.grid import Report
from ablate.report.tables import (
    arms_table,
    delta_table,
    design_markdown,
    effects_table,
    markdown,
    rounds_table,
    shapley_table,
    table,
)
from ablate.report.text import (
    adaptive_line,
    claim,
    digits,
    effect_name,
    markdown_safe,
    noise,
    objective_line,
    path_line,
    rule_line,
    shapley_line,
    stats_note,
    verdict,
)


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
    paths["md"].write_text(markdown_safe(f"# {title}\n\n" + markdown(rep)))
    plots.configs(rep.summary, paths["png"], rep.objective)
    paths["html"].write_text(_html(title, [paths["png"]], [("Summary", table(rep)), ("Deltas", delta_table(rep))],
                                   [rule_line(rep.rule, rep.sesoi, rep.objective), noise(rep),
                                    stats_note(rep.objective, rep.random_numbers), *rep.notes],
                                   objective_line(rep.objective)))
    d = rep.deltas
    paths["tex"].write_text(latex.tables(
        rep.summary, d, rep.objective, rep.rule, digits(rep.objective, rep.summary[f"{rep.objective.column}_std"]),
        "config", [claim(r, rep.objective.column) for _, r in d.iterrows()],
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
    paths["md"].write_text(markdown_safe(f"# {title}\n\n" + design_markdown(rep)))
    plots.forest(rep, paths["png"])
    images = [paths["png"]]
    if rep.design.kind == "factorial":
        paths["interactions"] = out / "interactions.png"
        plots.interactions(rep, paths["interactions"])
        images.append(paths["interactions"])
    shap = rep.shapley is not None and not rep.shapley.empty
    text = [rule_line(rep.rule, rep.sesoi, rep.objective, rep.rounds is not None), verdict(rep), noise(rep),
            *([shapley_line(rep)] if shap else []), *([path_line(rep)] if rep.rounds is not None else []),
            *([adaptive_line(rep)] if rep.adaptive and rep.rounds is None else []),
            stats_note(rep.objective, rep.random_numbers), *rep.notes]
    sections = [("Effects", effects_table(rep)), ("Shapley values", shapley_table(rep)), ("Rounds", rounds_table(rep)),
                ("Arms", arms_table(rep))]
    paths["html"].write_text(_html(title, images, sections, text, objective_line(rep.objective)))
    o, e = rep.objective, rep.effects
    paths["tex"].write_text(latex.tables(
        rep.arms.rename(columns={"finished": "n"}), e, o, rep.rule, digits(o, rep.arms[f"{o.column}_std"]), "arm",
        [claim(r, o.column) for _, r in e.iterrows()], [effect_name(rep, r) for _, r in e.iterrows()], rep.sesoi,
        rep.shapley, re.sub(r"[^A-Za-z0-9]+", "-", rep.design.name)))
    return paths
