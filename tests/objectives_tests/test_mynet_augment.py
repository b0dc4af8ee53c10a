from __future__ import annotations

import torch

from objectives.training.augment import augment, random_erase, random_flip, random_shift
from spaces.mynet import AugmentConfig


def images(batch: int = 64) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)) + 0.1  # no zero pixel


def test_random_shift_moves_each_image_within_bounds() -> None:
    x = images()
    shifted = random_shift(x, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    moved = 0
    for original, out in zip(x[:, 0], shifted[:, 0], strict=True):
        windows = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[2:26, 2:26], original[2 + dy : 26 + dy, 2 + dx : 26 + dx])
        ]
        assert len(windows) == 1, "each image is a translated copy of itself"
        moved += windows[0] != (0, 0)
    assert moved > 40, "offsets are drawn per image"
    assert (shifted == 0).any(), "pixels shifted in are black"


def test_random_flip_mirrors_about_half_of_the_images() -> None:
    x = images(400)
    out = random_flip(x, torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert (mirrored | same).all() and 150 < mirrored.sum() < 250


def test_random_erase_blacks_out_one_rectangle_per_chosen_image() -> None:
    x = images(200)
    assert torch.equal(random_erase(x, 0.0, torch.Generator().manual_seed(0)), x)
    out = random_erase(x, 1.0, torch.Generator().manual_seed(0))
    for image in out[:, 0]:
        rows, cols = (image == 0).nonzero(as_tuple=True)
        assert len(rows) > 0
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width, "the erased pixels form one rectangle"
        assert 0.02 * 784 * 0.5 <= len(rows) <= 0.25 * 784 * 1.5
    half = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    assert 60 < (half == 0).flatten(1).any(1).sum() < 140


def test_augment_is_reproducible_from_its_generator_and_skips_what_is_off() -> None:
    x = images()
    cfg = AugmentConfig(shift=3, flip=True, erase=0.5)
    a = augment(x, cfg, torch.Generator().manual_seed(5))
    b = augment(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment(x, AugmentConfig(), torch.Generator()), x)
