"""scripts/bench.py end to end on the tiny data: rounds, medians and paired ratios."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

CONFIGS = "seed-style DataLoader (workers=0),ablate engine (channels_last)"


def test_bench_pairs_each_round_with_its_own_baseline(tiny_data, tmp_path):
    csv = tmp_path / "bench.csv"
    done = subprocess.run([sys.executable, "scripts/bench.py", "--batches", "2", "--repeats", "2",
                           "--threads", "1", "--configs", CONFIGS, "--csv", str(csv)],
                          cwd=REPO, env={**os.environ, "ABLATE_DATA_DIR": str(tiny_data)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(csv).set_index("config")
    rounds = pd.read_csv(tmp_path / "bench-rounds.csv")
    assert list(table.index) == CONFIGS.split(",") and (table["rounds"] == 2).all()
    assert sorted(rounds["round"]) == [1, 1, 2, 2] and (rounds["batches"] == 2).all()
    base = rounds[rounds["config"].str.startswith("seed-style")].set_index("round")["ms_per_batch"]
    engine = rounds[rounds["config"].str.startswith("ablate")].set_index("round")["ms_per_batch"]
    assert rounds[rounds["config"].str.startswith("seed-style")]["speedup"].tolist() == [1.0, 1.0]
    assert table.loc[CONFIGS.split(",")[1], "speedup_per_round_median"] == pytest.approx((base / engine).median())
    ratio_of_medians = base.median() / engine.median()
    assert table.loc[CONFIGS.split(",")[1], "speedup_vs_best_seed_style"] == pytest.approx(ratio_of_medians)
