"""A careless user's input and a hostile file: one line naming the cause, exit 2, nothing partial left.

Each case is one the trust issue found printing a traceback or an unclear line (docs/delivery.md and
docs/engine.md describe the behaviour)."""

from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
import rpz_cli
from rpz_cli import assert_refused

from objectives.finetune.photos import MAX_PIXELS, load_photos
from objectives.mnist import binary_split, load_mnist
from objectives.mynet.data import load_fashion
from objectives.sources import IDX_FILES, DataError
from search.engine.checkpoints import CheckpointError, check_checkpoint
from search.engine.storage import StorageError, get_storage, study_dirname
from search.engine.study import max_workers

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

QUICK = ["--set", "epochs=3", "--set", "depth=0", "--set", "folds=1", "--quiet"]


def rpztune(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    return rpz_cli.rpztune(*args, cwd=cwd, check=check)


def test_more_workers_than_the_machine_can_run_are_refused_before_anything_is_written(tmp_path) -> None:
    too_many = max_workers() + 1
    result = rpztune(*RUN, "numpy-mlp", "--workers", str(too_many), "--trials", "1", cwd=tmp_path)
    assert_refused(result, f"--workers {too_many} is more than this machine can run: at most", tmp_path)
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_next_hint_is_shell_quoted_and_a_500_character_study_name_runs_and_exports(
    data_dir, tmp_path
) -> None:
    hostile = "a;touch PWNED #"
    result = rpztune(*RUN, "numpy-mlp", "--trials", "1", "--study", hostile, "--data", str(data_dir),
                     *QUICK, cwd=tmp_path, check=True)  # fmt: skip
    hint = next(line for line in result.stdout.splitlines() if line.startswith("next: "))
    argv = shlex.split(hint.removeprefix("next: "))
    assert argv == ["rpztune", "export", "--study", hostile, "--out", f"results/{study_dirname(hostile)}"]
    subprocess.run(["bash", "-c", f"true {shlex.join(argv[1:])}"], cwd=tmp_path, check=True)  # pasted
    assert not (tmp_path / "PWNED").exists()

    long_name = "s" * 500
    rpztune(*RUN, "numpy-mlp", "--trials", "1", "--study", long_name, "--data", str(data_dir), *QUICK,
            cwd=tmp_path, check=True)  # fmt: skip
    exported = rpztune("export", "--study", long_name, "--out", "out", cwd=tmp_path, check=True)
    assert (tmp_path / "out" / "numpy_nn.py").is_file(), exported.stdout
    assert len(study_dirname(long_name)) < 255


@pytest.mark.slow
def test_a_run_that_completes_no_trial_says_why(data_dir, tmp_path) -> None:
    result = rpztune(*RUN, "mynet", "--trials", "2", "--device", "cpu", "--data", str(data_dir),
                     "--set", "max_params=10", "--set", "epochs=1", "--set", "data_fraction=0.01", "--quiet",
                     cwd=tmp_path, check=True)  # fmt: skip
    assert "no trial completed; how the trials ended" in result.stdout
    assert "parameters exceed max_params=10" in result.stdout


@pytest.mark.slow
def test_a_failed_export_leaves_no_partial_folder_and_a_killed_refits_temporary_is_removed(
    data_dir, tmp_path
) -> None:
    rpztune(*RUN, "numpy-mlp", "--trials", "2", "--data", str(data_dir), *QUICK, cwd=tmp_path, check=True)
    folder = tmp_path / "studies-checkpoints" / "numpy-mlp"
    killed = "import os, sys; from pathlib import Path; from objectives.files import replace_atomically; "
    killed += "replace_atomically(Path(sys.argv[1]), lambda tmp: os._exit(9))"  # dies mid-write
    code = subprocess.run([sys.executable, "-c", killed, str(folder / "refit-00000.npz")],
                          env={**os.environ, "PYTHONPATH": str(rpz_cli.ROOT)}).returncode  # fmt: skip
    assert code == 9
    (leftover,) = [p for p in folder.iterdir() if p.name.startswith(".refit-00000.npz.")]
    rpztune("refit", "--study", "numpy-mlp", cwd=tmp_path, check=True)
    assert not leftover.exists()

    failed = rpztune("export", "--study", "numpy-mlp", "--out", "out", "--data", str(tmp_path / "nope"),
                     cwd=tmp_path)  # fmt: skip
    assert_refused(
        failed, f"data path {str(tmp_path / 'nope')!r} does not exist", tmp_path, opens_a_study=True
    )
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "no staging folder left"


@pytest.mark.slow
def test_an_export_onto_a_full_disk_is_one_line_and_writes_nothing(data_dir, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    rpztune(*RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir), *QUICK, cwd=tmp_path, check=True)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        result = rpztune("export", "--study", "numpy-mlp", "--out", str(disk / "out"), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("rpztune export: error: no space left on the device")
        assert "nothing partial was kept" in last and "Traceback" not in result.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(path, "w") as archive:  # torch.save's layout, with code in its pickle
        archive.writestr("archive/data.pkl", pickle.dumps(Payload()))
        archive.writestr("archive/version", "3\n")


def test_a_checkpoint_that_is_not_plain_tensors_is_one_line_naming_it_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "RAN"
    evil, truncated, noise = tmp_path / "evil.pt", tmp_path / "truncated.pt", tmp_path / "noise.pt"
    _malicious_checkpoint(evil, marker)
    truncated.write_bytes(evil.read_bytes()[:40])
    noise.write_bytes(np.random.default_rng(0).bytes(300))
    for path in (evil, truncated, noise):
        with pytest.raises(CheckpointError) as caught:
            check_checkpoint(path, what="trial 3 of 'mynet'")
        message = str(caught.value)
        assert "\n" not in message and f"checkpoint {path} does not load" in message
        assert "weights_only=False" not in message  # never the unsafe advice
    assert not marker.exists()
    assert "rpztune never unpickles" in str(
        pytest.raises(CheckpointError, check_checkpoint, evil, what="x").value
    )


def test_damaged_fashion_mnist_files_are_named(data_dir, tmp_path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        (raw / name).symlink_to(data_dir / "FashionMNIST" / "raw" / name)
    damaged = raw / "train-labels-idx1-ubyte"
    damaged.unlink()
    damaged.write_bytes(b"")
    with pytest.raises(DataError, match=rf"{damaged} is not an idx file \(0 bytes"):
        load_fashion(tmp_path, download=False)
    damaged.write_bytes(b"\x00\x00\x08\x01\x00\x00\xea\x60" + bytes(10))  # a header promising 60,000 labels
    with pytest.raises(DataError, match=rf"{damaged} has 18 bytes where its header promises 60008"):
        load_fashion(tmp_path, download=False)
    damaged.write_bytes(b"\x00\x00\x08\x07")  # torchvision asserts on 7 dimensions
    with pytest.raises(DataError, match="is not an idx file"):
        load_fashion(tmp_path, download=False)


def test_an_npz_without_the_pair_or_with_nan_images_or_text_labels_is_refused(tmp_path) -> None:
    x = np.zeros((40, 28, 28), np.uint8)
    y = np.array([1, 2, 3, 5] * 10)
    np.savez(tmp_path / "no49.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"hold no digit 4 \(labels found: 1, 2, 3, 5\)"):
        binary_split(load_mnist(tmp_path / "no49.npz"), (4, 9))
    nan = np.full((40, 28, 28), np.nan)
    np.savez(tmp_path / "nan.npz", x_train=nan, y_train=y, x_test=nan, y_test=y)
    with pytest.raises(DataError, match=r"train images must be pixel values in 0\.\.255"):
        load_mnist(tmp_path / "nan.npz")
    np.savez(tmp_path / "text.npz", x_train=x, y_train=np.array(["a"] * 40), x_test=x, y_test=y)
    with pytest.raises(DataError, match="train labels must be integers"):
        load_mnist(tmp_path / "text.npz")


def test_a_journal_url_on_a_file_that_is_no_journal_is_one_storage_error(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(StorageError, match=rf"{text} is not an Optuna journal file"):
        get_storage(f"journal:///{text}")
    journal = tmp_path / "ok.log"
    optuna.create_study(study_name="s", storage=get_storage(f"journal:///{journal}"))
    assert [s.study_name for s in optuna.get_all_study_summaries(get_storage(f"journal:///{journal}"))] == [
        "s"
    ]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (no pixel data: only its header is ever read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_photos_beyond_the_pixel_limit_are_skipped_and_counted_before_decoding(data_dir, tmp_path) -> None:
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for photo in sorted((data_dir / "dogs_and_cats" / label).iterdir())[:2]:
            (tmp_path / label / photo.name).symlink_to(photo)
    (tmp_path / "cat" / "bomb.png").write_bytes(_png_header(20_000, 20_000))  # 400 megapixels
    (tmp_path / "dog" / "scan.png").write_bytes(_png_header(6_000, 6_000))  # over MAX_PIXELS, under PIL's
    with pytest.warns(UserWarning, match=r"2 of 6 files under .* were skipped"):
        photos = load_photos(tmp_path)
    assert len(photos.y) == 4
    limit = f"the {MAX_PIXELS:,} a photo may have (MAX_PIXELS)"
    assert dict(photos.skipped) == {
        "cat/bomb.png": f"ValueError: more pixels than {limit}",
        "dog/scan.png": f"ValueError: 6000x6000 pixels, more than {limit}",
    }


@pytest.mark.slow
def test_a_study_resumed_with_another_space_or_sampler_is_refused_and_without_them_keeps_its_own(
    data_dir, tmp_path
) -> None:
    common = [*RUN, "numpy-mlp", "--trials", "1", "--data", str(data_dir), "--quiet"]
    rpztune(*common, "--set", "epochs=3", "--set", "folds=1", cwd=tmp_path, check=True)
    other_space = rpztune(*common, "--set", "epochs=5", "--set", "folds=1", cwd=tmp_path)
    assert_refused(
        other_space, "searches another space (epochs: 3 (this run: 5))", tmp_path, opens_a_study=True
    )
    other_sampler = rpztune(*common, "--sampler", "random", cwd=tmp_path)
    assert_refused(
        other_sampler, "searches with the sampler 'tpe', not 'random'", tmp_path, opens_a_study=True
    )
    rpztune(*common, cwd=tmp_path, check=True)  # no --set: the study's own space
    study = optuna.load_study(study_name="numpy-mlp", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    assert [t.params.get("epochs", t.user_attrs["config"]["epochs"]) for t in study.trials] == [3, 3]


@pytest.mark.slow
def test_a_run_onto_a_full_disk_ends_with_one_line_and_its_trial_failed(data_dir, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        result = rpztune(*RUN, "numpy-mlp", "--trials", "15", "--data", str(data_dir), "--quiet", cwd=disk)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("rpztune run: error: no space left on the device holding ")
        assert "ended FAIL; free space to go on" in result.stderr or "failed by the next run" in result.stderr
        leftovers = [
            p.name for p in (disk / "studies-checkpoints" / "numpy-mlp").iterdir() if p.name[0] == "."
        ]
        assert leftovers == [], "no partial checkpoint"
    finally:
        subprocess.run(["umount", str(disk)], check=True)
