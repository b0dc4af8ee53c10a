"""Keep large freed blocks in the process heap while a trial trains (glibc malloc), and hand them back after.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MiB by default) with its own ``mmap`` and
unmaps it when freed. A torch training step on the CPU allocates the same large activation tensors again and
again (e.g. 64 images x 32 channels x 112 x 112 floats = 98 MiB at 224 px), so every step maps, page-faults
and zeroes them afresh: on the finetune task the kernel time exceeded the training itself
(``bench/allocator.py``: a fine-tuning step 2.6x faster, MyNet's epoch 1.3x). Raising the threshold and the
trim threshold keeps those blocks in the heap for reuse; :func:`release_free_memory` returns what is free to
the kernel once a trial ends, so a worker's resident memory between trials stays what it holds.

Set ``RPZTUNE_MALLOC=default`` to keep glibc's defaults. Elsewhere than glibc these calls do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

__all__ = ["keep_freed_memory", "release_free_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # the heap's free top is kept until release_free_memory


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the symbols of this process: libc's among them
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory() -> bool:
    """Make this process reuse large freed blocks instead of unmapping them; whether glibc took it."""
    libc = _libc()
    if libc is None or os.environ.get("RPZTUNE_MALLOC", "").lower() == "default":
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def release_free_memory() -> None:
    """Return the heap's free memory to the kernel (after a trial: the next one starts from what is held)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
