"""Benchmark of ``rpztune run --timeout T``'s pipeline against the old search-then-export, per budget.

Usage: ``python bench/budget.py [--cells numpy-mlp:120,numpy-mlp:600,mynet:1200,finetune:1200]
[--seeds 0,1] [--data PATH] [--workdir bench-budget] [--scale F] [--workers N] [--hog-seed 1]
[--finetune-test 500] [--new-photos DIR] [--keep-top K] [--arms pipeline,search-then-export]
[--set TASK:KEY=VALUE ...]``
(``--set`` changes the task's space: for smoke runs, e.g. ``--set finetune:max_images=300``).

A cell is one task, one budget T (seconds, times ``--scale``) and one seed. Each cell runs two arms one after
the other, each in its own fresh folder (SQLite storage, checkpoints, feature cache ``RPZTUNE_CACHE``), with
the same seed and data, through the real command line (subprocesses of ``python -m search.cli``). An empty
feature cache per arm: a finetune arm computes its backbone features inside its budget, as a first run does,
and neither arm inherits the other's.

- **pipeline**: ``rpztune run TASK --timeout T --seed S --data D`` (search, confirm the top K against the
  baseline, refit, ensemble choice), then ``rpztune export``;
- **search-then-export**: the same with ``--stages search`` (today's old behaviour), then ``rpztune export``
  (the best single-split trial).

The arms alternate which goes first from seed to seed. Only the ``run`` command is timed
(``time.monotonic`` around the subprocess, Python's start-up included); the export and the scoring are not
part of the budget. For the mynet and finetune cells of ``--hog-seed`` a CPU-bound hog process
(``python -c "while True: pass"``) starts T/2 into each arm's run and is killed when that run ends.

Per arm it reports the wall time against the budget; the figure the run *showed* (the confirmed mean ± sd of
the ``export writes ...`` line, the ensemble's confirmation figure when the pipeline chose one, or the
single-split value); the exported model's figure on data the run never saw; and the baseline trial's own
(user attr ``baseline``) validation value and held-out figure (``rpztune export --trial N --single``, scored
the same way: export writes its refit when it is the refitted winner; missing when ``--keep-top`` deleted its
checkpoint). The held-out figures:

- numpy-mlp: the test error of the exported weights on the public MNIST test split's 4/9 images (the
  ``test_error`` export writes into ``winner.json``, computed on the written weights);
- mynet: the accuracy of the exported ``pytorch_cnn.py`` + ``model.pt`` (imported, ``MyNet()``, the lab's
  ``classify``; an ensemble export too) on the FashionMNIST test images;
- finetune: ``--finetune-test`` photos (half per class, seeded; ``bench/fidelity.py``'s ``split_photos``,
  symbolic links under the workdir) are held out, the run gets the rest as ``--data``; the exported
  ``pytorch_cnn.py`` + ``finetuned.pt`` is scored on them: ORIG, AUG (two condition-bank copies, seed 0) and
  NEW (only with ``--new-photos DIR``: photos from another source; the run never sees them), combined as the
  leaderboard's 0.6/0.3/0.1 (without NEW: 2/3 ORIG + 1/3 AUG, ``objectives.finetune.proxy``).

For numpy-mlp and mynet single-model exports ``rpztune evaluate`` is run too as a cross-check (it scores the
weights export writes, the refit when stored: test_error, test_accuracy); a disagreement is printed. (For
finetune it would run the whole net over every held-out photo again: the bench scores a single exported net
by its head on pooled backbone features, computed once per backbone state and checked against the whole
net's logits on a few photos.)

Resumable per cell: a finished cell's result is ``WORKDIR/results/<cell>.json`` and a rerun skips it; a cell
killed part-way is rerun from scratch in a fresh ``WORKDIR/cells/<cell>/attempt-N`` (older attempts are
deleted). A cell whose product command crashed is stored with its errors: delete its JSON to rerun it. The
default cells take 2 arms × 2 seeds × (120 + 600 + 1200 + 1200) s ≈ 3.5 h of budgets alone, plus exports and
scoring (about a minute per arm; a fine-tuned finetune export's held-out pass takes minutes on 2 loaded
cores), so about 3.7 h: ``--scale 0.8`` (or fewer ``--cells``) for a 3-hour slot, ``--scale 0.1`` for a
smoke run. Not part of the test suite (pytest collects ``tests/`` only).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

DEFAULT_CELLS = "numpy-mlp:120,numpy-mlp:600,mynet:1200,finetune:1200"
ARMS = ("pipeline", "search-then-export")
HOG_TASKS = ("mynet", "finetune")
HOG = "while True: pass"


@dataclass(frozen=True)
class TaskFigures:
    """How a task's figures read: the validation metric, the held-out figure, and which way is better."""

    metric: str
    held_out: str
    lower_is_better: bool
    weights: str  # the exported weights file


TASKS = {
    "numpy-mlp": TaskFigures("val_error", "test_error", True, "numpy_nn_weights.npz"),
    "mynet": TaskFigures("val_accuracy", "test_accuracy", False, "model.pt"),
    "finetune": TaskFigures("proxy", "proxy", False, "finetuned.pt"),
}
EXPORT_CLASS = {"mynet": "MyNet", "finetune": "FinetuneNet"}


@dataclass(frozen=True)
class Cell:
    task: str
    budget: float  # seconds, scaled
    seed: int
    hog: bool
    order: tuple[str, ...]  # the arms in the order they run
    sets: tuple[str, ...] = ()  # --set KEY=VALUE overrides of this task's space (smoke runs)

    @property
    def key(self) -> str:
        key = f"{self.task}-{round(self.budget)}s-seed{self.seed}" + ("-hog" if self.hog else "")
        if self.sets:
            key += "-set" + hashlib.sha256("\n".join(self.sets).encode()).hexdigest()[:8]
        return key


# ---------------------------------------------------------------------------------------------- processes


def cli(*argv: str) -> list[str]:
    """The checkout's ``rpztune`` command line (``python -m search.cli`` from the repository root)."""
    return [sys.executable, "-m", "search.cli", *argv]


def run_command(
    argv: list[str],
    log: Path,
    env: dict[str, str],
    *,
    limit: float | None = None,
    hog_at: float | None = None,
) -> tuple[int, float, str]:
    """Run ``argv`` from the repository root with stdout and stderr into ``log``; return its exit code, wall
    seconds (``time.monotonic``) and output. ``hog_at``: start a CPU hog that many seconds in, killed when the
    command ends. ``limit``: terminate the command (SIGTERM, then SIGKILL) after that many seconds."""
    hog: subprocess.Popen | None = None
    with log.open("w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                now = time.monotonic() - started
                wait = 1.0
                if hog is None and hog_at is not None:
                    wait = min(wait, max(0.05, hog_at - now))
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic() - started
                if hog is None and hog_at is not None and now >= hog_at:
                    hog = subprocess.Popen([sys.executable, "-c", HOG], stdin=subprocess.DEVNULL)
                    print(f"      hog started at {now:.0f} s (pid {hog.pid})", flush=True)
                if limit is not None and now > limit:
                    print(f"      {now:.0f} s: past the bench's limit {limit:.0f} s: terminating", flush=True)
                    _stop(proc)
                    break
            wall = time.monotonic() - started
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
            if proc.poll() is None:  # the bench itself was interrupted
                _stop(proc)
    return proc.returncode, wall, log.read_text(errors="replace")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------------------ parsing

_NUMBER = r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)"
_CONFIRMED = re.compile(rf"confirmed (.+?) {_NUMBER} ± {_NUMBER}")
_SINGLE = re.compile(rf"single-split (.+?) {_NUMBER}, unconfirmed")
_TIME = re.compile(rf"wall {_NUMBER} s of the {_NUMBER} s budget")


def line_starting(text: str, prefix: str) -> str | None:
    """The last line of ``text`` that starts with ``prefix``."""
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    return found[-1] if found else None


def shown_figure(line: str | None) -> dict[str, Any] | None:
    """The figure a run showed for its winner in ``line`` (``export writes ...`` or export's ``winner: ...``):
    the confirmed mean ± sd, or the single-split value."""
    if line is None:
        return None
    head = line.split("; won by", 1)[0]
    match = _CONFIRMED.search(head)
    if match:
        return {"kind": "confirmed", "mean": float(match[2]), "sd": float(match[3])}
    match = _SINGLE.search(head)
    if match:
        return {"kind": "single-split", "mean": float(match[2]), "sd": None}
    return None


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return None


def error_lines(text: str) -> str:
    """The output's lines that say what went wrong (an ``rpztune ...: error`` line, a traceback's end)."""
    lines = text.strip().splitlines()
    wrong = [line for line in lines if "error" in line.lower() or "Error" in line or "Traceback" in line]
    return " | ".join((wrong or lines)[-3:])[:600]


# ------------------------------------------------------------------------------------------------ scoring


class HeldOut:
    """The data each task's exports are scored on, loaded once per bench process."""

    def __init__(self, data: Path, photos: Path | None, new_photos: Path | None) -> None:
        self.data, self.photos, self.new_photos = data, photos, new_photos
        self._fashion: tuple | None = None
        self._photo_parts: dict[str, tuple] | None = None
        self._features: dict[tuple, dict[str, Any]] = {}

    def fashion(self) -> tuple:
        if self._fashion is None:
            from objectives.mynet.data import load_fashion

            images = load_fashion(str(self.data))
            self._fashion = (images.x_test, images.y_test)
        return self._fashion

    def photo_parts(self) -> dict[str, tuple]:
        """``{"orig", "aug"[, "new"]}``: uint8 photos and labels (AUG: two condition-bank copies, seed 0)."""
        if self._photo_parts is None:
            from objectives.finetune.photos import load_photos
            from objectives.finetune.proxy import condition_bank

            photos = load_photos(self.photos)
            x_aug, _ = condition_bank(photos.x, copies=2, seed=0)
            parts = {"orig": (photos.x, photos.y), "aug": (x_aug, photos.y.repeat(2))}
            if self.new_photos is not None:
                new = load_photos(self.new_photos)
                if new.classes != photos.classes:
                    raise ValueError(f"--new-photos has classes {new.classes}, not {photos.classes}")
                parts["new"] = (new.x, new.y)
            self._photo_parts = parts
        return self._photo_parts

    def features(self, model: Any) -> dict[str, Any]:
        """``model``'s pooled backbone features of each photo part, cached by backbone, resolution and the
        backbone's weights."""
        import torch

        digest = hashlib.sha256()
        for tensor in model.backbone.state_dict().values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
        key = (model.cfg.backbone, model.cfg.resolution, digest.hexdigest())
        if key not in self._features:
            with torch.inference_mode():
                self._features[key] = {
                    name: torch.cat(
                        [model.forward_features(x[i : i + 32].float().div(255)) for i in range(0, len(x), 32)]
                    )
                    for name, (x, _) in self.photo_parts().items()
                }
        return self._features[key]


def exported_net(folder: Path, task: str) -> tuple[Any, Any]:
    """Import the export's ``pytorch_cnn.py`` under a fresh module name, build the lab's class (a single
    net or an ensemble) with the exported weights loaded strictly; the model and the file's ``classify``."""
    import torch

    name = f"_bench_budget_export_{abs(hash(str(folder)))}_{time.monotonic_ns()}"
    spec = importlib.util.spec_from_file_location(name, folder / "pytorch_cnn.py")
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {folder / 'pytorch_cnn.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        model = getattr(module, EXPORT_CLASS[task])()
    finally:
        del sys.modules[name]
    state = torch.load(folder / TASKS[task].weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), module.classify


def net_accuracy(model: Any, classify: Any, x: Any, y: Any, chunk: int = 64) -> float:
    import torch

    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), chunk):
            predicted = classify(model, x[i : i + chunk].float().div(255))
            correct += int((predicted == y[i : i + chunk]).sum())
    return correct / len(y)


def photo_accuracies(model: Any, classify: Any, held: HeldOut) -> dict[str, float]:
    """ORIG, AUG (and NEW) accuracies of an exported FinetuneNet. A single net's pooled backbone features
    are computed once per backbone state and resolution (linear probes share the pretrained backbone, so
    every probe exported in a bench run reuses them) and its head is applied to them; the whole net's logits
    on a few photos are checked against that. An ensemble runs whole, through the file's ``classify``."""
    import torch

    parts = held.photo_parts()
    if not all(hasattr(model, name) for name in ("forward_features", "forward_head", "backbone", "cfg")):
        return {name: net_accuracy(model, classify, x, y) for name, (x, y) in parts.items()}
    features = held.features(model)
    with torch.inference_mode():
        x = parts["orig"][0][:8].float().div(255)
        diff = (model(x) - model.forward_head(features["orig"][:8])).abs().max().item()
        if diff > 1e-3:
            raise ValueError(
                f"the exported net's logits differ from its head on cached features by {diff:.2e}"
            )
        return {
            name: float((model.forward_head(features[name]).argmax(dim=1) == y).float().mean())
            for name, (_, y) in parts.items()
        }


def score_export(task: str, folder: Path, held: HeldOut) -> dict[str, Any]:
    """The held-out figure of the model exported into ``folder`` and where its weights came from."""
    summary = json.loads((folder / "winner.json").read_text())
    ensemble = summary.get("ensemble")
    result: dict[str, Any] = {
        "weights": "ensemble" if ensemble else summary.get("weights"),
        "trial": summary.get("trial"),
        "members": ensemble.get("members") if ensemble else None,
    }
    if task == "numpy-mlp":
        result["figure"] = float(summary["test_error"])
        result["n"] = summary.get("n_test")
        return result
    model, classify = exported_net(folder, task)
    if task == "mynet":
        x, y = held.fashion()
        result["figure"] = net_accuracy(model, classify, x, y)
        result["n"] = len(y)
        result["export_test_accuracy"] = summary.get("test_accuracy")
        return result
    from objectives.finetune.proxy import proxy_score

    parts = photo_accuracies(model, classify, held)
    result |= {f"{name}_acc": value for name, value in parts.items()}
    result["figure"] = proxy_score(parts["orig"], parts["aug"], parts.get("new"))
    result["n"] = len(held.photo_parts()["orig"][1])
    return result


# ---------------------------------------------------------------------------------------------------- arms


def study_facts(storage: str, task: str) -> dict[str, Any]:
    """Trial counts, the baseline trial (its validation value; its confirmed estimate when confirmed) and
    the pipeline's confirmation record, read from the arm's storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=task, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    facts: dict[str, Any] = {"counts": counts, "baseline": None}
    confirm = study.user_attrs.get("confirm") or {}
    facts["confirmed_winner"] = confirm.get("winner")
    facts["ensemble"] = confirm.get("ensemble")
    facts["pipeline"] = study.user_attrs.get("pipeline")
    for trial in trials:
        if trial.user_attrs.get("baseline"):
            estimate = next((e for e in confirm.get("estimates", []) if e["trial"] == trial.number), None)
            facts["baseline"] = {
                "trial": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "confirmed_mean": None if estimate is None else estimate["mean"],
                "confirmed_sd": None if estimate is None else estimate["sd"],
            }
            break
    return facts


def run_arm(cell: Cell, arm: str, folder: Path, args: argparse.Namespace, held: HeldOut) -> dict[str, Any]:
    """One arm of a cell: the timed ``run``, ``export``, the held-out scores, the baseline's."""
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    env = {**os.environ, "RPZTUNE_CACHE": str(folder / "cache"), "PYTHONUNBUFFERED": "1"}
    data = str(args.photos_train) if cell.task == "finetune" else str(args.data)
    argv = ["run", cell.task, "--timeout", f"{cell.budget:g}", "--seed", str(cell.seed), "--data", data]
    argv += ["--storage", storage, "--workers", str(args.workers)]
    argv += ["--keep-top", str(args.keep_top)] if args.keep_top is not None else []
    argv += [part for assignment in cell.sets for part in ("--set", assignment)]
    argv += ["--stages", "search"] if arm == "search-then-export" else []
    hog_at = cell.budget / 2 if cell.hog else None
    print(f"    {arm}: rpztune {' '.join(argv[:6])} ...", flush=True)
    rc, wall, out = run_command(
        cli(*argv), folder / "run.log", env, limit=1.5 * cell.budget + 120, hog_at=hog_at
    )
    result: dict[str, Any] = {
        "arm": arm,
        "command": ["rpztune", *argv],
        "rc": rc,
        "wall": wall,
        "budget": cell.budget,
        "over": wall - cell.budget,
        "hog": cell.hog,
        "errors": [],
    }
    timing = _TIME.search(out)
    result["product_wall"] = float(timing[1]) if timing else None
    result["time_line"] = line_starting(out, "time:")
    result["plan_line"] = line_starting(out, "plan")
    result["stage_lines"] = [
        line for line in out.splitlines() if line.split(":", 1)[0] in ("confirm", "refit", "ensemble")
    ]
    result["export_writes"] = line_starting(out, "export writes")
    product = f"; the product's {result['time_line']}" if result["time_line"] else ""
    print(f"      run: rc {rc}, wall {wall:.1f} s of {cell.budget:g} s{product}", flush=True)
    if rc != 0:
        result["errors"].append(f"run exited {rc}: {error_lines(out)}")
    try:
        result["study"] = study_facts(storage, cell.task)
    except Exception as exc:  # no study: the run failed before creating it
        result["study"] = None
        result["errors"].append(f"reading the study: {type(exc).__name__}: {exc}")
        return result

    export_dir = folder / "export"
    started = time.monotonic()
    rc, _, out = run_command(
        cli("export", "--study", cell.task, "--storage", storage, "--out", str(export_dir)),
        folder / "export.log",
        env,
    )
    result["export_s"] = time.monotonic() - started
    result["export_rc"] = rc
    result["export_winner"] = line_starting(out, "winner:")
    if rc != 0:
        result["errors"].append(f"export exited {rc}: {error_lines(out)}")
        return result
    shown = shown_figure(result["export_writes"]) or shown_figure(result["export_winner"])
    ensemble = json.loads((export_dir / "winner.json").read_text()).get("ensemble")
    if ensemble:
        values = ensemble["ensemble"]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        shown = {"kind": "ensemble", "mean": statistics.fmean(values), "sd": sd, "winner": shown}
    result["shown"] = shown
    try:
        result["held_out"] = score_export(cell.task, export_dir, held)
    except Exception as exc:
        result["held_out"] = None
        result["errors"].append(f"scoring the export: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    if not ensemble and cell.task != "finetune":
        result["evaluate"] = cross_check(cell, storage, env, folder, args, result.get("held_out"))
    baseline = (result["study"] or {}).get("baseline")
    if baseline is not None and baseline["state"] == "COMPLETE":
        baseline_dir = folder / "baseline-export"
        argv = ["export", "--study", cell.task, "--storage", storage, "--trial", str(baseline["trial"])]
        rc, _, out = run_command(
            cli(*argv, "--single", "--out", str(baseline_dir)), folder / "baseline-export.log", env
        )
        if rc != 0:
            baseline["held_out_error"] = error_lines(out)
        else:
            try:
                baseline["held_out"] = score_export(cell.task, baseline_dir, held)
            except Exception as exc:
                baseline["held_out_error"] = f"{type(exc).__name__}: {exc}"
    return result


def cross_check(
    cell: Cell, storage: str, env: dict[str, str], folder: Path, args: argparse.Namespace, held: Any
) -> dict[str, Any] | None:
    """``rpztune evaluate`` (numpy-mlp, mynet) on the same test split: it scores the weights export writes
    (the refit when stored); its figure should equal the bench's."""
    argv = cli("evaluate", "--study", cell.task, "--storage", storage, "--data", str(args.data))
    rc, _, out = run_command(argv, folder / "evaluate.log", env)
    record = last_json(out)
    if rc != 0 or record is None:
        return {"error": error_lines(out)}
    key = {"numpy-mlp": "test_error", "mynet": "test_accuracy"}[cell.task]
    ours = (held or {}).get("figure")
    record["agrees"] = ours is not None and key in record and abs(float(record[key]) - ours) < 1e-6
    if not record["agrees"]:
        print(f"      NOTE: rpztune evaluate's {key} {record.get(key)} differs from the bench's {ours}")
    return record


def run_cell(cell: Cell, args: argparse.Namespace, held: HeldOut) -> dict[str, Any]:
    """Both arms of a cell in a fresh attempt folder (older, killed attempts are deleted first)."""
    root = args.workdir / "cells" / cell.key
    attempts = sorted(root.glob("attempt-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in attempts:
        print(f"  removing {old} (an attempt that did not finish)", flush=True)
        shutil.rmtree(old)
    attempt = root / f"attempt-{int(attempts[-1].name.split('-')[1]) + 1 if attempts else 1}"
    started = time.time()
    arms = {arm: run_arm(cell, arm, attempt / arm, args, held) for arm in cell.order}
    return {
        "cell": cell.key,
        "task": cell.task,
        "budget": cell.budget,
        "seed": cell.seed,
        "hog": cell.hog,
        "order": list(cell.order),
        "folder": str(attempt),
        "data": str(args.data),
        "workers": args.workers,
        "keep_top": args.keep_top,
        "sets": list(cell.sets),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "seconds": time.time() - started,
        "arms": arms,
    }


# ---------------------------------------------------------------------------------------------------- table


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _shown(shown: dict[str, Any] | None) -> str:
    if not shown:
        return "–"
    if shown["kind"] == "single-split":
        return f"{shown['mean']:.4f} (1 split)"
    tag = " ens" if shown["kind"] == "ensemble" else ""
    return f"{shown['mean']:.4f}±{shown['sd']:.4f}{tag}"


def _held(arm: dict[str, Any]) -> float | None:
    return (arm.get("held_out") or {}).get("figure")


def _baseline_held(arm: dict[str, Any]) -> str:
    baseline = (arm.get("study") or {}).get("baseline")
    if baseline is None:
        return "none"
    held = baseline.get("held_out")
    if held is None:
        return "– (not kept)" if "checkpoint" in str(baseline.get("held_out_error", "")).lower() else "–"
    return f"{held['figure']:.4f} ({held['weights']})"


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'task':9} {'budget':>6} {'seed':>4} {'hog':>3}  {'arm':18} {'wall/budget':>11} {'wall-budget':>11}"
        f"  {'trials':>6}  {'shown':22} {'held-out':>8}  {'weights':8} {'baseline held-out':18} "
        f"{'baseline val':>12}"
    )
    print("\n" + header)
    print("-" * len(header))
    for cell in results:
        for name in ARMS:
            arm = cell["arms"].get(name)
            if arm is None:
                continue
            held = arm.get("held_out") or {}
            baseline = (arm.get("study") or {}).get("baseline") or {}
            base_val = _fmt(baseline.get("value"))
            if baseline.get("confirmed_mean") is not None:
                base_val = f"{baseline['confirmed_mean']:.4f} c"
            hog, weights = "yes" if cell["hog"] else "no", str(held.get("weights", "–"))
            counts = (arm.get("study") or {}).get("counts") or {}
            trials = f"{counts.get('complete', 0)}/{sum(n for k, n in counts.items() if k != 'waiting')}"
            print(
                f"{cell['task']:9} {cell['budget']:>6.0f} {cell['seed']:>4} {hog:>3}  "
                f"{name:18} {arm['wall'] / arm['budget']:>11.3f} {arm['over']:>+11.1f}  {trials:>6}  "
                f"{_shown(arm.get('shown')):22} {_fmt(held.get('figure')):>8}  {weights:8} "
                f"{_baseline_held(arm):18} {base_val:>12}"
            )
    print(
        "\nshown: the run's own figure for what export writes (confirmed mean±sd over its replicates, 'ens': "
        "the chosen ensemble's confirmation figure, '(1 split)': the search's single validation split); "
        "held-out: numpy-mlp test error (lower is better), mynet FashionMNIST test accuracy, finetune the "
        "held-out photos' proxy; weights: what export wrote (refit, the trial's own checkpoint, or an "
        "ensemble); trials: complete / run (waiting ones left out); baseline: the study's baseline trial "
        "exported alone (--trial N --single), its search value ('c': its confirmed mean)"
    )
    parts = [
        (cell, name, arm)
        for cell in results
        if cell["task"] == "finetune"
        for name, arm in cell["arms"].items()
        if arm.get("held_out")
    ]
    for cell, name, arm in parts:
        held = arm["held_out"]
        new = f", NEW {held['new_acc']:.4f}" if "new_acc" in held else ", no NEW photos"
        print(
            f"  finetune {cell['budget']:.0f} s seed {cell['seed']} {name}: ORIG {held['orig_acc']:.4f}, "
            f"AUG {held['aug_acc']:.4f}{new} on {held['n']} held-out photos"
        )
    print("\nwhat each pipeline did (the product's own wall time; its stage lines):")
    for cell in results:
        for name, arm in cell["arms"].items():
            if name != "pipeline":
                continue
            own = arm.get("product_wall")
            head = f"  {cell['cell']}: product wall {_fmt(own, 0)} s vs the bench's {arm['wall']:.0f} s"
            print(head)
            for line in arm.get("stage_lines", []):
                print(f"    {line[:200]}")
    print("\nper task, mean over cells of pipeline − search-then-export:")
    for task, figures in TASKS.items():
        cells = [c for c in results if c["task"] == task and all(a in c["arms"] for a in ARMS)]
        pairs = [(c["arms"]["pipeline"], c["arms"]["search-then-export"]) for c in cells]
        held = [_held(p) - _held(s) for p, s in pairs if _held(p) is not None and _held(s) is not None]
        over = [p["over"] - s["over"] for p, s in pairs]
        if not pairs:
            continue
        better = "lower" if figures.lower_is_better else "higher"
        held_text = f"{statistics.fmean(held):+.4f} over {len(held)} cells" if held else "–"
        print(
            f"  {task:9} held-out {figures.held_out}: {held_text} ({better} is better); "
            f"wall − budget {statistics.fmean(over):+.1f} s over {len(over)} cells"
        )
    problems = [
        (cell["cell"], name, error)
        for cell in results
        for name, arm in cell["arms"].items()
        for error in arm.get("errors", [])
    ]
    if problems:
        print("\nproblems:")
        for key, name, error in problems:
            print(f"  {key} {name}: {error}")


# ----------------------------------------------------------------------------------------------------- main


def parse_cells(
    text: str,
    seeds: list[int],
    scale: float,
    hog_seed: int | None,
    sets: list[str],
    arms: tuple[str, ...] = ARMS,
) -> list[Cell]:
    overrides: dict[str, list[str]] = {}
    for text_set in sets:
        task, sep, assignment = text_set.partition(":")
        if not sep or task not in TASKS or "=" not in assignment:
            raise SystemExit(
                f"budget: --set {text_set!r}: write TASK:KEY=VALUE, TASK one of {', '.join(TASKS)}"
            )
        overrides.setdefault(task, []).append(assignment)
    cells = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        task, sep, seconds = part.partition(":")
        if not sep or task not in TASKS:
            raise SystemExit(f"budget: --cells {part!r}: write TASK:SECONDS, TASK one of {', '.join(TASKS)}")
        for index, seed in enumerate(seeds):
            order = arms if index % 2 == 0 else arms[::-1]
            hog = task in HOG_TASKS and seed == hog_seed
            sets_here = tuple(overrides.get(task, ()))
            cells.append(Cell(task, float(seconds) * scale, seed, hog, order, sets_here))
    return cells


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default=DEFAULT_CELLS, help=f"TASK:SECONDS,... (default {DEFAULT_CELLS})")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--workdir", default="bench-budget", help="results and cells (default bench-budget)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (smoke: 0.1)")
    parser.add_argument("--workers", type=int, default=1, help="rpztune run --workers (default 1)")
    parser.add_argument(
        "--hog-seed", type=int, default=1, help="the seed whose mynet/finetune cells get the hog (default 1)"
    )
    parser.add_argument("--finetune-test", type=int, default=500, help="photos held out (default 500)")
    parser.add_argument("--arms", default=",".join(ARMS), help="the arms to run (default both)")
    parser.add_argument("--new-photos", help="finetune: a cat/dog folder from another source, scored as NEW")
    parser.add_argument("--keep-top", type=int, help="rpztune run --keep-top (default: the product's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TASK:KEY=VALUE",
        help="pass --set KEY=VALUE to TASK's runs (smoke runs only, e.g. finetune:max_images=300)",
    )
    args = parser.parse_args()
    if args.scale <= 0:
        parser.error("--scale must be positive")
    args.data = Path(args.data).resolve()
    args.workdir = Path(args.workdir).resolve()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    if not arms or set(arms) - set(ARMS):
        parser.error(f"--arms: some of {', '.join(ARMS)}")
    cells = parse_cells(args.cells, seeds, args.scale, args.hog_seed, args.set, arms)
    args.workdir.mkdir(parents=True, exist_ok=True)
    lock = (args.workdir / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"budget: another bench/budget.py is running in {args.workdir}") from None

    args.photos_train = args.photos_test = None
    if any(c.task == "finetune" for c in cells):
        from bench.fidelity import split_photos

        args.photos_train, args.photos_test = split_photos(
            args.data / "dogs_and_cats", args.workdir / f"photos-{args.finetune_test}", args.finetune_test
        )
    held = HeldOut(args.data, args.photos_test, Path(args.new_photos) if args.new_photos else None)

    results_dir = args.workdir / "results"
    todo = [c for c in cells if not (results_dir / f"{c.key}.json").is_file()]
    planned = sum(len(c.order) * c.budget for c in todo)
    print(
        f"{len(cells)} cells, {len(cells) - len(todo)} done before; {len(todo)} to run: "
        f"{planned / 60:.0f} min of budgets plus exports and scoring; workdir {args.workdir}",
        flush=True,
    )
    results = []
    for cell in cells:
        path = results_dir / f"{cell.key}.json"
        if path.is_file():
            print(f"cell {cell.key}: done before ({path})", flush=True)
            results.append(json.loads(path.read_text()))
            continue
        print(f"cell {cell.key}: arms {' then '.join(cell.order)}", flush=True)
        record = run_cell(cell, args, held)
        write_json(path, record)
        results.append(record)
        print(f"cell {cell.key}: {record['seconds'] / 60:.1f} min; wrote {path}", flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
