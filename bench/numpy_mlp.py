"""Benchmark of nn_numpy training on data shaped like the lab's MNIST 4-vs-9 task (synthetic, no files read).

Usage: ``python bench/numpy_mlp.py [--quick]``

Prints, for float32/float64 and batch sizes 32/128 on an MLP 784 -> 256 -> 64 -> 1 with N=800 samples:

1. Training throughput of ``train()`` (fast path) in GFLOP/s, counting ``6 * B * in * out`` flops per Linear
   per step (forward, dL/dx and dL/dW matmuls; elementwise work not counted), against NumPy's own matmul
   peak measured in the same run on the largest layer's shapes (best of several ``x @ W``).
2. One epoch with the fast path (``Linear.mean_grads``) vs the lab's per-sample path (``grads()`` then
   ``.mean(axis=0)``): wall time and peak extra memory (tracemalloc sees NumPy's allocations).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

try:
    import nn_numpy as nn
except ModuleNotFoundError:  # run from a checkout without rpztune installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import nn_numpy as nn

N_TRAIN, N_VAL, INPUT_DIM, WIDTHS = 800, 64, 784, (256, 64)
BATCH_SIZES = (32, 128)
DTYPES = (np.float32, np.float64)


def synthetic_data(n: int, dtype: type, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised-pixel-like inputs (N, 784) and labels (N, 1) from a random linear rule."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, INPUT_DIM)).astype(dtype)
    y = (x @ rng.standard_normal(INPUT_DIM).astype(dtype) > 0).astype(dtype)[:, None]
    return x, y


def layer_dims() -> list[tuple[int, int]]:
    dims = [INPUT_DIM, *WIDTHS, 1]
    return list(zip(dims[:-1], dims[1:], strict=True))


def train_epochs(
    data: tuple[np.ndarray, ...],
    batch_size: int,
    epochs: int,
    per_sample: bool = False,
    model: list | None = None,
) -> list[float]:
    """Trains ``model`` (default: a fresh one) for ``epochs`` epochs; returns each epoch's seconds."""
    x, y, x_val, y_val = data
    rng = np.random.default_rng(0)
    model = model if model is not None else new_model(x.dtype)
    result = nn.train(
        model,
        nn.BCE(),
        x,
        y,
        x_val,
        y_val,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=nn.SGD(0.01, momentum=0.9),
        rng=rng,
        per_sample_grads=per_sample,
    )
    return [stats.seconds for stats in result.history]


def new_model(dtype: type | np.dtype) -> list:
    return nn.build_mlp(INPUT_DIM, WIDTHS, "relu", init="he", rng=np.random.default_rng(0), dtype=dtype)


def matmul_peak(dtype: type | np.dtype, batch_size: int, reps: int) -> float:
    """Best GFLOP/s of ``x @ W`` for the largest layer, (B, 784) @ (784, 256)."""
    fan_in, fan_out = max(layer_dims(), key=lambda d: d[0] * d[1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, fan_in)).astype(dtype)
    w = rng.standard_normal((fan_in, fan_out)).astype(dtype)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        x @ w
        best = min(best, time.perf_counter() - start)
    return 2 * batch_size * fan_in * fan_out / best / 1e9


def epoch_peak_memory(data: tuple[np.ndarray, ...], batch_size: int, per_sample: bool) -> float:
    """Peak MiB allocated while training one epoch (data and model allocated before, not counted)."""
    model = new_model(data[0].dtype)
    tracemalloc.start()
    try:
        train_epochs(data, batch_size, epochs=1, per_sample=per_sample, model=model)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about 5 s)")
    args = parser.parse_args()
    epochs, reps, per_sample_epochs = (4, 20, 1) if args.quick else (10, 200, 3)
    started = time.perf_counter()

    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    print(
        f"numpy {np.__version__}, BLAS {blas.get('name')} {blas.get('version')}, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; "
        f"N={N_TRAIN}, MLP {INPUT_DIM}->{'->'.join(map(str, WIDTHS))}->1, ReLU, BCE, SGD with momentum"
    )
    flops_per_sample = 6 * sum(fan_in * fan_out for fan_in, fan_out in layer_dims())
    configs = [(np.dtype(dtype).name, batch_size) for dtype in DTYPES for batch_size in BATCH_SIZES]
    data = {
        np.dtype(dtype).name: (*synthetic_data(N_TRAIN, dtype, seed=0), *synthetic_data(N_VAL, dtype, seed=1))
        for dtype in DTYPES
    }

    print(
        f"\n(1) training throughput, fast path, best of {epochs} epochs; "
        f"peak: best of {reps} x @ W for the largest layer"
    )
    print(f"{'dtype':8} {'batch':>5} {'epoch s':>8} {'train GFLOP/s':>14} {'peak GFLOP/s':>13} {'ratio':>6}")
    fast_seconds = {}
    for name, batch_size in configs:
        fast_seconds[name, batch_size] = seconds = min(train_epochs(data[name], batch_size, epochs))
        throughput = flops_per_sample * N_TRAIN / seconds / 1e9
        peak = matmul_peak(np.dtype(name), batch_size, reps)
        ratio = throughput / peak
        print(f"{name:8} {batch_size:5d} {seconds:8.4f} {throughput:14.1f} {peak:13.1f} {ratio:6.2f}")

    print(
        f"\n(2) one epoch, fast path (mean_grads) vs the lab's per-sample path (grads().mean(axis=0)): "
        f"best of {epochs} / {per_sample_epochs} epochs; peak memory allocated during the epoch"
    )
    print(
        f"{'dtype':8} {'batch':>5} {'fast s':>8} {'per-sample s':>13} {'time x':>7} "
        f"{'fast MiB':>9} {'per-sample MiB':>15} {'mem x':>6}"
    )
    for name, batch_size in configs:
        fast_s = fast_seconds[name, batch_size]
        slow_s = min(train_epochs(data[name], batch_size, per_sample_epochs, per_sample=True))
        fast_mib = epoch_peak_memory(data[name], batch_size, per_sample=False)
        slow_mib = epoch_peak_memory(data[name], batch_size, per_sample=True)
        print(
            f"{name:8} {batch_size:5d} {fast_s:8.4f} {slow_s:13.4f} {slow_s / fast_s:7.1f} "
            f"{fast_mib:9.1f} {slow_mib:15.1f} {slow_mib / fast_mib:6.1f}"
        )
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
