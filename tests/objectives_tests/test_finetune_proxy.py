"""The leaderboard proxy: 0.6/0.3/0.1 arithmetic, renormalisation without NEW, the seeded condition bank."""

from __future__ import annotations

import pytest
import torch

from objectives.finetune.proxy import CONDITIONS, condition_bank, proxy_score, proxy_weights


def test_proxy_score_weights_orig_aug_new_like_the_leaderboard() -> None:
    assert proxy_score(1.0, 0.5, 0.0) == pytest.approx(0.75)
    assert proxy_score(0.9, 0.8, 0.7) == pytest.approx(0.6 * 0.9 + 0.3 * 0.8 + 0.1 * 0.7)


def test_without_new_data_the_weights_renormalise_to_orig_and_aug_and_say_so() -> None:
    assert proxy_score(0.9, 0.6) == pytest.approx((0.6 * 0.9 + 0.3 * 0.6) / 0.9)
    weights, note = proxy_weights(False)
    assert weights == pytest.approx({"orig": 2 / 3, "aug": 1 / 3})
    assert "renormalised" in note and "new_data" in note
    assert proxy_weights(True)[0] == {"orig": 0.6, "aug": 0.3, "new": 0.1}


def test_proxy_score_rejects_accuracies_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="aug accuracy must lie in"):
        proxy_score(0.5, 1.5)


def test_condition_bank_is_seeded_and_changes_every_image() -> None:
    x = torch.randint(0, 256, (20, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bank, names = condition_bank(x, copies=3, seed=7)
    assert bank.shape == (60, 3, 96, 96) and bank.dtype == torch.uint8 and len(names) == 60
    again, same_names = condition_bank(x, copies=3, seed=7)
    assert torch.equal(bank, again) and names == same_names
    assert not torch.equal(condition_bank(x, copies=3, seed=8)[0], bank)
    assert {n.split("(")[0] for n in names} == set(CONDITIONS)
    changed = (bank.view(3, 20, -1).float() - x.view(1, 20, -1).float()).abs().mean(-1)
    assert (changed > 0).all()
