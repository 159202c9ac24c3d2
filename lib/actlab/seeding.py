"""One place that makes runs repeatable: seeds and the CPU thread count."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

THREADS_ENV = "ACTLAB_THREADS"


def seed_everything(seed: int = 0, threads: int | None = None) -> int:
    """Seed Python, NumPy and torch, and fix torch's CPU thread count.

    The thread count changes the order of floating-point reductions, so it is
    part of what makes two runs comparable. It comes from ``threads``, else the
    ``ACTLAB_THREADS`` environment variable, else the number of usable cores.
    Returns the thread count in force, for the run's metadata.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is None:
        threads = int(os.environ.get(THREADS_ENV, "0")) or _usable_cores()
    torch.set_num_threads(threads)
    return threads


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
