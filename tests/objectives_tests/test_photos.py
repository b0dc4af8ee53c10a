"""Photo folders and the lab's zip: decoding like the evaluator, corrupt files, unsafe zip entries."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision import transforms
from torchvision.datasets import ImageFolder

from objectives import DataError
from objectives.finetune.photos import find_photo_root, load_photos, safe_extract, seeded_split


@pytest.fixture
def small_folder(photos_dir, tmp_path) -> Path:
    """Three real photos per class, plus a truncated JPEG and a text file."""
    root = tmp_path / "pets"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for file in sorted((photos_dir / name).iterdir())[:3]:
            shutil.copy(file, root / name / file.name)
    data = (photos_dir / "dog" / sorted(os.listdir(photos_dir / "dog"))[5]).read_bytes()
    (root / "dog" / "broken.jpg").write_bytes(data[: len(data) // 3])
    (root / "cat" / "notes.txt").write_text("not a photo")
    return root


def test_load_photos_matches_the_evaluators_resize_and_to_tensor(small_folder) -> None:
    (small_folder / "dog" / "broken.jpg").unlink()
    (small_folder / "cat" / "notes.txt").unlink()
    photos = load_photos(small_folder)
    reference = ImageFolder(
        small_folder, transform=transforms.Compose([transforms.Resize((96, 96)), transforms.ToTensor()])
    )
    assert photos.classes == reference.classes == ["cat", "dog"]
    assert photos.x.dtype == torch.uint8 and photos.x.shape == (6, 3, 96, 96)
    for i in range(len(reference)):
        image, label = reference[i]
        assert int(photos.y[i]) == label
        assert torch.equal(photos.x[i].float() / 255, image)


def test_corrupt_and_non_image_files_are_skipped_with_a_warning_and_counted(small_folder) -> None:
    with pytest.warns(UserWarning, match="2 of 8 files .* not readable images"):
        photos = load_photos(small_folder)
    assert len(photos.y) == 6 and photos.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(f for f, _ in photos.skipped) == ["cat/notes.txt", "dog/broken.jpg"]


def test_the_labs_zip_loads_like_the_folder(small_folder, tmp_path) -> None:
    (small_folder / "dog" / "broken.jpg").unlink()
    (small_folder / "cat" / "notes.txt").unlink()
    archive = tmp_path / "dogs_and_cats.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted(small_folder.rglob("*.jpg")):
            handle.write(file, f"dogs_and_cats/{file.relative_to(small_folder)}")
    from_zip, from_folder = load_photos(archive), load_photos(small_folder)
    assert torch.equal(from_zip.x, from_folder.x) and from_zip.fingerprint == from_folder.fingerprint
    assert load_photos(archive).source == from_zip.source  # extracted once, then reused
    holder = tmp_path / "data"
    holder.mkdir()
    shutil.move(archive, holder / "dogs_and_cats.zip")
    assert load_photos(holder).fingerprint == from_folder.fingerprint  # a data folder holding the zip


@pytest.mark.parametrize("entry", ["../escape.jpg", "dogs_and_cats/../../escape.jpg", "/tmp/escape.jpg"])
def test_zip_entries_with_absolute_paths_or_dotdot_are_refused(entry, tmp_path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("dogs_and_cats/cat/ok.jpg", b"x")
        handle.writestr(entry, b"x")
    target = tmp_path / "out" / "inner"
    with pytest.raises(DataError, match="unsafe entry"):
        safe_extract(archive, target)
    assert not target.exists() and not (tmp_path / "out" / "escape.jpg").exists()
    with pytest.raises(DataError, match="unsafe entry"):
        load_photos(archive)


def test_missing_or_classless_data_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        find_photo_root(tmp_path / "nope")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="holds no photo classes"):
        find_photo_root(tmp_path)


def test_seeded_split_is_the_labs_80_20_and_reproducible() -> None:
    train, val = seeded_split(1500, 0.2, seed=0)
    assert len(train) == 1200 and len(val) == 300
    assert torch.equal(seeded_split(1500, 0.2, seed=0)[1], val)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1500))
    assert not torch.equal(seeded_split(1500, 0.2, seed=1)[1], val)


def test_max_images_keeps_a_seeded_subset_of_both_classes(photos_dir) -> None:
    photos = load_photos(photos_dir, max_images=24, seed=3)
    assert len(photos.y) == 24 and set(photos.y.tolist()) == {0, 1}
    assert load_photos(photos_dir, max_images=24, seed=3).fingerprint == photos.fingerprint
