"""`dart`: DART's duplication-aware rule: a few pivot tokens plus the tokens least similar to them.

DART (Wen et al., EMNLP 2025) prunes inside the LLM: it picks p pivot tokens (the largest L1 norms
of the key states at the layer before pruning) and then, for each pivot in turn, the
budget / p image tokens least cosine-similar to that pivot, removing each pick from the candidate
pool, so the kept set avoids near-duplicates of the pivots. Here, on one set of visual tokens:

1. Pivots: the p' = min(p, k) tokens with the largest ``scores`` (when given) or else the largest
   feature norm (``pivot_norm``: 2 = L2 by default, 1 = L1 as DART uses on keys); ties by lower index.
2. The remaining k - p' picks are split evenly over the pivots in pivot order
   (pivot i gets floor((i+1)(k-p')/p') - floor(i(k-p')/p')).
3. For pivot i in order, its share of the candidates (valid, not a pivot, not yet picked) with the
   lowest cosine similarity to the pivot is kept (ties by lower index) and leaves the pool.

Kept = pivots + picks, exactly k tokens. DART also has text pivots (dropped from the kept set);
with only visual tokens there are none. The loop runs over the p pivots (inherently sequential,
p = 8 by default); each step is one batched matrix-vector product and one sort.
"""
from __future__ import annotations

import torch

from evtp.selection.groups import selected_to_indices
from evtp.selection.methods.attention import rank_desc, topk_indices
from evtp.selection.registry import register_method


@register_method("dart", summary="DART: top-p pivots (scores or feature norm) + least-similar tokens per pivot",
                 options={"pivots": 8, "pivot_norm": 2})
def dart(features, positions, k, *, mask, scores=None, generator=None, pivots=8, pivot_norm=2):
    """DART selection (see the module docstring).

    Args:
        features: (B, N, D) float32; k: (B,) long; mask: (B, N) bool;
        scores: (B, N) pivot importance or None (feature norms);
        pivots: number of pivots p (int >= 1); pivot_norm: 1 or 2, the norm ranking pivots
            when no scores are given.
    Returns:
        (B, max(k)) long, -1 padded.
    """
    if isinstance(pivots, bool) or not isinstance(pivots, int) or pivots < 1:
        raise ValueError(f"pivots must be a positive int, got {pivots!r}")
    if pivot_norm not in (1, 2) or isinstance(pivot_norm, bool):
        raise ValueError(f"pivot_norm must be 1 or 2, got {pivot_norm!r}")
    B, N, D = features.shape
    dev = features.device
    k = k.to(dev)
    x = features.float()
    importance = scores if scores is not None else x.norm(p=pivot_norm, dim=-1)
    p = k.clamp(max=pivots)  # (B,) pivots per sample
    P = int(p.max())
    piv = topk_indices(importance, p, mask)  # (B, P) in importance order, -1 padded
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    ar = torch.arange(B, device=dev)
    cand = mask.clone()
    cand[ar.unsqueeze(1).expand_as(piv)[piv >= 0], piv[piv >= 0]] = False
    chosen = ~cand & mask  # pivots
    rest = k - p
    for i in range(P):
        share = (torch.div((i + 1) * rest, p, rounding_mode="floor")
                 - torch.div(i * rest, p, rounding_mode="floor"))
        share = torch.where(i < p, share, torch.zeros_like(share))
        if not bool((share > 0).any()):
            continue
        c = piv[:, i].clamp(min=0)
        sim = torch.einsum("bnd,bd->bn", xn, xn[ar, c])  # (B, N)
        rank = rank_desc(-sim, cand)  # least similar first, ties by lower index, non-candidates last
        pick = cand & (rank < share.unsqueeze(1))
        chosen |= pick
        cand &= ~pick
    return selected_to_indices(chosen)
