"""Trial checkpoints: keep-top pruning, atomic writes under SIGKILL, and loud errors for bad checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import rpz_cli
import torch

from search.engine.checkpoints import CheckpointError, KeepTopCheckpoints, check_checkpoint

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

ROOT = Path(__file__).resolve().parents[2]


def _completed_trial(study: optuna.Study, folder: Path, value: float) -> optuna.trial.FrozenTrial:
    """Tell ``value`` for a trial whose checkpoint file exists, as an objective would leave it."""
    trial = study.ask()
    name = f"trial-{trial.number:05d}.pt"
    torch.save({"w": torch.full((2,), value)}, folder / name)
    trial.set_user_attr("checkpoint", name)
    return study.tell(trial, value)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_keep_top_keeps_only_the_best_k_checkpoints_and_always_the_best(tmp_path, direction) -> None:
    study = optuna.create_study(direction=direction)
    keep = KeepTopCheckpoints(tmp_path, k=2)
    values = [0.5, 0.3, 0.7, 0.2, 0.9, 0.1, 0.6]
    sign = 1 if direction == "minimize" else -1
    for i, value in enumerate(values):
        keep(study, _completed_trial(study, tmp_path, value))
        best_k = sorted(range(i + 1), key=lambda n: sign * values[n])[:2]
        on_disk = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("trial-*.pt"))
        assert on_disk == sorted(best_k), (i, on_disk)
        assert (tmp_path / study.best_trial.user_attrs["checkpoint"]).is_file()


def test_keep_top_ignores_pruned_trials_and_never_deletes_the_best_on_a_tie(tmp_path) -> None:
    study = optuna.create_study(direction="minimize")
    keep = KeepTopCheckpoints(tmp_path, k=1)
    for value in (0.4, 0.4, 0.4):
        keep(study, _completed_trial(study, tmp_path, value))
    pruned = study.ask()
    keep(study, study.tell(pruned, state=optuna.trial.TrialState.PRUNED))
    assert (tmp_path / study.best_trial.user_attrs["checkpoint"]).is_file()
    assert len(list(tmp_path.glob("trial-*.pt"))) == 1


@pytest.mark.slow
def test_keep_top_through_the_real_command_leaves_k_checkpoints(data_dir, tmp_path) -> None:
    args = [*RUN, "numpy-mlp", "--data", str(data_dir), "--trials", "5", "--seed", "1", "--pruner", "none"]
    args += ["--set", "epochs=3", "--keep-top", "2", "--quiet"]
    rpz_cli.rpztune(*args, cwd=tmp_path)
    study = optuna.load_study(study_name="numpy-mlp", storage=f"sqlite:///{tmp_path / 'studies.db'}")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 5
    folder = tmp_path / "studies-checkpoints" / "numpy-mlp"
    best_two = sorted(complete, key=lambda t: (t.value, t.number))[:2]
    assert sorted(p.name for p in folder.glob("trial-*.npz")) == sorted(
        t.user_attrs["checkpoint"] for t in best_two
    )


# The child writes a new checkpoint over the old one and stops (announcing it on stdout) either in the middle
# of writing the bytes or after writing them but before the rename; the parent then SIGKILLs it.
_WRITER = """
import os, sys, time
from pathlib import Path
import numpy as np, torch
stage, kind, path = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def stop(where):
    print(where, flush=True)
    time.sleep(600)

if stage == "mid-write":
    real_save, real_savez = torch.save, np.savez
    def half_then_stop(real, obj, handle, **arrays):
        import io
        buffer = io.BytesIO()
        real(buffer, **arrays) if arrays else real(obj, buffer)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        stop("mid-write")
    torch.save = lambda obj, handle, *a, **k: half_then_stop(real_save, obj, handle)
    np.savez = lambda handle, **arrays: half_then_stop(real_savez, None, handle, **arrays)
else:
    os.replace = lambda src, dst: stop("before-rename")

new = {"w": torch.full((1000,), 2.0)}
if kind == "torch":
    from objectives.training.fit import save_state
    save_state(new, path)
else:
    from nn_numpy import Linear, save_model
    layer = Linear(1000, 1)
    layer.W[:] = 2.0
    save_model(path, [layer])
"""


def _old_checkpoint(kind: str, folder: Path) -> Path:
    if kind == "torch":
        path = folder / "trial-00001.pt"
        torch.save({"w": torch.full((1000,), 1.0)}, path)
    else:
        from nn_numpy import Linear, save_model

        path = folder / "trial-00001.npz"
        layer = Linear(1000, 1)
        layer.W[:] = 1.0
        save_model(path, [layer])
    return path


def _first_weight(kind: str, path: Path) -> float:
    if kind == "torch":
        return float(torch.load(path, weights_only=True)["w"][0])
    with np.load(path) as archive:
        return float(archive["W0"][0, 0])


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("stage", ["mid-write", "before-rename"])
@pytest.mark.slow
def test_a_writer_killed_mid_checkpoint_leaves_the_old_checkpoint_intact(tmp_path, stage, kind) -> None:
    path = _old_checkpoint(kind, tmp_path)
    old_bytes = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), stage, kind, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        announced = child.stdout.readline().strip()
        assert announced == stage, child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert path.read_bytes() == old_bytes
    assert _first_weight(kind, check_checkpoint(path, what="the old best")) == 1.0
    (leftover,) = [p for p in tmp_path.iterdir() if p != path]  # the new bytes went to a temp file
    assert leftover.name.startswith(f".{path.name}.")
    if stage == "mid-write":
        with pytest.raises(CheckpointError, match=r"does not load"):
            check_checkpoint(leftover.rename(tmp_path / f"partial{path.suffix}"), what="a partial write")
    else:
        assert _first_weight(kind, leftover.rename(tmp_path / f"whole{path.suffix}")) == 2.0


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_check_checkpoint_names_the_owner_and_file_of_a_missing_or_corrupt_checkpoint(
    tmp_path, suffix
) -> None:
    path = tmp_path / f"trial-00003{suffix}"
    with pytest.raises(CheckpointError, match=rf"trial 3 of 'x': checkpoint {path} is missing"):
        check_checkpoint(path, what="trial 3 of 'x'")
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=rf"trial 3 of 'x': checkpoint {path} does not load"):
        check_checkpoint(path, what="trial 3 of 'x'")
    with pytest.raises(CheckpointError, match="recorded no checkpoint"):
        check_checkpoint(None, what="trial 3 of 'x'")


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_keep_top_tells_which_values_could_still_be_kept(tmp_path, direction) -> None:
    study = optuna.create_study(direction=direction)
    keep = KeepTopCheckpoints(tmp_path, k=2)
    sign = 1 if direction == "minimize" else -1
    for value in (0.5, 0.3):
        assert keep.could_keep(sign * 9.0)  # fewer than k completed: any value could be kept
        keep(study, _completed_trial(study, tmp_path, sign * value))
    assert not keep.could_keep(sign * 9.0)  # k completed: a worse value would be deleted
    keep(study, _completed_trial(study, tmp_path, sign * 0.7))
    assert keep.could_keep(sign * 0.5) and keep.could_keep(sign * 0.1)  # a tie with the k-th, a better one
    assert not keep.could_keep(sign * 0.51)
