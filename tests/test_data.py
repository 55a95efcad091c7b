"""Data loading through torchvision: real IDX parsing, archives, subsets, errors."""
import gzip
import stat

import numpy as np
import pytest
import torch

import ablate
from ablate import data
from ablate.config import ConfigError
from conftest import REAL_DATA, make_digits, write_idx


def test_tensors_are_normalised_on_the_device(overrides):
    cfg = ablate.compose(overrides + ["data.train_subset=100"])
    d = data.load(cfg, torch.device("cpu"))
    assert d.train_x.shape == (100, 1, 28, 28) and d.test_x.shape == (128, 1, 28, 28)
    raw = (d.train_x * cfg.data.std + cfg.data.mean) * 255
    assert torch.allclose(raw, raw.round(), atol=1e-3)  # undoes to whole pixel values


def test_fashion_mnist_from_debian_style_archives(tmp_path):
    archives, root = tmp_path / "debian", tmp_path / "root"
    write_idx(archives, "train", *make_digits(64, np.random.default_rng(1)))
    write_idx(archives, "t10k", *make_digits(32, np.random.default_rng(2)))
    for f in list(archives.iterdir()):
        with open(f, "rb") as fin, gzip.open(f"{f}.gz", "wb") as fout:
            fout.write(fin.read())
        f.unlink()
    cfg = ablate.compose(["data=fashion_mnist", f"data.root={root}", f"data.archives={archives}",
                          "data.download=false"])
    assert data.check(cfg) == 64
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_a_read_only_root_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        cls = data.DATASETS["fashion_mnist"]
        archives = tmp_path / "none"
        archives.mkdir()
        root = data._from_archives(cls, str(shared), str(archives))
        assert root == str(tmp_path / "home" / ".cache" / "ablate" / "data")
        assert list(shared.iterdir()) == []
    finally:
        shared.chmod(stat.S_IRWXU)


def test_a_subset_larger_than_the_data_is_refused(overrides):
    with pytest.raises(ConfigError, match="has only 512 images"):
        data.check(ablate.compose(overrides + ["data.train_subset=513"]))


@pytest.mark.realdata
@pytest.mark.skipif(not (REAL_DATA / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_DATA}/MNIST/raw (set ABLATE_DATA_DIR)")
def test_real_mnist_loads_with_its_known_sizes():
    cfg = ablate.compose([f"data.root={REAL_DATA}", "data.download=false"])
    d = data.load(cfg, torch.device("cpu"))
    assert len(d.train_x) == 60_000 and len(d.test_x) == 10_000
    assert abs(d.train_x.mean().item()) < 0.01 and abs(d.train_x.std().item() - 1) < 0.01
