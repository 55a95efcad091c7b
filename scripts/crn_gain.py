"""What common random numbers buy: the spread of a leave-one-out's paired differences,
with the arms of a seed coupled (seeds.common=true) and not (false), from one store.

    python scripts/crn_gain.py --uri sqlite:////tmp/crn/mlflow.db --out docs/crn

The study is a leave-one-out whose jobs were crossed with `seeds.common=true,false`
(docs/statistics.md, "Common random numbers", gives the command). For each factor and
mode: Δ per seed = baseline − (baseline without the factor), on the final test value of
the objective's metric; its mean, std and n; then the ratio of the two modes' variances
with its 95% F interval (scipy.stats.f), which says how many times as many seeds the
uncoupled study needs for the same interval width. Writes crn.csv and prints Markdown."""
from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from scipy import stats

from ablate import tracking


def paired(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (mode, factor, seed): the baseline's value minus the factor's arm's."""
    done = runs[runs["status"] == "FINISHED"].copy()
    done["mode"] = np.where(done["params.seeds.common"].eq("True"), "coupled", "uncoupled")
    table = done.pivot_table(index=["mode", "params.seed"], columns=f"tags.{tracking.ARM}",
                             values=f"metrics.{metric}")
    base = table.pop("baseline")
    delta = table.rsub(base, axis=0).stack().rename("delta").reset_index()
    return delta.rename(columns={"params.seed": "seed", f"tags.{tracking.ARM}": "factor"})


def gain(delta: pd.DataFrame) -> pd.DataFrame:
    """Per factor: each mode's mean, std and n of Δ, and the variance ratio uncoupled /
    coupled with its 95% interval (two independent samples, normal Δ)."""
    rows = []
    for factor, g in delta.groupby("factor"):
        by = {m: g.loc[g["mode"] == m, "delta"].to_numpy() for m in ("coupled", "uncoupled")}
        row = {"factor": factor}
        for m, x in by.items():
            row |= {f"{m}_mean": x.mean(), f"{m}_std": x.std(ddof=1), f"{m}_n": len(x)}
        ratio = row["uncoupled_std"] ** 2 / row["coupled_std"] ** 2
        d1, d2 = row["uncoupled_n"] - 1, row["coupled_n"] - 1
        row |= {"variance_ratio": ratio, "ratio_lo": ratio / stats.f.ppf(0.975, d1, d2),
                "ratio_hi": ratio / stats.f.ppf(0.025, d1, d2),
                "f_test_p": 2 * min(stats.f.cdf(ratio, d1, d2), stats.f.sf(ratio, d1, d2))}
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True, help="the study's tracking URI (absolute)")
    ap.add_argument("--experiment", default="ablate")
    ap.add_argument("--metric", default="final_test_acc")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    mlflow.set_tracking_uri(args.uri)
    runs = mlflow.search_runs(experiment_names=[args.experiment], max_results=50000)
    delta = paired(runs, args.metric)
    table = gain(delta)
    args.out.mkdir(parents=True, exist_ok=True)
    delta.to_csv(args.out / "deltas.csv", index=False)
    table.to_csv(args.out / "crn.csv", index=False)
    print("| left out | coupled: mean ± std of Δ (n) | uncoupled: mean ± std of Δ (n) "
          "| variance ratio uncoupled / coupled, 95% CI | F-test p |")
    print("|---|---|---|---|---|")
    for _, r in table.iterrows():
        print(f"| {r['factor']} | {r['coupled_mean']:+.3f} ± {r['coupled_std']:.3f} ({r['coupled_n']}) | "
              f"{r['uncoupled_mean']:+.3f} ± {r['uncoupled_std']:.3f} ({r['uncoupled_n']}) | "
              f"{r['variance_ratio']:.2f} [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}] | {r['f_test_p']:.3f} |")


if __name__ == "__main__":
    main()
