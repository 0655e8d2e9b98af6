"""Small timing helpers shared by the benchmarks: warm-up, interleaved repeats, medians."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device | str | None = None):
    """Wait for queued GPU work (on ``device``, or on the current CUDA device when None) so that a
    wall-clock reading covers it; a no-op on CPU."""
    if device is not None and torch.device(device).type != "cuda":
        return
    if torch.cuda.is_available():
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                     device: torch.device | str | None = None, shuffle_seed: int | None = None) -> dict[str, float]:
    """Median wall time (ms) of each callable, measured round-robin so that every callable sees the
    same machine load (ratios taken from one call are side-by-side measurements). GPU work on
    ``device`` is synchronised before and after every timed call.

    ``shuffle_seed``: run each round in a fresh random order (seeded) instead of always the same
    one. A callable that leaves the allocator or the caches in a costly state (the DivPrune
    procedure's per-step allocations: the call after it measured 10-15 % slower on this CPU) then
    slows a different neighbour each round, which the median discards, instead of always the same.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    rng = random.Random(shuffle_seed)
    for _ in range(repeats):
        order = list(fns.items())
        if shuffle_seed is not None:
            rng.shuffle(order)
        for name, fn in order:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}
