"""The MLflow UI links a sweep prints: a shared view of its runs, written as MLflow's
own experiment tag. (The browser check is tests/test_scaleout.py's.)"""
import json

import mlflow

from ablate import ui
from ablate.metrics import Objective
from conftest import run_cli


def test_the_view_sorts_by_the_objective_best_first_whichever_way_is_better():
    rmse = Objective("rmse", "min", "best", (0.0, None), "RMSE", "")
    state = ui.view_state(["r1", "r2"], "abc", ["norm"], rmse)
    assert state["selectedColumns"] == ["params.`norm`", "metrics.`best_test_rmse`", "metrics.`final_test_rmse`",
                                        "metrics.`param_count`"]
    assert state["orderByKey"] == "metrics.`best_test_rmse`" and state["orderByAsc"] is True  # lowest first


def test_a_sweep_writes_a_view_of_its_runs_and_prints_the_links(tmp_path, tiny_data):
    args = ["-m", "norm=none,bn_before_relu", "seed=0,1", f"data.root={tiny_data}", "train.epochs=1",
            "train.batch_size=64", "progress=false", "data.download=false"]
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ablate")
    views = {k: json.loads(v) for k, v in exp.tags.items() if k.startswith(ui.SHARED_VIEW)}
    assert len(views) == 1
    key, state = next(iter(views.items()))
    jobs = client.search_runs([exp.experiment_id], state["searchFilter"])
    assert sorted(r.info.run_name for r in jobs) == sorted(f"norm={n},seed={s}" for n in ("none", "bn_before_relu")
                                                          for s in (0, 1))
    assert state["selectedColumns"][:2] == ["params.`norm`", "params.`seed`"]
    # the objective's column first (final test accuracy: these runs' default), the best run on top
    assert state["selectedColumns"][2:] == ["metrics.`final_test_acc`", "metrics.`best_test_acc`",
                                            "metrics.`param_count`"]
    assert state["orderByKey"] == "metrics.`final_test_acc`" and state["orderByAsc"] is False
    share = key[len(ui.SHARED_VIEW):]
    assert f"viewStateShareKey={share}" in out.stdout and "python -m ablate.ui" in out.stdout
    # a rerun skips every job; its view still shows them (by id), not an empty table
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("Skipping") == 4
    views = {k: json.loads(v) for k, v in client.get_experiment(exp.experiment_id).tags.items()
             if k.startswith(ui.SHARED_VIEW) and k != key}
    assert len(views) == 1
    assert len(client.search_runs([exp.experiment_id], next(iter(views.values()))["searchFilter"])) == 4


def test_python_m_ablate_ui_prints_the_newest_sweeps_links(tmp_path, tiny_data, capsys):
    out = run_cli(["-m", "seed=0,1", f"data.root={tiny_data}", "train.epochs=1", "progress=false",
                   "data.download=false", "report.auto=false"], cwd=tmp_path)
    assert out.returncode == 0
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert ui.main(["--tracking-uri", store, "--no-serve", "--port", "5099"]) == 0
    printed = capsys.readouterr().out
    assert "runs: http://127.0.0.1:5099/#/experiments/1/runs?viewStateShareKey=ablate-" in printed
    assert "compare: http://127.0.0.1:5099/#/compare-runs?runs=" in printed
    assert ui.main(["--tracking-uri", store, "--no-serve", "--sweep-id", "nope"]) == 2
