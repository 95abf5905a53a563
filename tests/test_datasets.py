"""Every data set loader on small files written in that data set's distributed layout, the
npz checks (one line per malformed file), and the seeded stratified test split."""

import gzip
import io
import os
import pickle
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from datasets import DATASETS, get_dataset_info, load_dataset
from datasets.cifar import load_cifar10, load_cifar100
from datasets.mnist import load_fashionmnist, load_mnist
from datasets.npz import describe_npz
from datasets.splits import split_train_test
from datasets.tabular import load_purchase100, load_texas100
from utils.errors import UsageError

RNG = np.random.default_rng(0)


def _images(n, shape=(3, 32, 32)):
    return RNG.integers(0, 256, (n, *shape), dtype=np.uint8)


def _write_cifar_batch(path, images, labels, label_key):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:  # as the distributed batches: bytes keys, flat rows
        pickle.dump({b"data": images.reshape(len(images), -1), label_key: list(labels),
                     b"filenames": [b"x.png"] * len(images)}, f, protocol=2)


def test_cifar100_reads_python_batches_with_fine_labels(tmp_path):
    x_train, x_test = _images(7), _images(3)
    fine, coarse = RNG.integers(0, 100, 7), RNG.integers(0, 20, 7)
    folder = tmp_path / "cifar-100-python"
    _write_cifar_batch(str(folder / "train"), x_train, fine, b"fine_labels")
    with open(folder / "train", "rb") as f:
        batch = pickle.load(f)
    batch[b"coarse_labels"] = list(coarse)  # both label kinds, as the real file
    with open(folder / "train", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    _write_cifar_batch(str(folder / "test"), x_test, [5, 99, 0], b"fine_labels")
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple"] * 100}))
    data = load_cifar100(str(tmp_path), download=False)
    assert data["train_x"].dtype == torch.uint8 and data["train_x"].shape == (7, 3, 32, 32)
    assert torch.equal(data["train_x"], torch.from_numpy(x_train))
    assert data["train_y"].tolist() == list(fine) and data["test_y"].tolist() == [5, 99, 0]


def test_cifar_batches_missing_or_of_the_other_cifar(tmp_path):
    with pytest.raises(UsageError, match="cifar-100-python lacks train, test"):
        load_cifar100(str(tmp_path), download=False)
    folder = tmp_path / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _write_cifar_batch(str(folder / name), _images(2), [1, 2], b"fine_labels")
    with pytest.raises(UsageError, match="not a CIFAR-10 python batch"):
        load_cifar10(str(tmp_path), download=False)


def _idx(array):
    """The idx encoding of a uint8 array: magic 0 0 8 ndim, big-endian dims, bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(raw, n_train=6, n_test=4, gz=False):
    raw.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": _images(n_train, (28, 28)),
              "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train).astype(np.uint8),
              "t10k-images-idx3-ubyte": _images(n_test, (28, 28)),
              "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test).astype(np.uint8)}
    for name, a in arrays.items():
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(_idx(a))
        else:
            (raw / name).write_bytes(_idx(a))
    return arrays


@pytest.mark.parametrize("loader,folder,gz", [(load_mnist, "MNIST", False),
                                              (load_mnist, "MNIST", True),
                                              (load_fashionmnist, "FashionMNIST", True)])
def test_mnist_style_idx_files_raw_and_gz(tmp_path, loader, folder, gz):
    arrays = _write_mnist(tmp_path / folder / "raw", gz=gz)
    data = loader(str(tmp_path), download=False)
    assert data["train_x"].shape == (6, 1, 28, 28) and data["test_x"].shape == (4, 1, 28, 28)
    assert np.array_equal(data["train_x"][:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert data["test_y"].dtype == torch.int64
    assert data["test_y"].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_missing_or_truncated_files(tmp_path):
    with pytest.raises(UsageError, match="MNIST/raw lacks train-images-idx3-ubyte"):
        load_mnist(str(tmp_path), download=False)
    _write_mnist(tmp_path / "MNIST" / "raw")
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UsageError, match="t10k-images-idx3-ubyte is truncated"):
        load_mnist(str(tmp_path), download=False)
    path.write_bytes(b"\x00\x00\x0d\x03rest")  # float idx, not MNIST's unsigned bytes
    with pytest.raises(UsageError, match="not an idx file of unsigned bytes"):
        load_mnist(str(tmp_path), download=False)


def _purchase_table(n, features=600):
    labels = np.arange(n) % 100 + 1  # 1 .. 100, as distributed
    return np.c_[labels, RNG.integers(0, 2, (n, features))]


def _tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _csv(table):
    return "\n".join(",".join(map(str, row)) for row in table) + "\n"


def test_purchase100_from_its_file_or_its_tarball(tmp_path):
    table = _purchase_table(250)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "dataset_purchase").write_text(_csv(table))
    data = load_purchase100(str(tmp_path / "a"), download=False)
    assert data["x"].shape == (250, 600) and data["x"].dtype == torch.uint8
    assert np.array_equal(data["x"].numpy(), table[:, 1:])
    assert data["y"].tolist() == list(table[:, 0] - 1)  # labels 0 .. 99
    (tmp_path / "b").mkdir()
    _tar(tmp_path / "b" / "dataset_purchase.tgz", {"dataset_purchase": _csv(table)})
    again = load_purchase100(str(tmp_path / "b"), download=False)
    assert torch.equal(again["x"], data["x"]) and (tmp_path / "b" / "dataset_purchase").is_file()


def test_texas100_in_both_layouts(tmp_path):
    feats = RNG.integers(0, 2, (30, 6169))
    labels = np.arange(30) % 100 + 1
    (tmp_path / "a" / "dataset_texas").mkdir(parents=True)  # ML Privacy Meter's layout
    (tmp_path / "a" / "dataset_texas" / "feats").write_text(_csv(feats))
    (tmp_path / "a" / "dataset_texas" / "labels").write_text("\n".join(map(str, labels)) + "\n")
    data = load_texas100(str(tmp_path / "a"), download=False)
    assert data["x"].shape == (30, 6169) and np.array_equal(data["x"].numpy(), feats)
    assert data["y"].tolist() == list(labels - 1)
    (tmp_path / "b").mkdir()  # the tarball as distributed: texas/100/{feats,labels}
    _tar(tmp_path / "b" / "dataset_texas.tgz",
         {"texas/100/feats": _csv(feats), "texas/100/labels": "\n".join(map(str, labels))})
    assert torch.equal(load_texas100(str(tmp_path / "b"), download=False)["x"], data["x"])


def test_tabular_errors_name_the_files_and_their_source(tmp_path):
    with pytest.raises(UsageError) as err:
        load_purchase100(str(tmp_path), download=False)
    msg = str(err.value)
    assert "dataset_purchase.tgz" in msg and "comp.nus.edu.sg/~reza/files" in msg
    assert "privacytrustlab/datasets" in msg and "\n" not in msg
    (tmp_path / "dataset_purchase").write_text(_csv(_purchase_table(5, features=599)))
    with pytest.raises(UsageError, match="has 600 columns; expected 601"):
        load_purchase100(str(tmp_path), download=False)
    bad = _purchase_table(5)
    bad[0, 0] = 101
    (tmp_path / "dataset_purchase").write_text(_csv(bad))
    with pytest.raises(UsageError, match="labels 2 .. 101; expected 1 .. 100"):
        load_purchase100(str(tmp_path), download=False)
    with pytest.raises(UsageError, match="texas/100/feats"):
        load_texas100(str(tmp_path), download=False)


def test_stratified_test_split_is_seeded_proportional_and_disjoint():
    labels = np.r_[np.zeros(7), np.ones(13), np.full(80, 2)].astype(np.int64)
    train, test = split_train_test(labels, 0.25, seed=3)
    assert len(test) == 25 and np.bincount(labels[test]).tolist() == [2, 3, 20]
    assert np.array_equal(np.sort(np.r_[train, test]), np.arange(100))
    again = split_train_test(labels, 0.25, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split_train_test(labels, 0.25, seed=4)[1], test)


def test_load_dataset_splits_tabular_data_and_checks_its_size(tmp_path, monkeypatch):
    (tmp_path / "dataset_purchase").write_text(_csv(_purchase_table(300)))
    with pytest.raises(UsageError, match="DATASET.ROOT: purchase100 has 300 records, "
                                         "expected 197324"):
        load_dataset("purchase100", str(tmp_path), False)
    monkeypatch.setitem(DATASETS, "purchase100",
                        replace(DATASETS["purchase100"], num_records=300))
    data = load_dataset("purchase100", str(tmp_path), False, test_fraction=0.1, seed=1)
    assert len(data["test_y"]) == 30 and len(data["train_y"]) == 270
    assert np.bincount(data["test_y"].numpy()).max() == 1  # 3 per class -> spread evenly
    table = _purchase_table(300)
    assert np.array_equal(data["test_y"].numpy(), table[data["test_records"], 0] - 1)
    assert data["mean"] == () and data["train_x"].dtype == torch.uint8


# ---- npz: a user's own data set ------------------------------------------------------------

def _save(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _valid(x_train=None, x_test=None, **extra):
    arrays = {"x_train": _images(12, (20, 20)) if x_train is None else x_train,
              "y_train": np.arange(12) % 4,
              "x_test": _images(6, (20, 20)) if x_test is None else x_test,
              "y_test": np.arange(6) % 4}
    arrays.update(extra)
    return arrays


@pytest.mark.parametrize("shape,to_nchw", [((20, 20), lambda a: a[:, None]),
                                           ((20, 20, 3), lambda a: a.transpose(0, 3, 1, 2)),
                                           ((3, 20, 20), lambda a: a)])
def test_npz_image_layouts(tmp_path, shape, to_nchw):
    x_train, x_test = _images(12, shape), _images(6, shape)
    path = _save(tmp_path / "d.npz", **_valid(x_train, x_test))
    record = to_nchw(x_train).shape[1:]
    info = describe_npz(path)
    assert info.shape == record and info.num_classes == 4 and info.split_sizes(-1) == (12, 6)
    data = load_dataset("npz", "", False, path=path)
    assert data["train_x"].dtype == torch.uint8
    assert np.array_equal(data["train_x"].numpy(), to_nchw(x_train))
    assert np.array_equal(data["test_x"].numpy(), to_nchw(x_test))
    scaled = to_nchw(x_train) / 255.0  # the data set's normalisation: its train split's
    assert np.allclose(data["mean"], scaled.mean((0, 2, 3)), atol=1e-4)
    assert np.allclose(data["std"], scaled.std((0, 2, 3)), atol=1e-4)


def test_npz_feature_vectors(tmp_path):
    x = RNG.random((12, 9)).astype(np.float64)
    path = _save(tmp_path / "f.npz", **_valid(x, RNG.random((6, 9)).astype(np.float32)))
    info = get_dataset_info("npz", path)
    assert info.shape == (9,) and not info.is_image and info.mean == ()
    data = load_dataset("npz", "", False, path=path)
    assert data["train_x"].dtype == torch.float32 and torch.allclose(
        data["train_x"], torch.from_numpy(x).float())


MALFORMED = [
    ({"x_test": None}, "lacks 'x_test'; expected arrays x_train, y_train, x_test, y_test"),
    ({"x_train": RNG.random((12, 20, 20))}, "'x_train' must be uint8 images (0 .. 255); got float64"),
    ({"x_train": RNG.integers(0, 2, (12, 9))}, "'x_train' must be float feature vectors (n, d)"),
    ({"x_train": _images(12, (2, 2, 2, 2))}, "'x_train' must be (n, H, W), (n, H, W, C)"),
    ({"x_train": _images(12, (3, 3, 3))}, "'x_train' must be images whose channels"),
    ({"x_train": _images(12, (20, 16))}, "'x_train' must be square images (H == W)"),
    ({"x_test": _images(6, (16, 16))}, "'x_test' must be uint8 records shaped as x_train's (20, 20)"),
    ({"y_train": np.arange(11) % 4}, "'y_train' must be (12,) integer labels, one per record"),
    ({"y_test": (np.arange(6) % 4).astype(np.float32)}, "'y_test' must be (6,) integer labels"),
    ({"y_train": np.arange(12) % 4 - 1}, "'y_train' must be labels in 0 .. 2"),
    ({"y_test": np.arange(6) % 4 + 1}, "'y_test' must be labels in 0 .. 3 (the classes of y_train)"),
    ({"x_test": _images(0, (20, 20)), "y_test": np.zeros(0, np.int64)},
     "'x_test' must be at least one record"),
]


@pytest.mark.parametrize("change,message", MALFORMED, ids=[m[:30] for _, m in MALFORMED])
def test_npz_malformed_files_get_one_line(tmp_path, change, message):
    arrays = {k: v for k, v in {**_valid(), **change}.items() if v is not None}
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError) as err:
        describe_npz(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("DATASET.PATH: ")


def test_npz_that_is_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(UsageError, match="DATASET.PATH: .*x.npz is not a readable .npz"):
        describe_npz(str(tmp_path / "x.npz"))
