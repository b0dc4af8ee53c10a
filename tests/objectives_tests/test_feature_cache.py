"""The on-disk backbone-feature cache: miss then hit, keys per backbone/resolution/data, atomic files."""

from __future__ import annotations

import pytest
import torch

from objectives.finetune.feature_cache import FeatureCache, weights_tag


def counting(value: float):
    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"train": torch.full((4, 8), value), "val": torch.full((2, 8), value)}

    return compute, calls


def test_a_miss_computes_and_stores_then_a_hit_reads_without_computing(tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    compute, calls = counting(1.0)
    first, hit = cache.get_or_compute("tf_efficientnet_lite0", 128, "fp1", "w1", compute)
    assert not hit and len(calls) == 1
    second, hit = cache.get_or_compute("tf_efficientnet_lite0", 128, "fp1", "w1", compute)
    assert hit and len(calls) == 1 and torch.equal(first["train"], second["train"])
    path = tmp_path / "tf_efficientnet_lite0" / "r128" / "w1-fp1.pt"
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["w1-fp1.pt"]  # no temp left


@pytest.mark.parametrize(
    "key", [("tf_efficientnet_lite1", 128, "fp1", "w1"), ("tf_efficientnet_lite0", 96, "fp1", "w1"),
            ("tf_efficientnet_lite0", 128, "fp2", "w1"), ("tf_efficientnet_lite0", 128, "fp1", "w2")],
)  # fmt: skip
def test_another_backbone_resolution_data_or_weights_is_a_miss(tmp_path, key) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_compute("tf_efficientnet_lite0", 128, "fp1", "w1", counting(1.0)[0])
    compute, calls = counting(2.0)
    features, hit = cache.get_or_compute(*key, compute)
    assert not hit and len(calls) == 1 and float(features["val"][0, 0]) == 2.0


def test_an_unreadable_cache_file_is_recomputed_and_replaced(tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    path = cache.path("resnet18", 96, "fp", "w")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    compute, calls = counting(3.0)
    assert cache.get_or_compute("resnet18", 96, "fp", "w", compute)[1] is False
    assert cache.get_or_compute("resnet18", 96, "fp", "w", compute)[1] is True and len(calls) == 1


def test_cache_keys_must_be_plain_names_and_weights_tags_follow_the_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="fingerprint must be a plain file-name part"):
        FeatureCache(tmp_path).path("resnet18", 96, "../x", "w")
    state = {"a": torch.zeros(3), "b": torch.ones(2)}
    assert weights_tag("src", state) == weights_tag("src", dict(state))
    assert weights_tag("src", state) != weights_tag("src", {**state, "a": torch.ones(3)})
    assert weights_tag("src", state) != weights_tag("other", state)


def test_workers_missing_the_same_features_compute_them_once(tmp_path) -> None:
    import threading
    import time

    started, calls = threading.Event(), []

    def slow() -> dict[str, torch.Tensor]:
        calls.append(1)
        started.set()
        time.sleep(0.5)
        return {"train": torch.ones(4, 8)}

    results = []
    first = threading.Thread(
        target=lambda: results.append(FeatureCache(tmp_path).get_or_compute("net", 96, "fp", "w", slow))
    )
    first.start()
    started.wait(5)
    second = FeatureCache(tmp_path).get_or_compute("net", 96, "fp", "w", slow)  # waits for the first
    first.join()
    assert len(calls) == 1 and second[1] is True and results[0][1] is False
    assert torch.equal(second[0]["train"], results[0][0]["train"])
