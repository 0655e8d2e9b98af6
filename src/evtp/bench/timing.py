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
                     device: torch.device | str | None = None, shuffle_seed: int | None = None,
                     cpu_ms: dict[str, float] | None = None) -> dict[str, float]:
    """Median wall time (ms) of each callable, measured round-robin so that every callable sees the
    same machine load (ratios taken from one call are side-by-side measurements). GPU work on
    ``device`` is synchronised before and after every timed call.

    ``shuffle_seed``: run each round in a fresh random order (seeded) instead of always the same
    one. A callable that leaves the allocator or the caches in a costly state (the DivPrune
    procedure's per-step allocations: the call after it measured 10-15 % slower on this CPU) then
    slows a different neighbour each round, which the median discards, instead of always the same.

    ``cpu_ms``: a dict filled with each callable's median CPU time of the calling thread (ms), from
    the same calls. With one intra-op thread it is the call's whole CPU time and, unlike wall time,
    does not count the waits while other processes hold the core; with several threads it misses
    the other threads' share.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    rng = random.Random(shuffle_seed)
    for _ in range(repeats):
        order = list(fns.items())
        if shuffle_seed is not None:
            rng.shuffle(order)
        for name, fn in order:
            sync(device)
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.thread_time() - c0) * 1e3)
    if cpu_ms is not None:
        cpu_ms.update({name: statistics.median(ts) for name, ts in cpu.items()})
    return {name: statistics.median(ts) for name, ts in times.items()}
