"""Rebuild a design's report from its exported runs (the report's own `runs.csv`), with
no MLflow store and no training: the committed studies in docs/ are regenerated this
way when the report's statistics change.

    python scripts/rereport.py docs/step7-loo/runs.csv --preset step7_loo --test-samples 10000 --out docs/step7-loo

The design comes from the preset (conf/ablation/<preset>.yaml), each run's arm from its
`tags.ablate.arm`. A greedy path is replayed from the runs: ablate.adaptive.greedy_path
with a runner that reads the stored results, so it takes the same decisions it took."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ablate import adaptive, designs, effects, report, tracking
from ablate.config import CONF_DIR
from ablate.designs import SeedPolicy


def spec_from(runs: pd.DataFrame, preset: str) -> dict:
    node = OmegaConf.load(Path(CONF_DIR) / "ablation" / f"{preset}.yaml").hydra.sweeper
    design = designs.from_config(node)
    arm_of = dict(zip(runs[f"tags.{tracking.FINGERPRINT}"], runs[f"tags.{tracking.ARM}"], strict=True))
    spec = {**design.spec(), "arms": sorted(set(arm_of.values())), "fingerprints": arm_of}
    if design.kind == "greedy_path":
        seeds = int(OmegaConf.select(node, "seeds.min", default=3))
        done = runs[runs["status"] == "FINISHED"]
        table = done.pivot_table(index="params.seed", columns=f"tags.{tracking.ARM}", values="metrics.final_test_acc")
        table.index = table.index.astype(int)
        found = adaptive.greedy_path(design, seeds, lambda jobs: (table, set()), bool(node.get("race", False)))
        spec["greedy"] = found.record()
        spec["adaptive"] = {"policy": asdict(SeedPolicy(min=seeds, max=seeds, metric="final_test_acc"))}
    return json.loads(json.dumps(spec))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, help="a report's runs.csv")
    ap.add_argument("--preset", required=True, help="the design preset the runs were trained by (conf/ablation/)")
    ap.add_argument("--test-samples", type=int, default=None, help="the test set's size, if the runs did not log it")
    ap.add_argument("--sesoi", type=float, default=None, help="smallest effect of interest, objective's units")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    original = args.runs.read_bytes()  # written back as it was: the runs are the record, not an output
    runs = report.with_test_samples(pd.read_csv(args.runs), args.test_samples)
    spec = spec_from(runs, args.preset)
    rep = effects.analyse(runs, spec, sesoi=args.sesoi)
    title = args.title or f"ablate report: design {spec['name']} (rebuilt from {args.runs.name})"
    paths = report.write_design(rep, runs, args.out, title)
    paths["runs"].write_bytes(original)
    print(report.objective_line(rep.objective))
    print(report.rule_line(rep.rule, rep.sesoi, rep.objective))
    print(report.effects_table(rep).to_string(index=False))
    print(report.verdict(rep))
    print(report.noise(rep))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
