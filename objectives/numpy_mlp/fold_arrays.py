"""Arrays derived from a worker's data set (the pooled images, each fold's training and validation copies),
built by the first trial that needs them and shared, read-only, by the worker's later trials."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

__all__ = ["derived", "read_only"]

T = TypeVar("T")

_KEPT_DATA_SETS = 2  # a worker has one data set; a test process makes many
_cache: dict[int, tuple[object, dict[Hashable, Any]]] = {}
_lock = threading.Lock()


def derived(data: object, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, computed once per ``data`` object (by identity) and ``key``.

    Only the last few data sets' values are kept; a value's arrays should be :func:`read_only`, since
    every later caller gets the same ones.
    """
    with _lock:
        entry = _cache.get(id(data))
        if entry is not None and entry[0] is data and key in entry[1]:
            return entry[1][key]
    value = build()
    with _lock:
        entry = _cache.get(id(data))
        if entry is None or entry[0] is not data:  # the data set holds its id while it is kept here
            while len(_cache) >= _KEPT_DATA_SETS:
                del _cache[next(iter(_cache))]
            entry = _cache[id(data)] = (data, {})
        return entry[1].setdefault(key, value)


def read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays``, flagged read-only (a shared array written in place would change every later trial)."""
    for array in arrays:
        array.setflags(write=False)
    return arrays
