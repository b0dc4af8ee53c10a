"""Benchmark of ensemble exports: CPU milliseconds per 100 images of the winner alone, a K-member ensemble
and (FinetuneNet) the ensemble with flip test-time augmentation, as ``rpztune validate`` times them.

Usage: ``python bench/ensemble.py [--k 3] [--repeats 3]``

Side by side in one run, the three variants of each network are timed in turn per repeat (so the machine's
load hits them alike), one torch thread (validate's default), a batch of 100 random images, eval mode; the
median over ``--repeats`` after one warm-up is printed with its ratio to the single network. The members are
the architectures a study starts from: MyNet the mynet baseline (32-64-128, two convs per stage, average
pool), FinetuneNet ``tf_efficientnet_lite0`` at 224 px with a linear head (issue 12's best fixed config);
weights do not change the time. ``validate`` holds a submission to ``--max-mynet-ms`` / ``--max-finetune-ms``
when given (no limit by default: the lab states none, only that its evaluator is slow).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import FinetuneCfg, FinetuneNet, MyNet, MyNetCfg  # noqa: E402
from models.ensemble import AveragedEnsemble  # noqa: E402

MYNET = MyNetCfg(channels=(32, 64, 128), convs_per_stage=2, head="avg", dropout=0.2)
FINETUNE = FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=224, head="linear")


def _time(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    return 1000 * (time.perf_counter() - start)


def _bench(variants: dict[str, torch.nn.Module], shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for model in variants.values():
        _time(model.eval(), x)  # warm-up
    for _ in range(repeats):
        for name, model in variants.items():
            times[name].append(_time(model, x))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=3, help="ensemble members (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    mynets = [MyNet(MYNET) for _ in range(args.k)]
    finetunes = [FinetuneNet(FINETUNE) for _ in range(args.k)]
    rows = []
    mynet = _bench(
        {"single": mynets[0], f"ensemble of {args.k}": AveragedEnsemble(mynets)},
        (100, 1, 28, 28),
        args.repeats,
    )
    rows += [("MyNet", name, ms, ms / mynet["single"]) for name, ms in mynet.items()]
    finetune = _bench(
        {
            "single": finetunes[0],
            f"ensemble of {args.k}": AveragedEnsemble(finetunes),
            f"ensemble of {args.k} + flip TTA": AveragedEnsemble(finetunes, flip=True),
        },
        (100, 3, 96, 96),
        args.repeats,
    )
    rows += [("FinetuneNet", name, ms, ms / finetune["single"]) for name, ms in finetune.items()]
    print(f"CPU ms per 100 images, 1 thread, median of {args.repeats} (torch {torch.__version__})")
    print(f"{'network':<12} {'variant':<26} {'ms/100':>9} {'x single':>9}")
    for network, name, ms, ratio in rows:
        print(f"{network:<12} {name:<26} {ms:>9.1f} {ratio:>9.2f}")


if __name__ == "__main__":
    main()
