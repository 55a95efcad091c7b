"""Shared fixtures: a tiny MNIST in torchvision's raw IDX layout, so the real
torchvision loading path runs without the real data, and a private MLflow store."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("ABLATE_DATA_DIR", REPO.parent / "shared" / "data"))

# xdist's workers share the machine's cores. A job that takes them all (torch's default,
# and ablate's without train.threads) then fights the other worker's job for them: a
# step-7 job beside one busy core took 21.6 s with 2 threads, 12.8 s with 1. Each job
# that a worker starts, in process or not, trains on one thread.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# A test is `slow` when it trains, starts a server, or runs ablate in a process of its
# own (each spends ~9.5 s importing torch and MLflow before it does anything). Told from
# what it uses, so a new test cannot forget the mark: a data fixture (directly or through
# another fixture), or one of these calls in its body. `pytest -m "not slow"` runs the
# rest: 104 of the suite's ~3000 test-seconds (measured at commit 9d7ab05).
SLOW_FIXTURES = {"tiny_data", "tiny_cifar", "cifar10", "overrides", "example_on_path"}
SLOW_CALLS = ("run_cli(", "ablate.train(", "job.train(", "start_server(", "subprocess.", "Popen(", "sweep(",
              "ablate.main")


def pytest_collection_modifyitems(config, items):
    import inspect
    for item in items:
        fn = getattr(item, "function", None)
        if fn is None or item.get_closest_marker("slow"):
            continue
        body = inspect.getsource(fn)
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or any(c in body for c in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_inherited_store(monkeypatch):
    """mlflow.set_tracking_uri, which a test's helper calls to read a store, also sets
    MLFLOW_TRACKING_URI, and ablate honours that variable: a job the test starts next
    would log where the helper last read. Each test starts without the variable, as a
    fresh shell does, and the helpers' reads leave it unset (the URI they set stays
    MLflow's in this process)."""
    import mlflow
    set_uri = mlflow.set_tracking_uri

    def set_here_only(uri):
        set_uri(uri)
        os.environ.pop("MLFLOW_TRACKING_URI", None)

    monkeypatch.setattr(mlflow, "set_tracking_uri", set_here_only)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test starts where a fresh process would: in the same folder, with no Hydra
    app's config left over. A Hydra app run in-process leaves HydraConfig set (its
    runtime.cwd is then the launch folder ablate sees), and a test that chdirs without
    monkeypatch would leak its folder to the next test on the same worker."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    cwd = os.getcwd()
    yield
    os.chdir(cwd)
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """IDX files as LeCun's originals: big-endian magic, dims, then uint8 data."""
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def make_digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k is a bright bar at row 2 + 2k, plus noise."""
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28))
    for i, k in enumerate(labels):
        images[i, 3 + 2 * k: 5 + 2 * k, 4:24] = 255
    return images, labels


def write_cifar10(root: Path, n_train: int, n_test: int, rng: np.random.Generator) -> dict:
    """A tiny CIFAR-10 in torchvision's on-disk format: five pickled training batches,
    a test batch and batches.meta under cifar-10-batches-py/, rows of 3,072 uint8 (the
    red plane, then green, then blue). Class k is a bright square whose place and colour
    depend on k. Returns each file's MD5: torchvision checks them against the real
    release's, which a test then tells it (the reading and parsing stay torchvision's)."""
    import hashlib
    import pickle
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 3, 32, 32))
        for i, k in enumerate(labels):
            r, c = 4 + 6 * (k % 4), 4 + 8 * (k // 4)
            images[i, k % 3, r:r + 6, c:c + 8] = 255
        return {"data": images.reshape(n, 3072).astype(np.uint8), "labels": labels.tolist()}

    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    files = {f"data_batch_{i + 1}": batch(n) for i, n in enumerate(sizes)}
    files["test_batch"] = batch(n_test)
    files["batches.meta"] = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                             "horse", "ship", "truck"]}
    for name, content in files.items():
        (folder / name).write_bytes(pickle.dumps(content))
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in files}


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> tuple[Path, dict]:
    """A data root with a 200/50-image CIFAR-10, and its files' MD5s."""
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10(root, 200, 50, np.random.default_rng(0))


@pytest.fixture
def cifar10(tiny_cifar, monkeypatch) -> Path:
    """torchvision.datasets.CIFAR10 accepting the tiny files' MD5s; returns the root."""
    from torchvision.datasets import CIFAR10
    root, md5 = tiny_cifar
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return root


EXAMPLE = REPO / "examples" / "digits"


@pytest.fixture
def example_on_path(monkeypatch):
    """The example project's module importable, as running from its folder makes it."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return EXAMPLE


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data root holding MNIST/raw with 512 train and 128 test images."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_idx(root / "MNIST" / "raw", "train", *make_digits(512, rng))
    write_idx(root / "MNIST" / "raw", "t10k", *make_digits(128, rng))
    return root


@pytest.fixture
def store(tmp_path) -> str:
    """An absolute sqlite tracking URI in a fresh directory."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def overrides(tiny_data, store) -> list[str]:
    """Overrides for a fast job on the tiny data set in a private store."""
    return [f"data.root={tiny_data}", f"tracking.uri={store}", "train.epochs=2",
            "train.batch_size=64", "progress=false", "data.download=false"]


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300):
    """`python -m ablate ARGS` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, backend: str | None = None, timeout: float = 90,
                 extra: list[str] = (), env: dict | None = None, port: int | None = None):
    """scripts/tracking_server.py as a user starts it: a real `mlflow server`
    process on loopback. Returns (url, process) once /health answers."""
    import time
    import urllib.request
    port = port or free_port()
    cmd = [sys.executable, str(REPO / "scripts" / "tracking_server.py"), "--dir", str(root),
           "--port", str(port), "--workers", "1"]
    if backend:
        cmd += ["--backend-store-uri", backend]
    root.parent.mkdir(parents=True, exist_ok=True)
    log = open(root.parent / f"server-{port}.log", "w")  # noqa: SIM115  the server writes it until stopped
    proc = subprocess.Popen([*cmd, *extra], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return url, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server did not answer in {timeout} s: {Path(log.name).read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def preempt_after(epoch: int, cfg, monkeypatch) -> None:
    """Train `cfg` until its checkpoint after `epoch` is written, then stop it with
    SystemExit, as submitit's preemption handler does."""
    import ablate
    from ablate import checkpoint
    real_save = checkpoint.save

    def save_then_preempt(path, state):
        real_save(path, state)
        if state.epoch == epoch:
            raise SystemExit("preempted")

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save_then_preempt)
        with pytest.raises(SystemExit):
            ablate.train(cfg)
