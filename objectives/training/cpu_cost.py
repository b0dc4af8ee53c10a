"""What a network costs the evaluator's CPU, in ``rpztune validate``'s unit: milliseconds of CPU per 100
images at one thread.

Timed with the calling thread's CPU clock (``time.thread_time``): at one torch thread the forward pass runs
in that thread, so other processes on a busy machine change the figure little, where a wall-clock time
would count their turns too. The search measures each configuration before training it (finetune prunes
one over its limit, ``objectives/finetune/cpu_limit.py``); ``validate`` measures the submitted files from
outside their sandbox, with the kernel's accounting.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

__all__ = ["cpu_ms_per_100"]


def cpu_ms_per_100(
    model: nn.Module, image_shape: tuple[int, ...], *, images: int = 4, repeats: int = 2
) -> float:
    """CPU milliseconds of ``model``'s eval-mode forward pass per 100 random ``image_shape`` images at 1 torch
    thread: the fastest of ``repeats`` passes over ``images`` images, after one warm-up pass, scaled to 100.

    ``model`` must be on the CPU; its train/eval mode and the torch thread count are restored.
    """
    x = torch.rand((images, *image_shape))
    threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(1)
    model.eval()
    try:
        with torch.inference_mode():
            model(x)  # the first pass pays one-off allocations and lazy initialisation
            fastest = math.inf
            for _ in range(repeats):
                started = time.thread_time()
                model(x)
                fastest = min(fastest, time.thread_time() - started)
        return 1000.0 * fastest * 100 / images
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
