"""`python -m ablate` as a user runs it: one job, sweeps, and bad input."""
import mlflow
import pytest

import ablate
from ablate.errors import ConfigError
from conftest import run_cli

FAST = ["train.epochs=1", "train.batch_size=64", "progress=false", "data.download=false"]


def runs_in(cwd, experiment="ablate"):
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    if mlflow.get_experiment_by_name(experiment) is None:
        return None
    return mlflow.search_runs(experiment_names=[experiment])


def test_one_job_writes_the_default_store_in_the_launch_dir(tmp_path, tiny_data):
    out = run_cli([f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()
    df = runs_in(tmp_path)
    assert list(df["status"]) == ["FINISHED"]
    assert df.iloc[0]["tags.mlflow.runName"] == "train.epochs=1,train.batch_size=64"
    assert "Test set: Average loss" in out.stdout


def test_multirun_gives_one_finished_run_per_job(tmp_path, tiny_data):
    out = run_cli(["-m", "norm=bn_before_relu,bn_after_relu", "seed=0,1,2",
                   f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    df = runs_in(tmp_path)
    children = df[df["tags.mlflow.parentRunId"].notna()]
    parent = df[df["tags.mlflow.parentRunId"].isna()]
    assert len(children) == 6 and set(children["status"]) == {"FINISHED"}
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    assert set(children["tags.mlflow.parentRunId"]) == {parent.iloc[0]["run_id"]}
    assert children["tags.ablate.sweep_id"].nunique() == 1
    assert sorted(children["tags.mlflow.runName"]) == sorted(
        f"norm={n},seed={s}" for n in ("bn_before_relu", "bn_after_relu") for s in range(3))
    assert {"params.norm", "params.seed", "metrics.param_count", "metrics.test_acc",
            "metrics.best_test_acc"} <= set(df.columns)
    # Re-running the same sweep trains nothing: every job is skipped.
    again = run_cli(["-m", "norm=bn_before_relu,bn_after_relu", "seed=0,1,2",
                     f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("Skipping") == 6
    assert len(runs_in(tmp_path).query("`tags.mlflow.parentRunId`.notna()")) == 6


def test_reduced_seed_study_runs_all_seven_steps(tmp_path, tiny_data):
    out = run_cli(["-m", "step=1,2,3,4,5,6,7", "seed=0", "data.train_subset=256",
                   f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    df = runs_in(tmp_path).dropna(subset=["params.step"])
    counts = df.set_index("params.step")["metrics.param_count"].to_dict()
    assert counts == {"1": 10368, "2": 9648, "3": 9792, "4": 9496, "5": 6376, "6": 6376, "7": 6376}
    assert set(df["status"]) == {"FINISHED"}


@pytest.mark.parametrize("args,needle", [
    (["norm=bn_sideways"], "norm=bn_sideways: no such option in the 'norm' group. Choose one of bn_after_relu, "
                           "bn_before_relu, none"),
    (["-m", "seed=0,1", "trian.epochs=1,2"], "trian.epochs: no such key in the config. Check its spelling"),
    (["train.lr=${nope}"], "train.lr: Interpolation key 'nope' not found. Fix it with"),
    (["-m", "hydra/launcher=basic,parallel", "seed=0"], "Hydra chooses its launcher, sweeper and settings once"),
    (["device=tpu"], "device: Invalid value 'tpu', expected one of [auto, cpu, cuda]. Fix it with `device=<value>`."),
])
def test_hydras_own_errors_are_one_line_exit_2_and_no_run(tmp_path, tiny_data, args, needle):
    """What Hydra prints over several lines with exit 1 (a misspelt option or key, in a
    job or a sweep), and an interpolation to nowhere, are one line like any bad input."""
    out = run_cli([*args, f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ablate: ") and needle in errors[0], errors
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("override,needle", [
    ("model=resnett", "model=resnett: no such option in the 'model' group. Choose one of base, deep, gap, narrow"),
    ("train.epochz=3", "train.epochz: no such key in the config. Check its spelling (`--cfg job` after your "
                       "command prints every key)."),
    ("train.label_smoothing=0.1", "train.label_smoothing: no such key in the config. label_smoothing is set at "
                                  "task.loss.label_smoothing."),
    ("seed=[", "the override 'seed=[' does not parse: no viable alternative at input '['"),
    ("hydra.sweeper.design=loo", "hydra.sweeper.design: no such key in this sweeper. A design's keys need the "
                                 "ablation sweeper"),
])
def test_compose_says_hydras_errors_in_one_line(override, needle):
    with pytest.raises(ConfigError) as err:
        ablate.compose([override])
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("arg,key", [
    ("train.epochs=0", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("train.lr=0", "train.lr"), ("model.dropout=1", "model.dropout"),
    ("data.train_subset=999999", "data.train_subset"),
])
def test_bad_values_get_one_line_and_no_run(tmp_path, tiny_data, arg, key):
    out = run_cli([f"data.root={tiny_data}", *FAST, arg], cwd=tmp_path)
    assert out.returncode == 2
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(errors) == 1 and key in errors[0] and "Fix it" in errors[0], errors
    assert not (tmp_path / "mlflow.db").exists()


def test_missing_data_is_one_clear_message(tmp_path):
    out = run_cli([f"data.root={tmp_path / 'empty'}", *FAST], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert str(tmp_path / "empty" / "MNIST" / "raw") in out.stdout + out.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sweep_with_one_bad_job_starts_nothing(tmp_path, tiny_data):
    out = run_cli(["-m", "train.lr=0.01,-1", f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    assert out.returncode != 0 and "train.lr" in out.stderr and "No job was started" in out.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("arg,needle", [
    ("+train.label_smoothing=0.1", "train.label_smoothing: no such key in train"),
    ("train.label_smoothing=0.1", "train.label_smoothing: no such key"),
    ("+loss=x", "loss: no such key in the config's top level"),
    ("+metric=f1", "metric: no such key in the config's top level"),
    ("train.nonsense=1", "train.nonsense: no such key"),
    ("+tracking.nonsense=1", "tracking.nonsense: no such key in tracking"),
    ("+optimizer.nesterov_typo=true", "optimizer.nesterov_typo: no such key in optimizer=sgd"),
    ("+model.width=64", "model.width: no such key in the block-list model base"),
    ("+augmentation.flip.q=0.3", "augmentation.flip.q: no such key in augmentation.flip"),
    ("+task.loss.nonsense=1", "task.loss: cannot build torch.nn.CrossEntropyLoss"),
    ("seed=true", "seed"),
    ("objective.metric=f1", "objective.metric='f1' is not one of task=classification's metrics"),
    ("objective.goal=min", "objective.goal=min: accuracy is better when higher"),
])
def test_a_key_that_nothing_reads_is_refused_in_one_line_and_no_run(tmp_path, tiny_data, arg, needle):
    """An override that changes the config must change what is computed, or be refused:
    with or without `+`, before any run exists, and never advising `+` for ablate's keys."""
    out = run_cli([f"data.root={tiny_data}", *FAST, arg], cwd=tmp_path)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2 and len(errors) == 1 and needle in errors[0], (out.returncode, errors)
    assert "add it with +" not in errors[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_label_smoothing_is_a_factor_that_changes_the_training(overrides, store):
    """The place for label smoothing is the loss's own argument; it forks the config and
    changes what is trained."""
    plain = ablate.train(ablate.compose([*overrides, "train.epochs=1"]))
    smooth = ablate.train(ablate.compose([*overrides, "train.epochs=1", "task.loss.label_smoothing=0.1"]))
    assert smooth.run_id != plain.run_id and not smooth.skipped
    assert smooth.history[0]["train_loss"] != plain.history[0]["train_loss"]
