"""Small timing helpers shared by the benchmarks: warm-up, interleaved repeats, medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time (ms) of each callable, measured round-robin so that every callable sees the
    same machine load (ratios taken from one call are side-by-side measurements)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}
