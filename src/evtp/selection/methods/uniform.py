"""`uniform`: tokens evenly strided over the grid (per frame for video), content-blind.

Procedure (all integer arithmetic, vectorised over the batch):

* Without positions: the valid tokens in sequence order get ranks 0..n-1 and the kept ranks are
  ``floor((t + 1/2) * n / k)`` for t = 0..k-1 (centred stride, so both ends are treated alike).
* With positions (P = 2 image, P = 3 video): tokens are grouped by frame (one group per image).
  The budget k is split over the frames of a sample in proportion to their valid tokens by
  cumulative rounding, ``m_f = round(k C_f / n) - round(k C_{f-1} / n)`` with C_f the cumulative
  counts (equal frames get equal shares, the shares sum to k, and m_f <= n_f).
  Inside a frame whose valid tokens span H rows and W columns, a g_r x g_c lattice with
  g_r * g_c >= m_f and g_r / g_c close to H / W is laid over the grid
  (g_r = round(sqrt(m_f H / W)), g_c = ceil(m_f / g_r), g_r = ceil(m_f / g_c), clamped to the grid),
  with lattice rows at ``floor((i + 1/2) H / g_r)`` and columns likewise; when the lattice has
  M > m_f points, the m_f of them at centred stride in raster order are kept. On a complete grid
  this is exactly the selection. If the mask leaves holes (a missing lattice point), the remaining
  budget goes to the tokens nearest to the lattice (squared grid distance, ties by lower index).
"""
from __future__ import annotations

import torch

from evtp.selection.helpers import selected_to_indices, split_budget
from evtp.selection.registry import register_method


def strided_member(q: torch.Tensor, total: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Whether q is one of the m centred-stride picks ``floor((2t + 1) * total / (2m))`` of 0..total-1.

    Args:
        q, total, m: broadcastable long tensors with 0 <= m <= total.
    Returns:
        bool tensor of the broadcast shape (False wherever m == 0).
    """
    mm = m.clamp(min=1)
    t0 = torch.div(q * mm, total.clamp(min=1), rounding_mode="floor")
    hit = None  # (torch.broadcast_shapes would import sympy on first use, ~0.4 s)
    for d in (-1, 0, 1):
        t = t0 + d
        pick = torch.div((2 * t + 1) * total, 2 * mm, rounding_mode="floor")
        near = (t >= 0) & (t < m) & (pick == q)  # the broadcast shape of q, total and m
        hit = near if hit is None else hit | near
    return hit


def _nearest_lattice(y: torch.Tensor, extent: torch.Tensor, g: torch.Tensor):
    """Nearest of the g lattice lines floor((2i + 1) extent / (2g)) to offsets y (all long, same shape).

    Returns (index (long), absolute distance (long)).
    """
    i0 = torch.div(y * g, extent, rounding_mode="floor")
    best_d = torch.full_like(y, torch.iinfo(torch.long).max)
    best_i = torch.zeros_like(y)
    for d in (-1, 0, 1):
        i = (i0 + d).clamp(min=0).minimum(g - 1)
        line = torch.div((2 * i + 1) * extent, 2 * g, rounding_mode="floor")
        dist = (y - line).abs()
        better = dist < best_d
        best_d = torch.where(better, dist, best_d)
        best_i = torch.where(better, i, best_i)
    return best_i, best_d


def _ceil_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -torch.div(-a, b, rounding_mode="floor")


@register_method("uniform", uses_positions=True,
                 summary="evenly strided over the grid (a lattice per frame), content-blind",
                 options={})
def uniform(features, positions, k, *, mask, scores=None, generator=None):
    """Evenly strided tokens: a lattice over each frame's grid, or a stride over the sequence.

    Args:
        features: (B, N, D) (only the shape is used); positions: (B, N, P) long or None;
        k: (B,) long; mask: (B, N) bool.
    Returns:
        (B, max(k)) long, -1 padded (see the module docstring for the exact procedure).
    """
    B, N = mask.shape
    dev = mask.device
    k = k.to(dev)
    if positions is None:
        rank = torch.cumsum(mask.long(), 1) - 1
        n = mask.sum(1, keepdim=True)
        sel = mask & strided_member(rank, n, k.unsqueeze(1))
        return selected_to_indices(sel)

    pos = positions.to(dev).long()
    if pos.shape[-1] == 3:
        frame_vals, frame = torch.unique(pos[..., 0], return_inverse=True)
        F = frame_vals.numel()
    else:
        frame = torch.zeros(B, N, dtype=torch.long, device=dev)
        F = 1
    G = B * F
    group = torch.arange(B, device=dev).unsqueeze(1) * F + frame
    group = torch.where(mask, group, torch.full_like(group, G))  # padded -> dropped group G
    gflat = group.flatten()
    row, col = pos[..., -2].flatten(), pos[..., -1].flatten()

    counts = torch.bincount(gflat, minlength=G + 1)[:G]
    big = torch.iinfo(torch.long).max
    def _red(v, how, init):
        out = torch.full((G + 1,), init, dtype=torch.long, device=dev)
        return out.scatter_reduce(0, gflat, v, reduce=how, include_self=True)[:G]
    rmin, rmax = _red(row, "amin", big), _red(row, "amax", -big)
    cmin, cmax = _red(col, "amin", big), _red(col, "amax", -big)
    empty = counts == 0
    rmin, rmax = torch.where(empty, 0, rmin), torch.where(empty, 0, rmax)
    cmin, cmax = torch.where(empty, 0, cmin), torch.where(empty, 0, cmax)
    H, W = rmax - rmin + 1, cmax - cmin + 1

    m = split_budget(k, counts.view(B, F)).flatten()  # (G,)
    gr = torch.sqrt(m.double() * H.double() / W.double()).round().long().clamp(min=1).minimum(H)
    gc = _ceil_div(m.clamp(min=1), gr).clamp(min=1).minimum(W)
    gr = _ceil_div(m.clamp(min=1), gc).clamp(min=1).minimum(H)
    M = gr * gc

    g = gflat.clamp(max=G - 1)  # padded tokens: any group, their key is overridden below
    iy, dy = _nearest_lattice(row - rmin[g], H[g], gr[g])
    ix, dx = _nearest_lattice(col - cmin[g], W[g], gc[g])
    on_lattice = (dy == 0) & (dx == 0)
    chosen = on_lattice & strided_member(iy * gc[g] + ix, M[g], m[g])
    key = torch.where(chosen, torch.zeros_like(dy), 1 + dy * dy + dx * dx).double()
    key = torch.where(gflat == G, torch.full_like(key, torch.inf), key)

    order = torch.sort(key, stable=True).indices
    order = order[torch.sort(gflat[order], stable=True).indices]  # by group, then key, then index
    gs = gflat[order]
    starts = torch.cumsum(torch.bincount(gflat, minlength=G + 1), 0)
    starts = starts - torch.bincount(gflat, minlength=G + 1)
    slot = torch.arange(B * N, device=dev) - starts[gs]
    take = (gs < G) & (slot < torch.cat([m, m.new_zeros(1)])[gs])
    sel = torch.zeros(B * N, dtype=torch.bool, device=dev)
    sel[order[take]] = True
    return selected_to_indices(sel.view(B, N))
