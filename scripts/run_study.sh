#!/usr/bin/env bash
# The seven-step MNIST study: steps 1..7 x seeds, two jobs at a time, then the report.
# Re-running it skips finished jobs and resumes interrupted ones from their checkpoint.
#   scripts/run_study.sh                      # 21 jobs, 15 epochs, full MNIST
#   SEEDS=0 scripts/run_study.sh train.epochs=1 data.train_subset=2000   # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-docs/seed-study}
EXPERIMENT=${EXPERIMENT:-seed-study}
python -m ablate -m hydra/launcher=parallel step=1,2,3,4,5,6,7 seed="$SEEDS" \
  tracking.experiment="$EXPERIMENT" progress=false report.out="$OUT" "$@"
python -m ablate.report --experiment "$EXPERIMENT" --out "$OUT"
