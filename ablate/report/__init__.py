"""Report: what each change bought, across seeds, with the noise shown.

`python -m ablate.report` reads runs from MLflow into a DataFrame, pools seeds
per configuration, and compares each configuration with the previous one and
the first (an ordered study such as step=1..7) or with a baseline. Computing
returns DataFrames; rendering (terminal, CSV, Markdown, HTML, PNG) is separate.
Everything is judged on the runs' objective (ablate.metrics.Objective, from their
tags): its column (final or best test value of its metric), with the other
selection beside, its range for the intervals and its direction for the verdicts.

The rooms, in the order a report is made: `load` (runs out of MLflow), `grid`
(a grid's configurations and deltas; a design's effects are ablate.effects'),
`text` (its sentences), `tables` (its readable tables), `files` (CSV, Markdown,
HTML, PNG, LaTeX) and `cli` (the command, and the report a sweep prints).
"""
from ablate.report.cli import for_sweep, main, rejudged, report_design
from ablate.report.files import write, write_design
from ablate.report.grid import Report, build, changed, compare, label_keys, mean_ci
from ablate.report.load import ReportError, design_of, design_runs, load_runs, with_test_samples
from ablate.report.tables import (
                                  arms_table,
                                  delta_table,
                                  design_markdown,
                                  effects_table,
                                  markdown,
                                  plan_table,
                                  rounds_table,
                                  shapley_table,
                                  table,
                                  variance_table,
)
from ablate.report.text import (
                                  adaptive_line,
                                  digits,
                                  noise,
                                  noise_floor,
                                  objective_line,
                                  path_line,
                                  rule_line,
                                  shapley_line,
                                  stats_note,
                                  verdict,
)

__all__ = ["Report", "ReportError", "adaptive_line", "arms_table", "build", "changed", "compare", "delta_table",
           "design_markdown", "design_of", "design_runs", "digits", "effects_table", "for_sweep", "label_keys",
           "load_runs", "main", "markdown", "mean_ci", "noise", "noise_floor", "objective_line", "path_line",
           "plan_table", "rejudged", "report_design", "rounds_table", "rule_line", "shapley_line", "shapley_table",
           "stats_note",
           "table", "variance_table", "verdict", "with_test_samples", "write", "write_design"]
