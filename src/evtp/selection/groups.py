"""Small vectorised helpers shared by methods and adapters: budgets split over groups (frames,
tiles, images), padded per-group tables, and boolean selections turned into index rows."""
from __future__ import annotations

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
