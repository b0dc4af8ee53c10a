"""Benchmark of the mynet training path against the lab's DataLoader loop, side by side in one run.

Usage: ``python bench/mynet_throughput.py [--device auto|cpu|cuda] [--quick] [--data PATH] [--threads N]``

On the lab's split (5,400 FashionMNIST training images, batch 64) it prints, for each device:

1. The input pipeline alone for one epoch: the lab's ``DataLoader`` over a ``ToTensor()`` dataset (then
   ``.to(device)``) vs rpztune's uint8 tensors already on the device (shuffled index, ``float() / 255``),
   without and with all augmentations (shift 2 px, flip, random erasing p=0.5); images/s and ratio.
2. One training epoch of the same network (SGD, NLL): the lab's loop vs ``objectives.torch_fit.fit`` (no
   per-step host synchronisation), with the lab's NCHW model and with channels-last (what the objective
   uses), for two architectures; images/s and ratio. Best of the repeats.
3. What the ``max_latency_ms`` cap measures: one eval forward pass of 64 images on the CPU in one thread.

Without FashionMNIST at ``--data`` it uses random uint8 images of the same shapes and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from models import MyNet, MyNetCfg  # noqa: E402
from objectives.augment import augment  # noqa: E402
from objectives.data import DataError  # noqa: E402
from objectives.fashion import fashion_split, load_fashion  # noqa: E402
from objectives.torch_fit import cpu_latency_ms, fit, resolve_device  # noqa: E402
from spaces.mynet import AugmentConfig, TrainConfig  # noqa: E402

BATCH = 64
ARCHS = {
    "default (32-64, 1 conv/stage)": MyNetCfg(),
    "bigger (32-64-128 x2, fc 128)": MyNetCfg(channels=(32, 64, 128), convs_per_stage=2, hidden=(128,)),
}
ALL_AUGMENT = AugmentConfig(shift=2, flip=True, erase=0.5)


def lab_loader(x_u8: torch.Tensor, y: torch.Tensor) -> torch.utils.data.DataLoader:
    """The lab's pipeline: a Dataset giving ``ToTensor()`` floats per image, shuffled by a DataLoader."""
    from torchvision import transforms

    class Images(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.to_tensor = transforms.ToTensor()
            self.images = x_u8[:, 0].numpy()

        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.to_tensor(self.images[i]), int(y[i])

    return torch.utils.data.DataLoader(Images(), batch_size=BATCH, shuffle=True)


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


def pipeline_epochs(x, y, device, repeats):
    loader = lab_loader(x, y)
    x_dev, y_dev = x.to(device), y.to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def lab() -> None:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)

    def ours(cfg: AugmentConfig) -> None:
        order = torch.randperm(len(y_dev), generator=generator, device=device)
        for start in range(0, len(order) - BATCH + 1, BATCH):
            index = order[start : start + BATCH]
            augment(x_dev[index].float().div_(255), cfg, generator)
            y_dev[index]

    return (
        timed(lab, device, repeats),
        timed(lambda: ours(AugmentConfig()), device, repeats),
        timed(lambda: ours(ALL_AUGMENT), device, repeats),
    )


def training_epochs(cfg: MyNetCfg, x, y, device, repeats):
    loader = lab_loader(x, y)
    train = TrainConfig("sgd", 0.01, 0.9, 0.0, "constant", BATCH, epochs=1)

    def lab() -> None:
        torch.manual_seed(0)
        model = MyNet(cfg).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        for i_batch, (xb, yb) in enumerate(loader):
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            if i_batch % 100 == 0:
                loss.item()  # the lab prints the loss every 100 batches

    def ours(memory_format: torch.memory_format) -> None:
        torch.manual_seed(0)
        model = MyNet(cfg).to(device, memory_format=memory_format)
        data = (x.to(device), y.to(device))
        fit(
            model, train, AugmentConfig(), data, None, generator=torch.Generator(device=device).manual_seed(0)
        )

    return (
        timed(lab, device, repeats),
        timed(lambda: ours(torch.contiguous_format), device, repeats),
        timed(lambda: ours(torch.channels_last), device, repeats),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="one repeat, one architecture (under a minute)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True  # fit() turns it on for CUDA; the lab loop gets it too
    repeats = 1 if args.quick else 3
    started = time.perf_counter()
    try:
        split = fashion_split(load_fashion(args.data, download=False))
        x, y, source = split.x_train, split.y_train, f"FashionMNIST lab split from {args.data}"
    except DataError as exc:
        generator = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (5400, 1, 28, 28), dtype=torch.uint8, generator=generator)
        y = torch.randint(0, 10, (5400,), generator=generator)
        source = f"random uint8 images ({exc})"
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(
        f"torch {torch.__version__}, device {device}{gpu}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; {len(y)} images of {source}; batch {BATCH}; best of {repeats}"
    )

    lab_s, ours_s, ours_aug_s = pipeline_epochs(x, y, device, repeats)
    n = len(y)
    print("\n(1) input pipeline, one epoch, no model: images/s")
    print(f"{'lab DataLoader + ToTensor':38} {n / lab_s:12,.0f}")
    print(f"{'rpztune tensors on device':38} {n / ours_s:12,.0f}   x{lab_s / ours_s:,.1f} vs lab")
    print(f"{'rpztune + shift, flip, erase':38} {n / ours_aug_s:12,.0f}   x{lab_s / ours_aug_s:,.1f} vs lab")

    print("\n(2) one training epoch (SGD, NLL), same network: images/s (NCHW: rpztune's loop with the lab's")
    print("    memory format, to separate the input pipeline from channels-last; ratio: lab time / time)")
    header = f"{'lab loop':>9} {'NCHW':>9} {'ratio':>6} {'rpztune':>9} {'ratio':>6}"
    print(f"{'architecture':38} {'params':>9} {header}")
    for name, cfg in list(ARCHS.items())[: 1 if args.quick else None]:
        params = sum(p.numel() for p in MyNet(cfg).parameters())
        lab_s, nchw_s, ours_s = training_epochs(cfg, x, y, device, repeats)
        print(
            f"{name:38} {params:9,d} {n / lab_s:9,.0f} {n / nchw_s:9,.0f} {lab_s / nchw_s:6.2f} "
            f"{n / ours_s:9,.0f} {lab_s / ours_s:6.2f}"
        )

    print("\n(3) CPU latency of one eval forward pass of 64 images, 1 thread (what max_latency_ms caps)")
    for name, cfg in ARCHS.items():
        model = MyNet(cfg).to(memory_format=torch.channels_last)
        print(f"{name:38} {cpu_latency_ms(model, (64, 1, 28, 28), repeats=10):8.2f} ms")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
