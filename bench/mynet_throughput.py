"""Benchmark of the mynet training path against the lab's DataLoader loop, side by side in one run.

Usage: ``python bench/mynet_throughput.py [--device auto|cpu|cuda] [--quick] [--data PATH]``

The lab's loop is the lab's code: ``datasets.FashionMNIST(root, transform=ToTensor())`` (a PIL image per
item), ``random_split`` into 9 % / 1 % / rest, ``DataLoader(batch_size=64, shuffle=True)``, an NCHW model,
SGD and NLL, ``loss.item()`` every 100 batches, then a validation pass over a DataLoader with ``classify``.
rpztune's loop is ``objectives.training.fit.fit``: uint8 tensors already on the device, a shuffled index per
batch, ``float() / 255`` there, a channels-last model, no per-step host synchronisation, validation in
chunks of 1000. It prints, for images/s of one epoch (training + validation, best of the repeats):

1. The input pipeline alone (no model): the lab's DataLoader vs rpztune's indexing, without and with all
   augmentations (shift 2 px, flip, random erasing p=0.5).
2. One epoch of the same network, 1 torch thread each, for the lab's fully-connected net, a SimpleCNN-like
   net, mynet's default and a bigger one; the ratio is lab time / rpztune time.
3. The whole CPU: the lab's loop with torch's default threads (every core) vs rpztune's workers (one process
   per core, one thread each, started together), on the default network; images/s of all of them together.
4. What the ``max_latency_ms`` cap measures: one eval forward pass of 64 images on the CPU in one thread.

Needs FashionMNIST in torchvision's layout under ``--data`` (``FashionMNIST/raw``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from models import MyNet, MyNetCfg, classify  # noqa: E402
from objectives.mynet.data import fashion_split, load_fashion  # noqa: E402
from objectives.training.augment import augment  # noqa: E402
from objectives.training.cpu_cost import cpu_ms_per_100  # noqa: E402
from objectives.training.fit import fit, resolve_device  # noqa: E402
from spaces.mynet import AugmentConfig, TrainConfig  # noqa: E402

BATCH = 64
ARCHS = {
    "lab FCNet (1000 sigmoid)": MyNetCfg(channels=(), hidden=(1000,), activation="sigmoid", dropout=0.0),
    "SimpleCNN-like (16, stride 2)": MyNetCfg(channels=(16,), downsample="stride", norm="none", dropout=0.0),
    "default (32-64, 1 conv/stage)": MyNetCfg(),
    "bigger (32-64-128 x2, fc 128)": MyNetCfg(channels=(32, 64, 128), convs_per_stage=2, hidden=(128,)),
}
ALL_AUGMENT = AugmentConfig(shift=2, flip=True, erase=0.5)
TRAIN = TrainConfig("sgd", 0.01, 0.9, 0.0, "constant", BATCH, epochs=1)


def lab_loaders(root: str) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The lab's training and validation loaders, as its notebook builds them."""
    from torchvision import datasets, transforms

    dataset = datasets.FashionMNIST(root, train=True, download=False, transform=transforms.ToTensor())
    trn_size, val_size = int(0.09 * len(dataset)), int(0.01 * len(dataset))
    trn, val, _ = torch.utils.data.random_split(
        dataset, [trn_size, val_size, len(dataset) - trn_size - val_size], torch.Generator().manual_seed(0)
    )
    return (
        torch.utils.data.DataLoader(trn, batch_size=BATCH, shuffle=True),
        torch.utils.data.DataLoader(val, batch_size=BATCH, shuffle=False),
    )


def lab_epoch(model: torch.nn.Module, loaders, device: torch.device) -> None:
    """One epoch of the lab's loop: training, then validation with ``classify``."""
    trn_loader, val_loader = loaders
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for i_batch, (x, y) in enumerate(trn_loader):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
        if i_batch % 100 == 0:
            loss.item()  # the lab prints it
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val_loader:
            x, y = x.to(device), y.to(device)
            correct += classify(model, x).eq(y).sum().item()


def our_epoch(model: torch.nn.Module, split, device: torch.device) -> None:
    """One epoch of rpztune's loop (``fit``) on the same split, data already on the device."""
    fit(
        model,
        TRAIN,
        AugmentConfig(),
        (split.x_train, split.y_train),
        (split.x_val, split.y_val),
        generator=torch.Generator(device=device).manual_seed(0),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall seconds of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def pipeline(loaders, split, device, repeats) -> tuple[float, float, float]:
    trn_loader, _ = loaders
    generator = torch.Generator(device=device).manual_seed(0)

    def lab() -> None:
        for x, y in trn_loader:
            x, y = x.to(device), y.to(device)

    def ours(cfg: AugmentConfig) -> None:
        order = torch.randperm(len(split.y_train), generator=generator, device=device)
        for start in range(0, len(order) - BATCH + 1, BATCH):
            index = order[start : start + BATCH]
            augment(split.x_train[index].float().div_(255), cfg, generator)
            split.y_train[index]

    return (
        timed(lab, device, repeats),
        timed(lambda: ours(AugmentConfig()), device, repeats),
        timed(lambda: ours(ALL_AUGMENT), device, repeats),
    )


def one_thread_epochs(cfg: MyNetCfg, loaders, split, device, repeats) -> tuple[float, float]:
    def lab() -> None:
        torch.manual_seed(0)
        lab_epoch(MyNet(cfg).to(device), loaders, device)

    def ours() -> None:
        torch.manual_seed(0)
        our_epoch(MyNet(cfg).to(device, memory_format=torch.channels_last), split, device)

    return timed(lab, device, repeats), timed(ours, device, repeats)


def _worker(root: str, start: mp.Barrier, seconds: mp.Queue) -> None:
    """One rpztune worker of section 3: load, warm up, wait for the others, time one epoch."""
    torch.set_num_threads(1)
    split = fashion_split(load_fashion(root, download=False))
    device = torch.device("cpu")
    our_epoch(MyNet().to(memory_format=torch.channels_last), split, device)
    model = MyNet().to(memory_format=torch.channels_last)
    start.wait()
    started = time.perf_counter()
    our_epoch(model, split, device)
    seconds.put(time.perf_counter() - started)


def whole_cpu(root: str, loaders, repeats: int) -> tuple[int, float, int, float]:
    """Images/s of the lab loop on every core vs one rpztune worker per core; and their counts."""
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        lab_s = timed(lambda: lab_epoch(MyNet(), loaders, torch.device("cpu")), torch.device("cpu"), repeats)
    finally:
        torch.set_num_threads(threads)
    n = len(loaders[0].dataset) + len(loaders[1].dataset)
    context = mp.get_context("spawn")
    best = 0.0
    for _ in range(repeats):
        start, seconds = context.Barrier(cores), context.Queue()
        procs = [context.Process(target=_worker, args=(root, start, seconds)) for _ in range(cores)]
        for proc in procs:
            proc.start()
        wall = max(seconds.get(timeout=600) for _ in procs)
        for proc in procs:
            proc.join()
        best = max(best, cores * n / wall)
    return cores, n / lab_s, cores, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="one repeat, two architectures")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True  # fit() turns it on for CUDA; the lab loop gets it too
    repeats = 1 if args.quick else 3
    started = time.perf_counter()
    loaders = lab_loaders(args.data)
    split = fashion_split(load_fashion(args.data, download=False)).to(device)
    n_train, n_val = len(split.y_train), len(split.y_val)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(
        f"torch {torch.__version__}, device {device}{gpu}, {os.cpu_count()} CPUs; FashionMNIST lab split "
        f"from {args.data}: {n_train} training + {n_val} validation images; batch {BATCH}; best of {repeats}"
    )

    lab_s, ours_s, ours_aug_s = pipeline(loaders, split, device, repeats)
    print("\n(1) input pipeline, one epoch of training images, no model: images/s")
    print(f"{'lab FashionMNIST + ToTensor + DataLoader':42} {n_train / lab_s:12,.0f}")
    print(f"{'rpztune tensors on device':42} {n_train / ours_s:12,.0f}   x{lab_s / ours_s:,.1f} vs lab")
    print(f"{'rpztune + shift, flip, erase':42} {n_train / ours_aug_s:12,.0f}   x{lab_s / ours_aug_s:,.1f}")

    n = n_train + n_val
    print(f"\n(2) one epoch (train + validate), same network, 1 torch thread each: images/s ({device})")
    print(f"{'architecture':42} {'params':>9} {'lab loop':>9} {'rpztune':>9} {'ratio':>6}")
    archs = list(ARCHS.items())[1:3] if args.quick else ARCHS.items()
    for name, cfg in archs:
        params = sum(p.numel() for p in MyNet(cfg).parameters())
        lab_s, ours_s = one_thread_epochs(cfg, loaders, split, device, repeats)
        print(f"{name:42} {params:9,d} {n / lab_s:9,.0f} {n / ours_s:9,.0f} {lab_s / ours_s:6.2f}")

    if device.type == "cpu":
        print("\n(3) the whole CPU, default network: lab loop on all cores vs one rpztune worker per core")
        lab_threads, lab_rate, workers, our_rate = whole_cpu(args.data, loaders, repeats)
        print(f"{f'lab loop, {lab_threads} torch threads':42} {lab_rate:12,.0f} images/s")
        print(
            f"{f'rpztune, {workers} workers x 1 thread':42} {our_rate:12,.0f} images/s   "
            f"x{our_rate / lab_rate:.2f} vs lab"
        )

    print("\n(4) CPU latency of one eval forward pass of 64 images, 1 thread (what max_latency_ms caps)")
    for name, cfg in ARCHS.items():
        model = MyNet(cfg).to(memory_format=torch.channels_last)
        print(f"{name:42} {cpu_ms_per_100(model, (1, 28, 28), images=64, repeats=10) * 0.64:8.2f} ms")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
