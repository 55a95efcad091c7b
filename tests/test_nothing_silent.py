"""Nothing silent: each kind of fault from issue "Nothing silent" ends in the right
result or in one line with the fix, never in a silent wrong answer. Each test uses the
issue's input and at least one other of the same kind."""
import logging
import os
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest

import ablate
from ablate import designs, source, tracking
from ablate.errors import ConfigError, DataError
from conftest import preempt_after, run_cli

FAST = ["train.epochs=1", "train.batch_size=64", "progress=false", "data.download=false"]


# ----------------------------------------------------------------------------- 1. code that changed under a run

MODEL = '''
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes, width=WIDTH):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch, tiny_data, store):
    """A user's package `silentnet` with a model, and a config that trains it (each test
    its own copy, imported afresh, as each command of a user is a fresh process)."""
    for name in [m for m in sys.modules if m.split(".")[0] == "silentnet"]:
        monkeypatch.delitem(sys.modules, name)
    pkg = tmp_path / "code" / "silentnet"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODEL.replace("WIDTH", "16"))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "net.yaml").write_text("_target_: silentnet.models.Net\nnum_classes: ${data.num_classes}\n")
    cfg = lambda *extra: ablate.compose([f"data.root={tiny_data}", f"tracking.uri={store}", "model=net",  # noqa: E731
                                         "train.epochs=3", "progress=false", "data.download=false", *extra],
                                        config_dir=tmp_path / "conf")
    return pkg / "models.py", cfg


@pytest.mark.parametrize("edit", ["WIDTH", "shapes_unchanged"])
def test_a_run_is_never_resumed_by_other_code(user_code, store, monkeypatch, caplog, edit):
    """Killed after epoch 1, the model edited (its shapes changed, or not), rerun: the
    old run is not resumed; a new run trains from epoch 0, and one line says why."""
    models, cfg = user_code
    preempt_after(1, cfg(), monkeypatch)
    text = MODEL.replace("WIDTH", "32") if edit == "WIDTH" else MODEL.replace("WIDTH", "16").replace(
        "nn.ReLU()", "nn.Tanh()")
    models.write_text(text)
    with caplog.at_level(logging.WARNING, logger="ablate.run"):
        result = ablate.train(cfg())
    client = mlflow.MlflowClient(store)
    runs = {r.info.run_id: r for r in client.search_runs(["1"])}
    assert len(runs) == 2 and not result.skipped and len(result.history) == 3
    old = next(r for i, r in runs.items() if i != result.run_id)
    assert old.info.status == "KILLED" and runs[result.run_id].info.status == "FINISHED"
    said = [r.getMessage() for r in caplog.records if "Not resuming run" in r.getMessage()]
    assert len(said) == 1 and "the code changed since: silentnet" in said[0] and "from epoch 0" in said[0]


def test_a_finished_run_of_other_code_is_reused_with_a_word(user_code, store, caplog):
    models, cfg = user_code
    first = ablate.train(cfg())
    models.write_text(MODEL.replace("WIDTH", "16") + "\n# a comment is an edit too\n")
    with caplog.at_level(logging.INFO, logger="ablate.run"):
        again = ablate.train(cfg())
    assert again.skipped and again.run_id == first.run_id
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Reusing run")]
    assert len(said) == 1 and "silentnet" in said[0] and "force=true" in said[0]


def test_a_checkpoint_that_does_not_load_starts_a_new_run(user_code, store, monkeypatch, caplog):
    """Same code, but the checkpoint cannot be read (torn, foreign): a fresh run, not a stuck config."""
    _, cfg = user_code
    preempt_after(1, cfg(), monkeypatch)
    killed = mlflow.MlflowClient(store).search_runs(["1"])[0]
    from ablate.run import checkpoint_path
    checkpoint_path(killed).write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="ablate.run"):
        result = ablate.train(cfg())
    assert result.run_id != killed.info.run_id and len(result.history) == 3
    assert any("does not load" in r.getMessage() for r in caplog.records)
    old = mlflow.MlflowClient(store).get_run(killed.info.run_id)  # closed with the reason, never stuck
    assert old.info.status == "KILLED" and "does not load" in old.data.tags[tracking.SUPERSEDED]


def test_a_report_that_mixes_code_versions_says_so():
    runs = pd.DataFrame({f"tags.{source.TAG}": ["aaa", "aaa", "bbb", None]})
    (note,) = source.mixed(runs)
    assert "3 versions of the code" in note and "force=true" in note
    assert source.mixed(runs.iloc[:2]) == []


def test_the_code_parts_name_the_users_package_and_the_libraries(user_code):
    _, cfg = user_code
    parts = source.parts(cfg("data=cifar10", "data.root=/nowhere"))
    assert set(parts) >= {"ablate", "silentnet", "torchvision"} and parts["torchvision"].startswith("torchvision==")


# ----------------------------------------------------------------------------- 2. a deleted experiment

@pytest.mark.parametrize("experiment", ["ablate", "my study"])
def test_a_deleted_experiment_is_one_line_before_any_run(tmp_path, tiny_data, experiment):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.delete_experiment(client.create_experiment(experiment))
    for args in ([], ["-m", "seed=2,3"]):
        out = run_cli([*args, f"data.root={tiny_data}", f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                       *FAST], cwd=tmp_path)
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("ablate:")]
        assert out.returncode == 2 and len(lines) == 1 and "was deleted" in lines[0], out.stderr[-2000:]
        assert "mlflow experiments restore" in lines[0] and "mlflow gc" in lines[0]
        assert "Traceback" not in out.stderr
    assert client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              run_view_type=mlflow.entities.ViewType.ALL) == []
    from ablate import report
    assert report.main(["--tracking-uri", uri, "--experiment", experiment]) == 2


# ----------------------------------------------------------------------------- 3. paths with URI-special characters

@pytest.mark.parametrize("folder", ["q?a", "50%", "a#b"])
def test_any_folder_name_gets_its_own_store(tmp_path, folder, monkeypatch):
    launch = tmp_path / folder
    sibling = tmp_path / (folder[:-1] + "z")
    for where in (launch, sibling):
        where.mkdir()
        monkeypatch.chdir(where)
        uri = tracking.resolve_uri(None)
        assert tracking.sqlite_file(uri) == where / "mlflow.db"
        tracking.ensure_experiment(uri, "ablate")
        assert (where / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking.resolve_uri(None))
    run = client.create_run(client.get_experiment_by_name("ablate").experiment_id)
    from ablate.run import checkpoint_path
    assert str(checkpoint_path(run)).startswith(str(sibling))


# ---------------------------------------------------------------- 4. jobs that fail before their run exists

@pytest.mark.slow
def test_relative_paths_resolve_as_the_jobs_will_with_chdir(tmp_path, tiny_data):
    """`hydra.job.chdir=true data.root=./data`: the pre-flight and every job read the
    same folder (the launch folder's), so the jobs train."""
    (tmp_path / "data").symlink_to(tiny_data, target_is_directory=True)
    out = run_cli(["-m", "hydra.job.chdir=true", "data.root=./data", "seed=0,1", *FAST], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Sweep done: 2 finished (0 of them reused from earlier runs), 0 failed, 0 never reached MLflow" in \
        out.stdout + out.stderr


def test_a_job_that_never_reached_mlflow_is_counted_failed(tmp_path, tiny_data, store, caplog):
    """The sweep's summary, parent run and exit code count every job by its config: one
    whose run never existed is a failure, not a silence."""
    from omegaconf import OmegaConf

    from ablate.callbacks import AblateCallback
    done = ablate.train(ablate.compose([f"data.root={tiny_data}", f"tracking.uri={store}", *FAST]))
    fp = mlflow.MlflowClient(store).get_run(done.run_id).data.tags[tracking.FINGERPRINT]
    cb = AblateCallback()
    cb.client, cb.fingerprints = mlflow.MlflowClient(store), [fp, "0" * 16]
    cb.parent_id = cb.client.create_run("1", run_name="sweep").info.run_id
    cb.cfg = OmegaConf.create({"report": {"auto": False}, "tracking": {"heartbeat_s": 60}})
    cb.sweep_dir = tmp_path
    cb.show_where = lambda parent: None
    with caplog.at_level(logging.INFO):
        assert cb.finish() is True
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "1 finished" in text and "1 never reached MLflow" in text
    assert cb.client.search_runs(["1"], "attributes.run_name = 'sweep'")[0].info.status == "FAILED"


# ----------------------------------------------------------------------------- 5. two sweeps in one folder at once

def test_two_sweeps_started_in_one_second_get_two_folders(tmp_path):
    """Started together (a shell loop with `&`), two sweeps resolve two sweep folders."""
    cmd = [sys.executable, "-m", "ablate", "seed=0", "--cfg", "hydra", "--resolve"]  # what a sweep would resolve
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    dirs = {next(line.split("dir:")[1].strip() for line in o.splitlines() if "dir: multirun/" in line) for o in outs}
    assert len(dirs) == 3, dirs


# ----------------------------------------------------------------------------- 6. a config's identity

@pytest.mark.parametrize("a,b", [("A" * 6100 + "1", "A" * 6100 + "2"), ("x" * 7000, "x" * 7001)])
def test_long_params_that_differ_never_read_the_same(a, b):
    pa, pb = tracking.param_value(a), tracking.param_value(b)
    assert pa != pb and len(pa) <= tracking.PARAM_LIMIT and len(pb) <= tracking.PARAM_LIMIT
    assert tracking.param_value("short") == "short"


def test_equal_configs_written_two_ways_share_one_fingerprint(tiny_data):
    from ablate import config
    base = [f"data.root={tiny_data}"]
    assert config.fingerprint(ablate.compose([*base, "train.lr=0.01"])) == \
        config.fingerprint(ablate.compose([*base, "train.lr=1e-2"]))
    assert config.fingerprint(ablate.compose([*base, "train.epochs=3"])) != \
        config.fingerprint(ablate.compose([*base, "train.epochs=4"]))


# ----------------------------------------------------------------------------- 7. sweep-level keys swept per job

@pytest.mark.parametrize("arg", ["tracking.experiment=abl,v2", "report.out=a,b", "tracking.grace_s=10,20"])
def test_a_sweep_level_key_cannot_vary_within_a_sweep(tmp_path, tiny_data, arg):
    out = run_cli(["-m", arg, "seed=0", f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.startswith("ablate:")]
    assert out.returncode == 2 and len(lines) == 1 and arg.split("=")[0] in lines[0]
    assert "No job was started" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()


# ----------------------------------------------------------------------------- 8. python -m ablate.ui

def test_the_ui_serves_from_this_interpreter_moves_off_a_busy_port_and_stops_with_sigterm(tmp_path, tiny_data):
    import signal
    import socket
    run_cli(["-m", "seed=0", f"data.root={tiny_data}", *FAST], cwd=tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # no activated environment: no `mlflow` on PATH
    proc = subprocess.Popen([sys.executable, "-m", "ablate.ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, line = time.time() + 60, ""
        while time.time() < deadline and "serving" not in line:
            line = proc.stdout.readline()
        assert f"on port {port}" not in line and "serving" in line, line
        served = int(line.rsplit(":", 1)[1].split()[0])
        for _ in range(120):  # the server answers on the port it printed
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", served)) == 0:
                    break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        time.sleep(1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", served)) != 0  # nothing left holding it
    finally:
        busy.close()
        if proc.poll() is None:
            proc.kill()
    assert "is in use" in proc.stderr.read()


# ----------------------------------------------------------------------------- 9. smaller ones

@pytest.mark.parametrize("arg", ["seed=true", "seed=1.5", "seeds.init=yes"])
def test_a_seed_must_be_an_integer(tiny_data, arg):
    with pytest.raises(ConfigError):
        ablate.compose([f"data.root={tiny_data}", arg])


def test_a_factor_string_keeps_quoted_spaces_and_says_how_it_splits():
    assert designs._overrides("+model.note='a b' train.lr=0.1", "f") == ["+model.note='a b'", "train.lr=0.1"]
    with pytest.raises(designs.DesignError, match=r"unclosed quote: a factor's string is split on spaces.*give a list"):
        designs._overrides("+model.note='a b", "hydra.sweeper.factors.f")


def test_a_report_over_runs_ablate_did_not_write_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("ablate")
    with mlflow.start_run():
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("acc", 0.9)
    from ablate import report
    assert report.main(["--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "not written by ablate" in err and "Traceback" not in err


def test_progress_false_hides_the_data_reading_bar(tmp_path, capsys):
    from ablate.data import items as reading
    from ablate.data import sources
    sources._read.cache_clear()
    items = [(f"{i}", i % 2) for i in range(25_000)]  # over the bar's 20,000-item threshold
    with pytest.raises(DataError):
        reading._items(items, "x", progress=False)
    assert "reading x" not in capsys.readouterr().err
