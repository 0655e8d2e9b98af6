"""The greedy farthest-point loop of `kcenter` / `evtp` (driven by `evtp.selection.greedy.greedy_kcenter`).

Every form takes the (B, N, N) float32 distances (padded columns +inf), the number of picks K, the
(B, N) mask and the (B,) first centres, and returns the (B, K) picks in order and the (B, K) covering
radius before each pick; all forms return the same picks (ties to the lowest index).

* `greedy_loop_numpy`: the eager loop on CPU, NumPy on the tensor's memory.
* `greedy_loop_torch`: the eager loop in torch ops (other devices).
* `greedy_loop_compiled` (option ``loop="compiled"``): a capturable form, below.

The eager torch loop issues about five small kernels per pick, so on a
GPU a selection of k tokens costs about 5k kernel launches, each a few microseconds of host time,
whatever N. Here one pick is a pure tensor function with no data-dependent Python control flow and
no host synchronisation: the step counter is a device tensor, every buffer has a fixed shape, and
each step writes in place.

* Every device: the step is compiled by `torch.compile` (``fullgraph=True``), which fuses it into
  one or two kernels.
* CUDA: the whole loop (initialisation plus the k - 1 compiled steps) is captured once per
  (batch, tokens, k, device) into a `torch.cuda.CUDAGraph`, cached, and replayed: one call is one
  graph launch plus copying the distance matrix into the graph's input buffer.

The picks are exactly the eager loop's (same float32 arithmetic, ties to the lowest index);
tests check this on CPU, where `torch.compile` also works.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["greedy_loop_compiled", "greedy_loop_numpy", "greedy_loop_torch", "greedy_step"]

_GRAPH_CACHE_SIZE = 8
_graphs: "OrderedDict[tuple, tuple]" = OrderedDict()
_compiled_step = None


def greedy_step(dist: torch.Tensor, mind: torch.Tensor, sel: torch.Tensor, radius: torch.Tensor,
                t: torch.Tensor) -> None:
    """One greedy pick, in place.

    Args:
        dist: (B, N, N) float32 distances (padded columns +inf).
        mind: (B, N) float32 distance of every token to its nearest pick; -inf for picked and
            padded tokens. Updated in place.
        sel: (B, K) long picks; column t is written.
        radius: (B, K) float32; column t gets the largest running distance before the pick
            (the covering radius of the first t picks).
        t: (1,) long step counter on the device; incremented in place.
    """
    B, N = mind.shape
    val, c = mind.max(dim=1)  # first maximum: ties to the lowest index
    sel.index_copy_(1, t, c.unsqueeze(1))
    radius.index_copy_(1, t, val.unsqueeze(1))
    row = dist.gather(1, c.view(B, 1, 1).expand(B, 1, N)).squeeze(1)
    torch.minimum(mind, row, out=mind)
    mind.scatter_(1, c.unsqueeze(1), -math.inf)
    t.add_(1)


def _init(dist, mask, first, mind, sel, radius, t):
    """State before the first step: the first centre picked, its row as running distances."""
    B, N = mind.shape
    mind.copy_(dist.gather(1, first.view(B, 1, 1).expand(B, 1, N)).squeeze(1))
    mind.masked_fill_(~mask, -math.inf)
    mind.scatter_(1, first.unsqueeze(1), -math.inf)
    sel.zero_()
    sel.index_copy_(1, t.new_zeros(1), first.unsqueeze(1))
    radius.fill_(math.inf)
    t.fill_(1)


def _step_fn():
    global _compiled_step
    if _compiled_step is None:
        _compiled_step = torch.compile(greedy_step, fullgraph=True)
    return _compiled_step


def greedy_loop_compiled(dist: torch.Tensor, K: int, mask: torch.Tensor, first: torch.Tensor):
    """The greedy loop as compiled steps (CUDA: one captured graph per shape).

    Args:
        dist: (B, N, N) float32 distances, padded columns +inf; K: picks (>= 1);
        mask: (B, N) bool; first: (B,) long first centres.
    Returns:
        sel: (B, K) long picks in order; radius: (B, K) float32 covering radius before each pick
        (column 0 is +inf, 0 once every valid token is picked), as the eager loop returns them.
    """
    B, N, _ = dist.shape
    dev = dist.device
    step = _step_fn()
    first = first.to(dev).long()
    mask = mask.to(dev)
    if dev.type == "cuda":
        sel, radius = _replay_graph(step, dist, K, mask, first)
    else:
        mind = torch.empty(B, N, dtype=torch.float32, device=dev)
        sel = torch.empty(B, K, dtype=torch.long, device=dev)
        radius = torch.empty(B, K, dtype=torch.float32, device=dev)
        t = torch.empty(1, dtype=torch.long, device=dev)
        _init(dist, mask, first, mind, sel, radius, t)
        for _ in range(K - 1):
            step(dist, mind, sel, radius, t)
    radius = radius.masked_fill(radius == -math.inf, 0.0)  # every valid token already chosen
    return sel, radius


def _replay_graph(step, dist, K, mask, first):
    """Capture (once per shape) and replay the whole loop as one CUDA graph."""
    B, N, _ = dist.shape
    key = (B, N, K, dist.device.index)
    entry = _graphs.get(key)
    if entry is None:
        bufs = dict(dist=torch.empty_like(dist), mask=torch.empty_like(mask), first=torch.empty_like(first),
                    mind=torch.empty(B, N, dtype=torch.float32, device=dist.device),
                    sel=torch.empty(B, K, dtype=torch.long, device=dist.device),
                    radius=torch.empty(B, K, dtype=torch.float32, device=dist.device),
                    t=torch.empty(1, dtype=torch.long, device=dist.device))
        bufs["dist"].copy_(dist)
        bufs["mask"].copy_(mask)
        bufs["first"].copy_(first)
        state = (bufs["dist"], bufs["mind"], bufs["sel"], bufs["radius"], bufs["t"])
        init_args = (bufs["dist"], bufs["mask"], bufs["first"], *state[1:])
        # warm-up on a side stream (compiles the step) before capture, as CUDA graphs require
        side = torch.cuda.Stream(device=dist.device)
        side.wait_stream(torch.cuda.current_stream(dist.device))
        with torch.cuda.stream(side):
            _init(*init_args)
            for _ in range(min(K - 1, 2)):
                step(*state)
        torch.cuda.current_stream(dist.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _init(*init_args)
            for _ in range(K - 1):
                step(*state)
        entry = (graph, bufs)
        _graphs[key] = entry
        while len(_graphs) > _GRAPH_CACHE_SIZE:
            _graphs.popitem(last=False)
    else:
        _graphs.move_to_end(key)
    graph, bufs = entry
    bufs["dist"].copy_(dist)
    bufs["mask"].copy_(mask)
    bufs["first"].copy_(first)
    graph.replay()
    return bufs["sel"].clone(), bufs["radius"].clone()


def greedy_loop_numpy(dist: torch.Tensor, K: int, mask: torch.Tensor, first: torch.Tensor, *, track: bool):
    """The eager loop on CPU, in NumPy on the tensor's memory (about 1.5 us a step for one sample).

    Args and returns as `greedy_loop_compiled`; ``track``: fill ``radius`` (else it stays +inf).
    """
    B, N, _ = dist.shape
    d = dist.detach().contiguous().numpy().reshape(B * N, N)  # row b * N + i = distances from token i
    sel = np.empty((K, B), dtype=np.int64)
    radius = np.full((K, B), np.inf, dtype=np.float32)
    mind = np.empty((B, N), dtype=np.float32)
    flat = mind.reshape(-1)
    rows = np.arange(B, dtype=np.int64) * N + first.cpu().numpy().astype(np.int64)
    np.take(d, rows, axis=0, out=mind)
    mind[~mask.cpu().numpy()] = -np.inf
    flat[rows] = -np.inf
    sel[0] = rows % N
    if B == 1:  # scalar indices, bound methods and a Python list: about 1 us per step
        argmax, minimum, picks = flat.argmax, np.minimum, [int(rows[0])]
        for t in range(1, K):
            c = int(argmax())
            if track:
                radius[t, 0] = flat[c]
            picks.append(c)
            minimum(flat, d[c], out=flat)
            flat[c] = -np.inf
        sel[:, 0] = picks
    else:
        base = rows - rows % N
        c = np.empty(B, dtype=np.int64)
        row = np.empty((B, N), dtype=np.float32)
        for t in range(1, K):
            np.argmax(mind, axis=1, out=c)
            np.add(base, c, out=rows)
            if track:
                radius[t] = flat[rows]
            sel[t] = c
            np.take(d, rows, axis=0, out=row)
            np.minimum(mind, row, out=mind)
            flat[rows] = -np.inf
    if track:
        radius[radius == -np.inf] = 0.0  # every valid token already chosen
    return torch.from_numpy(np.ascontiguousarray(sel.T)), torch.from_numpy(np.ascontiguousarray(radius.T))


def greedy_loop_torch(dist: torch.Tensor, K: int, mask: torch.Tensor, first: torch.Tensor, *, track: bool):
    """The eager loop in torch ops on any device (no host synchronisation; about five small
    kernels a step). Args and returns as `greedy_loop_numpy`."""
    B, N, _ = dist.shape
    dev = dist.device
    c = first.to(dev).long().clone().unsqueeze(1)  # (B, 1)
    sel = torch.empty(B, K, dtype=torch.long, device=dev)
    radius = torch.full((B, K), math.inf, device=dev)
    val = torch.empty(B, 1, device=dev)
    mind = torch.empty(B, 1, N, device=dev)
    row = torch.empty(B, 1, N, device=dev)
    neg = torch.full((B, 1), -math.inf, device=dev)
    torch.gather(dist, 1, c.unsqueeze(2).expand(B, 1, N), out=mind)
    mind = mind.squeeze(1)
    mind.masked_fill_(~mask, -math.inf)
    mind.scatter_(1, c, neg)
    sel[:, 0:1] = c
    for t in range(1, K):
        torch.max(mind, dim=1, keepdim=True, out=(val, c))
        if track:
            radius[:, t:t + 1] = val
        sel[:, t:t + 1] = c
        torch.gather(dist, 1, c.unsqueeze(2).expand(B, 1, N), out=row)
        torch.minimum(mind, row.squeeze(1), out=mind)
        mind.scatter_(1, c, neg)
    if track:
        radius[radius == -math.inf] = 0.0
    return sel, radius
