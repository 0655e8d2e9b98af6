"""`attention`: keep the k tokens with the highest importance scores (FastV / VisionZip / SparseVLM rule).

Also holds the small batched top-k helpers the other baseline methods share.
"""
from __future__ import annotations

import torch

from evtp.selection.groups import selected_to_indices

from evtp.selection.registry import register_method


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


@register_method("attention", needs_scores=True,
                 summary="top-k of per-token scores (FastV / VisionZip dominant / SparseVLM rule)",
                 options={})
def attention(features, positions, k, *, mask, scores, generator=None):
    """Keep the k valid tokens with the largest ``scores``; ties go to the lower index.

    Args:
        features: (B, N, D) (unused beyond its shape).
        k: (B,) long; mask: (B, N) bool; scores: (B, N) float importance (required).
    Returns:
        (B, max(k)) long, -1 padded.
    """
    if scores is None:
        raise ValueError("method 'attention' needs scores=... (per-token importance, e.g. attention)")
    return topk_indices(scores, k, mask)
