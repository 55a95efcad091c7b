"""A user's config is the user's: its identity is its composed values key by key, with
run-local values (output folders, job numbers, times) kept out; the files that run are
its code; nothing of ablate's engine rules touches it."""
import json
import logging
from pathlib import Path

import mlflow
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ablate import app, identity, source, study, tracking
from ablate.errors import ConfigError

APP_CONF = """
defaults:
  - _self_
  - model: small
  - data: toy
  - trainer: cpu
  - paths: default
seed: null
"""
GROUPS = {
    "model/small.yaml": "hidden: 8\nkind: ${hydra:runtime.choices.model}\nsave_to: ${paths.output_dir}/model.pt\n",
    "model/big.yaml": "hidden: 32\nkind: ${hydra:runtime.choices.model}\nsave_to: ${paths.output_dir}/model.pt\n",
    "data/toy.yaml": "n: 10\n",
    "trainer/cpu.yaml": "max_epochs: 2\nroot: ${paths.output_dir}\nstamp: ${now:%H-%M-%S-%f}\njob: ${hydra:job.num}\n",
    "paths/default.yaml": "output_dir: ${hydra:runtime.output_dir}\nlog_dir: ${paths.output_dir}/logs\n",
}


@pytest.fixture
def app_conf(tmp_path) -> Path:
    conf = tmp_path / "conf"
    (conf / "study.yaml").parent.mkdir(parents=True)
    (conf / "study.yaml").write_text(APP_CONF)
    for name, text in GROUPS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    return conf


def job(conf: Path, overrides=(), output_dir="/tmp/out/a", num=0):
    """A job's task config with its Hydra config set, as a launcher gives it."""
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("study", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir, cfg.hydra.job.num = output_dir, num
    HydraConfig.instance().set_config(cfg)
    task = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(task):
        del task["hydra"]
    return task


def test_output_folders_job_numbers_and_times_are_run_local_and_choices_are_not(app_conf):
    a = identity.of(job(app_conf, output_dir="/tmp/out/a", num=0))
    b = identity.of(job(app_conf, output_dir="/tmp/out/b", num=7))
    assert a.fingerprint == b.fingerprint  # the same config run twice is one run
    assert {"paths.output_dir", "paths.log_dir", "model.save_to", "trainer.root", "trainer.stamp",
            "trainer.job"} <= set(a.run_local)
    assert a.params["model.kind"] == "small"  # a ${hydra:...} value the model reads stays its identity
    big = identity.of(job(app_conf, ["model=big"]))
    assert big.fingerprint != a.fingerprint and big.params["model.kind"] == "big"


@pytest.mark.parametrize("first,second", [("+model.head=1", "+model.head=2"),
                                          ("+model.blocks=[64,64]", "+model.blocks=[64,32]"),
                                          ("+trainer.note=a", "+trainer.note=b")])
def test_every_key_of_a_users_config_is_its_identity(app_conf, first, second):
    one, two = identity.of(job(app_conf, [first])), identity.of(job(app_conf, [second]))
    assert one.fingerprint != two.fingerprint


def test_key_order_inside_a_list_value_is_not_identity(app_conf):
    one = identity.of(job(app_conf, ["+model.layers=[{width:32,act:relu}]"]))
    two = identity.of(job(app_conf, ["+model.layers=[{act:relu,width:32}]"]))
    assert one.fingerprint == two.fingerprint and json.loads(one.params["model.layers"]) == [
        {"act": "relu", "width": 32}]


def test_the_objective_comes_from_optimized_metric_and_the_sweepers_direction(app_conf):
    cfg = job(app_conf, ["+optimized_metric=val/acc"])
    with pytest.raises(ConfigError, match="say which way val/acc is better"):
        app.objective(cfg, HydraConfig.get())
    hydra_cfg = OmegaConf.create({"sweeper": {"_target_": app.SWEEPER, "direction": "maximize"}})
    o = app.objective(cfg, hydra_cfg)
    assert (o.metric, o.goal, o.column) == ("val/acc", "max", "final_val/acc")
    clash = OmegaConf.create({"sweeper": {"_target_": app.SWEEPER, "direction": "minimize",
                                          "objective": {"goal": "max"}}})
    with pytest.raises(ConfigError, match="opposite ways"):
        app.objective(cfg, clash)


def _user_loop_cfg(tmp_path, **extra):
    return OmegaConf.create({"seed": None, "epochs": 2, "model": {"head": 1},
                             "tracking": {"uri": f"sqlite:///{tmp_path / 'm.db'}", "experiment": "ablate",
                                          "grace_s": 30, "heartbeat_s": 60, "on_running": "skip",
                                          "checkpoints": True},
                             "force": False, "report": {}, "design": {},
                             "objective": {"metric": "acc", "goal": "max", "select": "final"}, **extra})


def test_a_user_loop_with_model_head_1_then_2_trains_two_runs_and_a_null_seed_runs_as_0(tmp_path, caplog):
    trained = []

    def fit(cfg, run):
        trained.append((cfg.seed, cfg.model.head))
        return {"acc": 1.0 * cfg.model.head}
    with caplog.at_level(logging.INFO):
        study.run(fit, _user_loop_cfg(tmp_path))
    assert "runs it as seed=0" in caplog.text
    cfg = _user_loop_cfg(tmp_path)
    cfg.model.head = 2
    study.run(fit, cfg)
    assert trained == [(0, 1), (0, 2)]
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["1"])
    assert sorted(r.data.params["model.head"] for r in runs) == ["1", "2"]


def _interrupted_after_one_epoch(cfg):
    """A user loop's run stopped (Ctrl-C) after its first epoch and checkpoint; the run."""
    def stopped(cfg, run):
        run.log(1, {"acc": 1.0})
        run.save({"epoch": 1})
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        study.run(stopped, cfg)
    (run,) = mlflow.MlflowClient(cfg.tracking.uri).search_runs(["1"])
    return run


def test_a_checkpoint_that_does_not_load_safely_closes_its_run_and_starts_afresh(tmp_path, monkeypatch):
    """A planted pickle (code in __reduce__) is never executed: weights_only refuses it,
    the run it belonged to is closed KILLED with why, and the config trains afresh."""
    cfg = _user_loop_cfg(tmp_path, seed=3)
    old = _interrupted_after_one_epoch(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    from ablate.run import checkpoint_path

    class Planted:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "PWNED",))
    torch.save({"state": Planted(), "epoch": 1, "history": []}, checkpoint_path(old))
    seen = []
    study.run(lambda cfg, run: seen.append(run.resume) or {"acc": 2.0}, cfg)
    assert seen == [None] and not (tmp_path / "PWNED").exists()
    old = client.get_run(old.info.run_id)
    assert old.info.status == "KILLED" and "does not load" in old.data.tags[tracking.SUPERSEDED]


def test_the_code_is_the_files_that_run_not_every_file_beside_the_script(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "nets.py").write_text("from . import layers\n")
    (tmp_path / "pkg" / "layers.py").write_text("X = 1\n")
    script = tmp_path / "train.py"
    script.write_text("import os\n\ndef main():\n    from pkg import nets\n")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        before = source.parts({}, script)
        assert {"train.py", "pkg/nets.py", "pkg/layers.py", "pkg/__init__.py"} <= set(before)
        (tmp_path / "plot_results.py").write_text("print('a helper saved after a kill')\n")
        assert source.parts({}, script) == before  # a helper beside the script is not its code
        (tmp_path / "pkg" / "layers.py").write_text("X = 2\n")
        why = source.changed(source.tags(before), source.parts({}, script))
        assert why == "the code changed since: pkg/layers.py"
    finally:
        sys.path.remove(str(tmp_path))


def test_a_run_of_changed_code_left_running_is_closed_killed_with_why(tmp_path):
    cfg = _user_loop_cfg(tmp_path, seed=1)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    old = _interrupted_after_one_epoch(cfg)
    client.update_run(old.info.run_id, "RUNNING")  # as kill -9 leaves it
    client.set_tag(old.info.run_id, source.TAG, "0" * 12)  # trained by other code
    client.set_tag(old.info.run_id, tracking.OWNER, "nohost:1")
    client.set_tag(old.info.run_id, tracking.HEARTBEAT, "0")
    study.run(lambda cfg, run: {"acc": 2.0}, cfg)
    old = client.get_run(old.info.run_id)
    assert old.info.status == "KILLED" and "code changed" in old.data.tags[tracking.SUPERSEDED]


def test_more_than_a_hundred_params_are_logged(tmp_path):
    cfg = _user_loop_cfg(tmp_path, wide={f"k{i}": i for i in range(150)})
    study.run(lambda cfg, run: {"acc": 1.0}, cfg)
    (run,) = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["1"])
    assert run.data.params["wide.k149"] == "149" and len(run.data.params) > 150


def test_the_report_judges_logged_runs_on_another_metric_without_retraining():
    import pandas as pd

    from ablate.metrics import Objective
    from ablate.report import ReportError, rejudged
    base = Objective("rmse", "min", "final", (0.0, None), "RMSE", "", "test")
    runs = pd.DataFrame({"metrics.final_test_rmse": [1.0], "metrics.final_test_r2": [0.5]})
    r2 = rejudged(base, runs, "r2", "max", None)
    assert (r2.column, r2.goal, r2.bounds) == ("final_test_r2", "max", (None, None))
    with pytest.raises(ReportError, match="needs --goal"):
        rejudged(base, runs, "r2", None, None)
    with pytest.raises(ReportError, match="no run logged final_test_mae"):
        rejudged(base, runs, "mae", "min", None)
    assert rejudged(base, runs, None, None, None) is base
    assert runs["metrics.best_test_r2"].isna().all()  # a selection the runs did not log: shown as missing


def test_a_crossed_stratum_is_named_by_the_key_the_user_swept():
    import pandas as pd

    from ablate.effects import _strata
    runs = pd.DataFrame({"arm": ["baseline", "baseline", "x", "x"],
                         "params.data.num_classes": ["3", "2", "3", "2"], "params.model.classes": ["3", "2", "3", "2"],
                         f"tags.{tracking.OVERRIDES}": ["data=wine seed=0", "data=breast seed=0",
                                                       "data=wine seed=0 +m=1", "data=breast seed=0 +m=1"]})
    assert _strata(runs, ["design.arm", "data", "seed"]) == ["params.data"]
    assert sorted(runs["params.data"]) == ["breast", "breast", "wine", "wine"]
    assert _strata(runs.drop(columns=["params.data"]), ["design.arm", "seed"]) == []


TIER1_SCRIPT = '''
import ablate

@ablate.main(config_path="conf", config_name="my_study")
def train(cfg, run):
    assert cfg.paths.out.endswith("/out"), cfg.paths.out
    for epoch in range(run.epoch + 1, cfg.trainer.epochs + 1):
        run.log(epoch, {"score": cfg.model.width * epoch + cfg.seed})
    return {"score": cfg.model.width * cfg.trainer.epochs + cfg.seed}

if __name__ == "__main__":
    train()
'''


@pytest.mark.slow
def test_an_ablate_main_app_with_its_own_primary_config_and_groups_sweeps_and_reruns_nothing(tmp_path):
    """`config_name` other than config, groups named model/data/trainer, and a path
    under `${hydra:runtime.output_dir}`: the pre-check and the jobs agree on every job's
    identity, so the sweep counts its jobs, and the same sweep again trains nothing."""
    import subprocess
    import sys
    conf = tmp_path / "conf"
    for name, text in {"my_study.yaml": "defaults:\n  - ablate_study\n  - _self_\n  - model: mlp\n  - data: toy\n"
                                        "  - trainer: fast\nseed: null\npaths:\n"
                                        "  out: ${hydra:runtime.output_dir}/out\n"
                                        "objective: {metric: score, goal: max}\n",
                       "model/mlp.yaml": "width: 2\n", "data/toy.yaml": "n: 3\n", "trainer/fast.yaml": "epochs: 2\n"
                       }.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    (tmp_path / "train.py").write_text(TIER1_SCRIPT)
    args = [sys.executable, "train.py", "-m", "seed=0,1", "model.width=2,3", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Sweep done: 4 finished (0 of them reused" in text, text[-3000:]
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Sweep done: 4 finished (4 of them reused" in again.stdout + again.stderr
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path}/m.db").search_runs(["1"], "params.seed != ''")
    assert len(runs) == 4 and {r.data.params["model.width"] for r in runs} == {"2", "3"}


# ----------------------------------------------------------------------------- from a breaker's trial

def test_a_run_local_part_is_a_placeholder_so_the_rest_of_the_value_still_counts(app_conf):
    base = identity.of(job(app_conf, output_dir="/tmp/out/a"))
    moved = identity.of(job(app_conf, output_dir="/elsewhere/b"))
    other = identity.of(job(app_conf, ["paths.log_dir=${paths.output_dir}/logs_v2"], output_dir="/tmp/out/a"))
    assert base.fingerprint == moved.fingerprint and base.params["paths.log_dir"] == "<hydra:runtime.output_dir>/logs"
    assert other.fingerprint != base.fingerprint  # pointing the app elsewhere is another config
    assert moved.run_local["paths.log_dir"] == "/elsewhere/b/logs"


@pytest.mark.parametrize("first,second", [("+cfgd={a:1}", "+cfgd={a:'1'}"), ("+x=true", "+x='true'"),
                                          ("+x=null", "+x='null'")])
def test_a_number_and_its_text_are_two_values(app_conf, first, second):
    assert identity.of(job(app_conf, [first])).fingerprint != identity.of(job(app_conf, [second])).fingerprint


@pytest.mark.parametrize("group", ["objective", "tracking", "report", "design", "force"])
def test_an_apps_own_keys_named_like_ablates_nodes_are_its_identity(app_conf, tmp_path, group):
    hydra_cfg = OmegaConf.create({"sweeper": {"_target_": app.SWEEPER, "objective": {"metric": "acc", "goal": "max"},
                                              "tracking": {"uri": f"sqlite:///{tmp_path}/m.db"}}})
    one = app.check_app_job(job(app_conf, [f"+{group}.project=a"]), hydra_cfg)
    two = app.check_app_job(job(app_conf, [f"+{group}.project=b"]), hydra_cfg)
    assert one.fingerprint != two.fingerprint and one.settings.tracking.uri.endswith("m.db")


def test_a_bare_number_is_the_apps_optimized_metric_so_another_objective_is_refused():
    from ablate.metrics import Objective
    o = Objective("test/loss", "min", "final", (None, None), "test/loss", "", "none")
    with pytest.raises(app.ResultError, match="optimized_metric=val/acc_best, but the objective is test/loss"):
        app.returned(0.82, o, OmegaConf.create({"optimized_metric": "val/acc_best"}))
    assert app.returned({"test/loss": 0.3}, o, OmegaConf.create({"optimized_metric": "val/acc_best"})) == {
        "test/loss": 0.3}


def test_a_sweep_skips_a_finished_config_only_when_its_code_is_this_code(tmp_path):
    from ablate import sweep
    uri = f"sqlite:///{tmp_path}/m.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ablate")
    for fp, code in (("a" * 16, "same"), ("b" * 16, "older")):
        r = client.create_run(exp, tags={tracking.FINGERPRINT: fp, source.TAG: code})
        client.set_terminated(r.info.run_id, "FINISHED")
    assert sweep.finished(uri, "ablate", ["a" * 16, "b" * 16], "same") == {"a" * 16}


def test_a_checkpoint_of_another_run_is_never_resumed(tmp_path):
    from ablate.run import checkpoint_path
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")

    def stops(cfg, run):
        run.log(1, {"acc": 1.0})
        run.save({"epoch": 1, "seed": cfg.seed})
        if cfg.seed == 2:
            raise KeyboardInterrupt
        return {"acc": 1.0}
    study.run(stops, _user_loop_cfg(tmp_path, seed=1))
    with pytest.raises(KeyboardInterrupt):
        study.run(stops, _user_loop_cfg(tmp_path, seed=2))
    done, killed = sorted(client.search_runs(["1"]), key=lambda r: r.data.params["seed"])
    checkpoint_path(killed).write_bytes(checkpoint_path(done).read_bytes())  # another run's file
    seen = []
    study.run(lambda cfg, run: seen.append(run.resume) or {"acc": 2.0}, _user_loop_cfg(tmp_path, seed=2))
    assert seen == [None]
    killed = client.get_run(killed.info.run_id)
    assert killed.info.status == "KILLED" and f"belongs to run {done.info.run_id}" in killed.data.tags[
        tracking.SUPERSEDED]


def test_an_epoch_checkpointed_by_lightning_but_not_yet_logged_is_logged_on_resume():
    """kill -9 between writing Lightning's checkpoint and logging its epoch: the epoch's
    metrics ride in the checkpoint's callback state, and the resumed run logs them."""
    pytest.importorskip("lightning")
    from ablate.lightning import RunCallback

    class Handle:  # the run handle's part the callback uses
        def __init__(self, history):
            self.history, self.epoch, self.logged = list(history), len(history), []

        def log(self, epoch, metrics):
            self.logged.append(epoch)
            self.history.append({"epoch": epoch, **metrics})
            self.epoch = max(self.epoch, epoch)
    before = Handle([{"epoch": e, "val/acc": 0.5} for e in (1, 2, 3, 4)])
    cb = RunCallback(before)
    cb._pending = {"epoch": 5, "val/acc": 0.6}  # inside on_train_epoch_end, while the checkpoint is written
    state = cb.state_dict()
    after = Handle(before.history)  # the payload kept epochs 1-4; Lightning's checkpoint is at epoch 5
    RunCallback(after).load_state_dict(state)
    assert after.logged == [5] and after.history[-1] == {"epoch": 5, "val/acc": 0.6}
