"""`python -m ablate.report`, and the report a sweep prints and logs when it ends."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ablate import effects, stats, tracking
from ablate.errors import AblateError
from ablate.metrics import Objective
from ablate.report.files import write, write_design
from ablate.report.grid import build
from ablate.report.load import ReportError, design_of, design_runs, find_parent, load_runs, with_test_samples
from ablate.report.tables import delta_table, effects_table, plan_line, plan_table, table
from ablate.report.text import noise, objective_line, rule_line, verdict

log = logging.getLogger(__name__)


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
    else:
        runs, notes = load_runs(client.tracking_uri, exp.name, fingerprints=fingerprints)
        rep = build(runs, notes, sesoi=cfg.report.get("sesoi"))
        paths = write(rep, out, title=title)
    _say(rep)
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
    ap = argparse.ArgumentParser(prog="python -m ablate.report",
                                 description="What each change bought, across seeds, with the noise shown.")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
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
    ap.add_argument("--plan", default=None, type=float, metavar="EFFECT",
                    help="how many seeds each comparison needs for a true effect of EFFECT (the objective's units) "
                         "to be clear with power 0.8, from its spread so far, with that estimate's range")
    ap.add_argument("--out", default="reports/latest", type=Path)
    args = ap.parse_args(argv)
    judge = (args.metric, args.goal, args.select)
    try:
        stats.check_sesoi(args.sesoi, "--sesoi")
        stats.check_sesoi(args.plan, "--plan")  # the same kind of number: a positive size in the objective's units
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
            parent = exp and find_parent(client, exp.experiment_id, args.sweep_id, args.design)
            if args.design and parent is None:
                raise ReportError(f"No sweep of design {args.design!r} in experiment {args.experiment!r} ({uri}).")
            if parent is not None and tracking.DESIGN in parent.data.tags:
                rep, paths = report_design(client, parent, args.out,
                                           f"{title}, design {parent.data.tags[tracking.DESIGN]}", None, args.sesoi,
                                           args.test_samples, args.filter, judge)
                _say(rep, paths, args.plan)
                return 0
        runs, notes = load_runs(uri, args.experiment, args.sweep_id, args.filter)
        declared = runs.get("params.report.sesoi", pd.Series(dtype=str)).dropna().unique()
        declared = float(declared[0]) if len(declared) == 1 and declared[0] != "null" else None
        if args.sesoi is not None and args.sesoi != declared:
            notes.append(effects.post_hoc_sesoi(args.sesoi, declared))
        rep = build(with_test_samples(runs, args.test_samples), notes, order=args.order, baseline=args.baseline,
                    objective=rejudged(Objective.from_runs(runs), runs, *judge), sesoi=args.sesoi)
    except (ReportError, AblateError) as exc:  # a missing store; runs scored by different objectives
        print(f"ablate.report: {exc}", file=sys.stderr)
        return 2
    _say(rep, write(rep, args.out, title=title), args.plan)
    return 0


def _say(rep, paths: dict | None = None, plan: float | None = None) -> None:
    """A report on the terminal, the same at a sweep's end and from the CLI: the
    objective and the rule, the tables, the verdict and the noise floor, the notes,
    where the files went (`paths`), and with `plan` the seeds each comparison needs
    (written to plan.csv beside the report's files)."""
    design = isinstance(rep, effects.DesignReport)
    parts = [objective_line(rep.objective), rule_line(rep.rule, rep.sesoi, rep.objective,
                                                      design and rep.rounds is not None)]
    parts += [effects_table(rep), verdict(rep)] if design else [table(rep), delta_table(rep)]
    for part in [*parts, noise(rep), *([rep.random_numbers] if rep.random_numbers else [])]:
        if isinstance(part, pd.DataFrame):
            if not part.empty:
                print(part.to_string(index=False), end="\n\n")
        else:
            print(part, end="\n\n")
    for n in rep.notes:
        print(f"note: {n}")
    if plan is not None:
        planned = plan_table(rep, plan)
        print(f"\n{plan_line(rep, plan)}\n\n{planned.to_string(index=False)}")
        if paths:
            paths = {**paths, "plan": Path(paths["md"]).with_name("plan.csv")}
            planned.to_csv(paths["plan"], index=False)
    if paths:
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
