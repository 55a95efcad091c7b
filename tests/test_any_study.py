"""Any study: a user's own model, data and configs, from outside the package. The
example project in examples/digits runs end to end; bad user code fails in one line."""
import textwrap
from pathlib import Path

import mlflow
import pytest

import ablate
from conftest import EXAMPLE, preempt_after, run_cli


def runs_in(db: Path, experiment="ablate"):
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    df = mlflow.search_runs(experiment_names=[experiment])
    return df[df["params.seed"].notna()] if "params.seed" in df else df


def test_a_colour_run_trains_through_cifar10_with_crop_flip_and_a_target_model(cifar10, example_on_path, store):
    cfg = ablate.compose(["data=cifar10", f"data.root={cifar10}", "data.download=false", "model=resnet",
                          "augmentation=crop_flip", "train.epochs=2", "train.batch_size=32", f"tracking.uri={store}",
                          "progress=false"], config_dir=example_on_path / "conf")
    result = ablate.train(cfg)
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    p = run.data.params
    assert run.info.status == "FINISHED" and len(result.history) == 2
    assert (p["data"], p["model"], p["augmentation"]) == ("cifar10", "resnet", "crop_flip")
    derived = (p["data.channels"], p["data.height"], p["model.in_channels"], p["model.num_classes"])
    assert derived == ("3", "32", "3", "10")
    assert p["model._target_"] == "digits_study.models.ResNet" and result.param_count == int(p["param_count"]) > 9000
    assert ablate.train(cfg).skipped  # skip-finished works for a user's model too


@pytest.mark.slow
def test_the_example_project_sweeps_real_digits_with_the_parallel_launcher(tmp_path):
    """The README's command in examples/digits, shortened: 2 norms x 2 seeds on real
    scikit-learn digits, two jobs at a time in worker processes that import the
    project's own module, then the report."""
    db = tmp_path / "mlflow.db"
    out = run_cli(["--config-dir", "conf", "-m", "hydra/launcher=parallel", "experiment=digits",
                   "norm=none,bn_before_relu", "seed=0,1", "train.epochs=8", f"tracking.uri=sqlite:///{db}",
                   f"hydra.sweep.dir={tmp_path / 'multirun'}", "progress=false"], cwd=EXAMPLE, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs_in(db)
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}
    assert set(df["params.model"]) == {"resnet"} and set(df["params.data"]) == {"digits"}
    bn = df[df["params.norm"] == "bn_before_relu"]["metrics.best_test_acc"]
    assert (bn > 90).all(), bn  # real digits, learnt
    report = tmp_path / "multirun" / "report"
    assert (report / "report.md").exists() and (report / "summary.csv").exists()


@pytest.mark.slow
def test_submitit_workers_import_the_users_module(tmp_path):
    db = tmp_path / "mlflow.db"
    out = run_cli(["--config-dir", "conf", "-m", "hydra/launcher=submitit_local", "experiment=digits",
                   "model=resnet,mlp", "norm=none", "train.epochs=1", f"tracking.uri=sqlite:///{db}",
                   "report.auto=false",
                   f"hydra.sweep.dir={tmp_path / 'multirun'}", "progress=false"], cwd=EXAMPLE, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = runs_in(db)
    assert sorted(df["params.model"]) == ["mlp", "resnet"] and set(df["status"]) == {"FINISHED"}


BAD_STUDY = '''
import torch
from torch import nn
from torch.utils.data import Dataset


class Images(Dataset):
    """16 random 1x8x8 images; `labels` and `pairs` make it go wrong."""
    classes = [str(k) for k in range(10)]

    def __init__(self, root, train=True, download=False, top_label=9, pairs=True):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(16, 1, 8, 8, generator=g), [k % (top_label + 1) for k in range(16)]
        self.pairs = pairs

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return (self.x[i], self.y[i]) if self.pairs else self.x[i]


class NotADataset:
    def __init__(self, root, train=True, download=False):
        pass


def net(out=10, flat=64):
    return nn.Sequential(nn.Flatten(), nn.Linear(flat, out))


class NotAModule:
    pass
'''


@pytest.fixture(scope="module")
def bad_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_study")
    (root / "badstudy.py").write_text(textwrap.dedent(BAD_STUDY))
    for group, name, text in [("data", "images", "_target_: badstudy.Images"),
                              ("model", "net", "_target_: badstudy.net"),
                              ("model", "resnet", "_target_: nowhere.ResNet")]:
        (root / "conf" / group).mkdir(parents=True, exist_ok=True)
        (root / "conf" / group / f"{name}.yaml").write_text(text + "\n")
    return root


@pytest.mark.parametrize("args, needle", [
    (["model=resnet"], "model=resnet: cannot build nowhere.ResNet"),
    (["model._target_=badstudy.NotAModule"], "gave a NotAModule, not a torch.nn.Module"),
    (["data._target_=badstudy.NotADataset"], "gave a NotADataset, which is not a data set"),
    (["data._target_=nowhere.Data"], "data=images: cannot build nowhere.Data"),
    (["+data.pairs=false"], "item 0 is a Tensor, not an (input, target) pair"),
    (["+data.top_label=12"], "label 10 of item 10"),
    (["+model.out=7"], "the model gives (2, 7); it must give logits of shape (2, 10)"),
    (["+model.flat=784"], "the model rejects [2, 1, 8, 8] images"),
])
def test_bad_user_code_is_one_line_exit_2_and_no_run(bad_study, args, needle):
    out = run_cli(["--config-dir", "conf", "model=net", "data=images", "progress=false", *args], cwd=bad_study)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, lines
    assert needle in lines[0] and "Traceback" not in lines[0], lines[0]
    assert not (bad_study / "mlflow.db").exists()


def test_a_good_user_study_runs_from_its_own_folder(bad_study):
    out = run_cli(["--config-dir", "conf", "model=net", "data=images", "progress=false", "train.epochs=1",
                   "tracking.uri=sqlite:///good.db"], cwd=bad_study)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(runs_in(bad_study / "good.db")["params.model"]) == ["net"]


def test_only_the_model_data_loss_and_metric_nodes_are_instantiated(overrides, store, tmp_path, monkeypatch):
    """Configs are code (a _target_ runs), so ablate builds only `model`, `data`, the task's
    loss and its metrics, and the optimizer and scheduler (each only once its class is
    known to be one) from them. A `_target_` put anywhere else is refused (a key that
    nothing reads), and nothing read back from MLflow or a checkpoint is ever built."""
    monkeypatch.chdir(tmp_path)
    for extra, says in ((["optimizer._target_=os.system", "+optimizer._args_=[touch pwned]"],
                         "is not a torch.optim.Optimizer"),
                        (["+tracking._target_=os.system"], "no such key")):
        with pytest.raises(ablate.ConfigError, match=says):
            ablate.train(ablate.compose([*overrides, *extra]))
    assert not (tmp_path / "pwned").exists()
    package = Path(ablate.__file__).resolve().parent
    builders = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "instantiate(" in p.read_text()}
    assert builders == {"model.py", "data/sources.py", "task.py", "metrics.py", "optim.py"}


def test_a_users_model_resumes_from_its_checkpoint_to_the_same_result(example_on_path, tmp_path, monkeypatch):
    """Preempted after epoch 2 (SystemExit, as submitit does), the rerun continues the
    same run from the checkpoint and ends where an uninterrupted run ends."""
    conf = example_on_path / "conf"
    args = ["experiment=digits", "train.epochs=4", "progress=false"]
    straight = ablate.train(ablate.compose([*args, f"tracking.uri=sqlite:///{tmp_path / 'a.db'}"], config_dir=conf))
    cfg = ablate.compose([*args, f"tracking.uri=sqlite:///{tmp_path / 'b.db'}"], config_dir=conf)
    preempt_after(2, cfg, monkeypatch)
    resumed = ablate.train(cfg)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.objective == straight.objective
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'b.db'}").search_runs(["1"])
    assert [r.info.status for r in runs] == ["FINISHED"]
