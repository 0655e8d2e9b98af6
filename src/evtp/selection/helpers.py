"""Small vectorised helpers shared by the selection methods and the adapters, one home for each:

* budgets split over groups (frames, tiles, images) and padded per-group tables;
* boolean selections turned into sorted index rows;
* deterministic batched ranking and top-k over per-token values (ties by lower index, padded
  tokens last);
* min-max normalised per-token relevance.

Methods import these from here, never from each other.
"""
from __future__ import annotations

import math

import torch


def split_budget(k: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Split budgets over groups in proportion to their sizes by cumulative rounding:
    m_f = round(k C_f / n) - round(k C_{f-1} / n), C_f the cumulative counts (halves round up).

    Equal groups get equal shares (up to one token), the shares sum to k, and each share is at
    most its group's size.

    Args:
        k: (B,) long, k[b] <= counts[b].sum().
        counts: (B, F) long group sizes (0 allowed).
    Returns:
        (B, F) long shares.
    """
    n = counts.sum(1, keepdim=True).clamp(min=1)
    cum = torch.cumsum(counts, 1)
    r = torch.div(2 * k.unsqueeze(1) * cum + n, 2 * n, rounding_mode="floor")
    return torch.diff(r, dim=1, prepend=torch.zeros_like(r[:, :1]))


def group_table(groups: torch.Tensor, member: torch.Tensor):
    """Lay out the members of every group as rows of a padded table.

    Args:
        groups: (B, L) long group id of every position (any integers; only ``member`` positions
            count; ids are global, so give different samples different ids).
        member: (B, L) bool, the positions that take part.
    Returns:
        table: (G, M) long flat indices (b * L + l) of each group's members in sequence order,
            -1 padded; rows in ascending group id; G = distinct groups, M = the largest group.
        valid: (G, M) bool, ``table >= 0``.
    """
    flat = torch.nonzero(member.flatten(), as_tuple=True)[0]  # (V,) in batch-major sequence order
    if flat.numel() == 0:
        return flat.new_empty(0, 0), torch.zeros(0, 0, dtype=torch.bool, device=member.device)
    _, gid = torch.unique(groups.flatten()[flat], return_inverse=True)  # (V,) dense ids 0..G-1
    order = torch.argsort(gid, stable=True)
    g_sorted, flat_sorted = gid[order], flat[order]
    counts = torch.bincount(g_sorted)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(flat.numel(), device=flat.device) - starts[g_sorted]
    table = torch.full((counts.numel(), int(counts.max())), -1, dtype=torch.long, device=flat.device)
    table[g_sorted, slot] = flat_sorted
    return table, table >= 0


def selected_to_indices(selected: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of each row, ascending, padded with -1.

    Args:
        selected: (B, N) bool.
    Returns:
        (B, max count) long.
    """
    count = selected.sum(1)
    K = int(count.max()) if count.numel() else 0
    order = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices[:, :K]
    steps = torch.arange(K, device=selected.device).unsqueeze(0)
    return torch.where(steps < count.unsqueeze(1), order, torch.full_like(order, -1))


def rank_desc(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rank of every token by descending value; ties by lower index, padded tokens last.

    Args:
        values: (B, N) float, finite on valid tokens.
        mask: (B, N) bool, True for real tokens.
    Returns:
        (B, N) long ranks 0..N-1 (0 = largest value).
    """
    v = values.float().masked_fill(~mask, -torch.inf)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices
    # a padded token with -inf ties real -inf values only if a real value is -inf; push padded last
    order = _padded_last(order, mask)
    ar = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ar)


def _padded_last(order: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Stable re-order of an index permutation (B, N) so that padded tokens come last."""
    if bool(mask.all()):
        return order
    pad = (~mask.gather(1, order)).to(torch.uint8)
    return order.gather(1, torch.sort(pad, dim=1, stable=True).indices)


def topk_indices(values: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample top-k of ``values`` among valid tokens, deterministic (ties by lower index).

    Args:
        values: (B, N) float, finite on valid tokens.
        k: (B,) long, 0 <= k[b] <= mask[b].sum().
        mask: (B, N) bool, True for real tokens.
    Returns:
        (B, max(k)) long indices in descending-value order, padded with -1 where k[b] < max(k).
    """
    v = values.float().masked_fill(~mask, -torch.inf)
    order = _padded_last(torch.sort(v, dim=1, descending=True, stable=True).indices, mask)
    K = int(k.max()) if k.numel() else 0
    out = order[:, :K]
    steps = torch.arange(K, device=values.device).unsqueeze(0)
    return torch.where(steps < k.to(values.device).unsqueeze(1), out, torch.full_like(out, -1))


def relevance(scores: torch.Tensor, mask: torch.Tensor, *, negate: bool = False) -> torch.Tensor:
    """Min-max normalised relevance in [0, 1] over each sample's valid tokens (1 if all equal).

    Args:
        scores: (B, N) float; mask: (B, N) bool.
    Returns:
        (B, N) float32, 0 on padded tokens.
    """
    s = scores.float()
    if negate:
        s = -s
    lo = s.masked_fill(~mask, math.inf).amin(1, keepdim=True)
    hi = s.masked_fill(~mask, -math.inf).amax(1, keepdim=True)
    span = hi - lo
    r = torch.where(span > 0, (s - lo) / span.clamp_min(1e-30), torch.ones_like(s))
    return r.masked_fill(~mask, 0.0)
