"""CPU cost in validate's unit: ms of CPU per 100 images at one thread."""

from __future__ import annotations

import torch
from torch import nn

from objectives.training.cpu_cost import cpu_ms_per_100


def test_cpu_cost_restores_the_thread_count_and_the_mode_and_grows_with_the_work() -> None:
    torch.manual_seed(0)
    small = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    large = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1), nn.Flatten())
    threads = torch.get_num_threads()
    large.train()
    cheap, costly = cpu_ms_per_100(small, (3, 32, 32)), cpu_ms_per_100(large, (3, 32, 32))
    assert torch.get_num_threads() == threads and large.training
    assert 0 < cheap < costly  # about 1,000 times the multiply-adds: no load makes up that gap
