"""Benchmark of the allocator setting (``objectives/training/allocator.py``): glibc defaults against
freed blocks kept.

Usage: ``python bench/allocator.py [--repeats 3] [--threads 2] [--data PATH]``

Each workload runs in a fresh process, once with ``RPZTUNE_MALLOC=default`` and once with rpztune's setting,
alternating, ``--repeats`` times; it prints per workload the median seconds, CPU seconds in the kernel and
minor page faults of each, and the ratio default / kept (above 1: the setting is faster). Timed is the
training alone (after imports and data loading):

- ``finetune``: EfficientNet-Lite0 at 224 px with its last stage trained (the staged search's fine-tune
  trial), 256 photos in batches of 32 with TrivialAugment, then the 900 validation + AUG images evaluated;
- ``mynet``: one epoch of the default MyNet on the lab's 9 % of FashionMNIST and 10,000 validation images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout


def finetune(data: Path) -> None:
    import torch

    from models.finetune import FinetuneCfg
    from objectives.finetune.objective import build_model, fit_model, load_data
    from spaces.finetune import FinetuneTrainConfig, FinetuneTrialConfig

    photos = load_data(str(data / "dogs_and_cats"), {})
    photos.x_train, photos.y_train = photos.x_train[:256], photos.y_train[:256]
    cfg = FinetuneTrialConfig(
        FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=224, head="linear"),
        FinetuneTrainConfig(freeze="last_k", freeze_k=1, augment="trivial", epochs=1, batch_size=32),
    )
    torch.manual_seed(0)
    model, _, _ = build_model(cfg, {})
    yield_timing(lambda: fit_model(model, photos, cfg.train, lambda *a: None))


def mynet(data: Path) -> None:
    import tempfile

    import optuna

    from objectives import TrialContext, get_task

    task = get_task("mynet")
    space = task.space.with_overrides({"epochs": 1})
    fashion = task.load_data(str(data), space.settings())
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.searched(task.baseline))
    with tempfile.TemporaryDirectory() as folder:
        context = TrialContext(Path(folder), device="cpu")
        yield_timing(lambda: study.optimize(lambda t: task.objective(t, fashion, space, context), n_trials=1))


def yield_timing(work) -> None:  # noqa: ANN001
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    work()
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "sys": after.ru_stime - usage.ru_stime,
                "faults": after.ru_minflt - usage.ru_minflt,
            }
        )
    )


def run(workload: str, malloc: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "RPZTUNE_MALLOC": malloc, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, __file__, "--worker", workload, "--data", str(args.data)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("RPZTUNE_DATA", ROOT.parent / "shared/data"))
    )
    parser.add_argument("--workloads", default="finetune,mynet")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        from objectives.training.allocator import keep_freed_memory

        keep_freed_memory()
        torch.set_num_threads(args.threads)
        {"finetune": finetune, "mynet": mynet}[args.worker](args.data)
        return
    print(f"{'workload':<10} {'malloc':<8} {'s (median)':>10} {'sys s':>7} {'faults':>9}")
    for workload in args.workloads.split(","):
        runs: dict[str, list[dict]] = {"default": [], "kept": []}
        for _ in range(args.repeats):
            for name, malloc in (("default", "default"), ("kept", "")):
                runs[name].append(run(workload, malloc, args))
        medians = {}
        for name, results in runs.items():
            medians[name] = {k: statistics.median(r[k] for r in results) for k in results[0]}
            m = medians[name]
            print(f"{workload:<10} {name:<8} {m['seconds']:>10.2f} {m['sys']:>7.2f} {m['faults']:>9.0f}")
        ratio = medians["default"]["seconds"] / medians["kept"]["seconds"]
        print(f"{workload:<10} ratio default/kept {ratio:.2f}x over {args.repeats} repeats")


if __name__ == "__main__":
    main()
