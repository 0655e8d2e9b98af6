"""`attention`: keep the k tokens with the highest importance scores (FastV / VisionZip / SparseVLM rule)."""
from __future__ import annotations

from evtp.selection.helpers import topk_indices
from evtp.selection.registry import register_method


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
