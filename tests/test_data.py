"""Data through torchvision-style classes: real IDX and CIFAR-10 parsing, the user's
own classes, derived shapes and statistics, streaming, and the checks at load."""
import gzip
import stat

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.transforms.v2.functional import to_image

import ablate
from ablate import data, task
from ablate.data import items, sources
from ablate.errors import ConfigError, DataError
from conftest import REAL_DATA, make_digits, write_idx


def test_tensors_are_normalised_on_the_device(overrides):
    cfg = ablate.compose([*overrides, "data.train_subset=100"])
    d = data.load(data.checked(cfg), torch.device("cpu"))
    assert d.train.x.shape == (100, 1, 28, 28) and d.test.x.shape == (128, 1, 28, 28)
    raw = (d.train.x * cfg.data.std + cfg.data.mean) * 255
    assert torch.allclose(raw, raw.round(), atol=1e-3)  # undoes to whole pixel values


def test_torchvisions_arrays_are_what_its_items_give(tiny_data):
    """The fast path reads MNIST's .data/.targets; item by item gives the same tensors."""
    ds = MNIST(str(tiny_data), train=True)
    fast_x, fast_y = items._arrays(ds)
    slow_x, slow_y = items._items(ds, "mnist", progress=False)
    assert torch.equal(fast_x, slow_x) and torch.equal(fast_y, slow_y) and fast_x.shape == (512, 1, 28, 28)


def test_cifar10_parses_and_derives_its_shape_and_statistics(cifar10):
    cfg = ablate.compose(["data=cifar10", f"data.root={cifar10}", "data.download=false",
                          "data.mean=null", "data.std=null"])
    assert len(data.splits(data.checked(cfg)).train) == 200
    d = cfg.data
    assert (d.channels, d.height, d.width, d.num_classes) == (3, 32, 32, 10)  # classes from batches.meta
    loaded = data.load(data.checked(cfg), torch.device("cpu"))
    pixels = loaded.train.x * torch.tensor(list(d.std)).view(1, 3, 1, 1) + torch.tensor(list(d.mean)).view(1, 3, 1, 1)
    assert torch.allclose(pixels.mean((0, 2, 3)), torch.tensor(list(d.mean)), atol=1e-4)
    assert torch.allclose(loaded.train.x.std((0, 2, 3), unbiased=False), torch.ones(3), atol=2e-3)
    # the fast path's HWC -> CHW matches what CIFAR10 gives item by item (PIL images)
    ds = sources._read(sources._key(d))[0].dataset
    assert torch.equal(items._arrays(ds)[0][7], to_image(ds[7][0]).as_subclass(torch.Tensor))


class PILDigits(Dataset):
    """A user's data set whose items are PIL images, with no `.classes`."""

    def __init__(self, root, train=True, download=False, n=64):
        rng = np.random.default_rng(0 if train else 1)
        self.images, self.labels = make_digits(n, rng)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i].astype(np.uint8)), int(self.labels[i])


def test_a_users_set_with_pil_items_and_one_with_tensor_items(example_on_path):
    cfg = ablate.compose(["data._target_=test_data.PILDigits", "data.name=pil", "+data.n=64", "data.mean=null",
                          "data.std=null", "data.channels=null", "data.height=null", "data.width=null",
                          "data.num_classes=null"])
    assert len(data.splits(data.checked(cfg)).train) == 64
    assert (cfg.data.channels, cfg.data.height, cfg.data.num_classes) == (1, 28, 10)
    assert 0 < cfg.data.mean[0] < 1
    digits = ablate.compose(["experiment=digits"], config_dir=example_on_path / "conf")
    assert len(data.splits(data.checked(digits)).train) == 1438  # float tensors in [0, 1], used as they are
    assert (digits.data.channels, digits.data.height, digits.data.width, digits.data.num_classes) == (1, 8, 8, 10)
    assert data.load(data.checked(digits), torch.device("cpu")).test.x.shape == (359, 1, 8, 8)


def test_a_set_over_the_memory_limit_streams_through_the_same_engine(overrides):
    """memory_limit_mb=0 streams: training runs, and the test metrics of one model are
    the same whether the test split is held or streamed."""
    held = ablate.compose([*overrides, "step=7"])
    streamed = ablate.compose([*overrides, "step=7", "data.memory_limit_mb=0"])
    a, b = data.load(data.checked(held), torch.device("cpu")), data.load(data.checked(streamed), torch.device("cpu"))
    assert isinstance(a.test, data.Tensors) and isinstance(b.test, data.Stream)
    from ablate import engine
    model = ablate.build_model(held)
    the_task = task.build(held)
    assert engine.evaluate(model, a.test, the_task, 50) == pytest.approx(engine.evaluate(model, b.test, the_task, 50),
                                                                         rel=1e-6)
    result = ablate.train(streamed)
    assert len(result.history) == 2 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]


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
    assert len(data.splits(data.checked(cfg)).train) == 64
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_a_read_only_root_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        archives = tmp_path / "none"
        archives.mkdir()
        root = sources._from_archives(FashionMNIST, str(shared), str(archives))
        assert root == str(tmp_path / "home" / ".cache" / "ablate" / "data")
        assert list(shared.iterdir()) == []
    finally:
        shared.chmod(stat.S_IRWXU)


def test_a_subset_larger_than_the_data_is_refused(overrides):
    with pytest.raises(ConfigError, match="has only 512 images"):
        data.check_data(ablate.compose([*overrides, "data.train_subset=513"]))


# --- bad files: one line naming the file, before any run -----------------------------

@pytest.fixture
def mnist_copy(tmp_path, tiny_data):
    import shutil
    shutil.copytree(tiny_data / "MNIST", tmp_path / "MNIST")
    return tmp_path


def check_root(root, *extra):
    sources._read.cache_clear()
    return data.checked(ablate.compose([f"data.root={root}", "data.download=false", *extra]))


def test_a_label_outside_the_classes_names_the_label_file(mnist_copy):
    labels = mnist_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8 + 17] = 200  # item 17's label
    labels.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"label 200 of item 17 in .*train-labels-idx1-ubyte is outside the 10"):
        check_root(mnist_copy)


def test_a_truncated_image_file_is_corrupt_not_missing(mnist_copy):
    images = mnist_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is corrupt"):
        check_root(mnist_copy)


def test_a_missing_file_is_named(mnist_copy):
    (mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"files missing in .*: t10k-labels-idx1-ubyte"):
        check_root(mnist_copy)


def test_image_and_label_counts_must_agree(mnist_copy):
    write_idx(mnist_copy / "MNIST" / "raw", "train", *make_digits(100, np.random.default_rng(5)))
    labels = make_digits(90, np.random.default_rng(6))[1]
    import struct
    (mnist_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, 90) + labels.astype(np.uint8).tobytes())
    with pytest.raises(DataError, match="100 images but 90 labels"):
        check_root(mnist_copy)


@pytest.mark.realdata
@pytest.mark.skipif(not (REAL_DATA / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_DATA}/MNIST/raw (set ABLATE_DATA_DIR)")
def test_real_mnist_loads_with_its_known_sizes():
    cfg = ablate.compose([f"data.root={REAL_DATA}", "data.download=false"])
    d = data.load(data.checked(cfg), torch.device("cpu"))
    assert len(d.train) == 60_000 and len(d.test) == 10_000
    assert abs(d.train.x.mean().item()) < 0.01 and abs(d.train.x.std().item() - 1) < 0.01
