#!/usr/bin/env python
"""The seed-study results page: our measured numbers beside the seed's.

Reads the report's CSVs (summary.csv, runs.csv from `python -m ablate.report`)
and writes a Markdown table with the issue's acceptance checks computed from the
runs. The seed's figures are the reference write-up's (../shared/docs/seed-study.md).

    python scripts/seed_table.py docs/seed-study > docs/seed-study/results.md
"""
import sys
from pathlib import Path

import pandas as pd

# step -> (params, best test acc %) as reported by the seed, one run each.
SEED = {1: (10368, 99.03), 2: (9648, 99.05), 3: (9792, 99.38), 4: (9496, 99.07),
        5: (6376, 99.32), 6: (6376, 99.44), 7: (6376, 99.47)}
TOLERANCE = 0.25  # percentage points between our mean best and the seed's figure
FLOOR = {6: 99.4, 7: 99.4}  # best test acc every seed must reach


def main(folder: Path) -> str:
    summary = pd.read_csv(folder / "summary.csv")
    runs = pd.read_csv(folder / "runs.csv")
    summary["step"] = summary["step"].astype(int)
    runs["step"] = runs["params.step"].astype(int)
    lines = ["| step | params (seed) | n | best test acc % mean ± std | final test acc % mean ± std "
             "| seed's best | Δ vs seed | within 0.25 pp |",
             "|---|---|---|---|---|---|---|---|"]
    checks = []
    for _, s in summary.sort_values("step").iterrows():
        step = int(s["step"])
        seed_params, seed_acc = SEED[step]
        diff = s["best_test_acc_mean"] - seed_acc
        ok = abs(diff) <= TOLERANCE
        checks.append((f"step {step} within {TOLERANCE} pp of the seed ({diff:+.2f})", ok))
        lines.append(
            f"| {step} | {int(s['param_count']):,} ({seed_params:,}) | {int(s['n'])} "
            f"| {s['best_test_acc_mean']:.2f} ± {s['best_test_acc_std']:.2f} "
            f"| {s['final_test_acc_mean']:.2f} ± {s['final_test_acc_std']:.2f} "
            f"| {seed_acc:.2f} | {diff:+.2f} | {'yes' if ok else '**no**'} |")
        checks.append((f"step {step} has the seed's parameter count", int(s["param_count"]) == seed_params))
    by_step = summary.set_index("step")["best_test_acc_mean"]
    if {2, 3} <= set(by_step.index):
        checks.append((f"step 3 beats step 2 ({by_step[3]:.2f} vs {by_step[2]:.2f})", by_step[3] > by_step[2]))
    for step, floor in FLOOR.items():
        accs = runs.loc[runs["step"] == step, "metrics.best_test_acc"].sort_values()
        if len(accs):
            checks.append((f"step {step} best test acc ≥ {floor} on every seed "
                           f"({', '.join(f'{a:.2f}' for a in accs)})", bool((accs >= floor).all())))
    out = [*lines, "", "Checks (computed from the runs):", ""]
    out += [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/seed-study")), end="")
