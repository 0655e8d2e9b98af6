"""`dart`: DART's duplication-aware rule: a few pivot tokens plus the tokens least similar to them.

DART (Wen et al., EMNLP 2025) prunes inside the LLM: it picks pivot tokens (the largest L1 norms
of the key states at the layer before pruning), by default 4 among the image tokens and 4 among
the text tokens, and then, for each pivot in turn, its share of the image budget among the image
tokens least cosine-similar to that pivot, removing each pick from the candidate pool, so the kept
set avoids near-duplicates of the pivots. Here, on one set of visual tokens:

1. Image pivots: the p' = min(p, k) tokens with the largest ``scores`` (when given) or else the
   largest feature norm (``pivot_norm``: 2 = L2 by default, 1 = L1 as DART uses on keys); ties by
   lower index. They are kept.
2. Text pivots (only with ``text_features``, (T, D) or (B, T, D) in the same space as the
   features, e.g. the same layer's hidden states of the prompt): the t = min(``text_pivots``, T)
   text tokens with the largest ``text_scores`` (when given) or else the largest text-feature
   norm. They steer the picks but are not image tokens, so they are not part of the result.
3. The remaining k - p' picks are split evenly over the p' + t pivots in pivot order, image
   pivots first (pivot i gets floor((i+1)(k-p')/(p'+t)) - floor(i(k-p')/(p'+t))).
4. For pivot i in order, its share of the candidates (valid, not a pivot, not yet picked) with the
   lowest cosine similarity to the pivot is kept (ties by lower index) and leaves the pool.

Kept = image pivots + picks, exactly k tokens. ``pivots`` defaults to 8 without text features and
to DART's 4 with them (4 image + ``text_pivots`` = 4 text pivots). The loop runs over the pivots
(inherently sequential, 8 by default); each step is one batched matrix-vector product and one sort.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from evtp.selection.helpers import rank_desc, selected_to_indices, topk_indices
from evtp.selection.options import MethodOptions, option
from evtp.selection.registry import register_method
from evtp.selection.validation import check_finite, check_tensor_option

PIVOTS_WITHOUT_TEXT = 8
PIVOTS_WITH_TEXT = 4  # DART's default: 4 image + 4 text pivots


def _text_inputs(text_features, text_scores, text_mask, B, D, device):
    """Validated (B, T, D) text features, (B, T) scores or None, (B, T) mask."""
    t = check_tensor_option(text_features, "text_features", batched_dims=3, B=B, device=device,
                            feature_dim=D)
    if t is None:
        if text_scores is not None or text_mask is not None:
            raise ValueError("text_scores / text_mask were given without text_features; pass the text "
                             "tokens' features (T, D) or (B, T, D) as text_features=...")
        return None, None, None
    T = t.shape[1]
    tm = check_tensor_option(text_mask, "text_mask", batched_dims=2, B=B, device=device, float_=False)
    if tm is None:
        tm = torch.ones(B, T, dtype=torch.bool, device=device)
    elif tm.shape[1] != T:
        raise ValueError(f"text_mask has {tm.shape[1]} tokens but text_features has {T}")
    ts = check_tensor_option(text_scores, "text_scores", batched_dims=2, B=B, device=device)
    if ts is not None and ts.shape[1] != T:
        raise ValueError(f"text_scores has {ts.shape[1]} tokens but text_features has {T}")
    check_finite(t, tm, "text_features")
    if ts is not None:
        check_finite(ts, tm, "text_scores")
    return t, ts, tm


@dataclass(frozen=True)
class DartOptions(MethodOptions):
    """Options of `dart` (described in `dart`'s docstring); the text tensors' shapes are checked
    against the features when the method runs."""

    pivots: int | None = option(None, low=1)
    pivot_norm: Literal[1, 2] = 2
    text_features: torch.Tensor | None = None
    text_pivots: int = option(4, low=0)
    text_scores: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None


@register_method("dart", summary="DART: top-p pivots (scores or feature norm, optional text pivots) + "
                                 "least-similar tokens per pivot",
                 options=DartOptions)
def dart(features, positions, k, *, mask, scores, generator, pivots, pivot_norm, text_features, text_pivots,
         text_scores, text_mask):
    """DART selection (see the module docstring).

    Args:
        features: (B, N, D) float32; k: (B,) long; mask: (B, N) bool;
        scores: (B, N) image-pivot importance or None (feature norms);
        pivots: number of image pivots p (int >= 1), default 8, or 4 with text_features;
        pivot_norm: 1 or 2, the norm ranking pivots when no scores are given;
        text_features: (T, D) or (B, T, D) text-token features for text pivots, or None;
        text_pivots: number of text pivots (int >= 0; used with text_features);
        text_scores: (T,) or (B, T) text-pivot importance or None (text-feature norms);
        text_mask: (T,) or (B, T) bool, True for real text tokens, or None.
    Returns:
        (B, max(k)) long, -1 padded.
    """
    B, N, D = features.shape
    dev = features.device
    text, tscores, tmask = _text_inputs(text_features, text_scores, text_mask, B, D, dev)
    if pivots is None:
        pivots = PIVOTS_WITHOUT_TEXT if text is None else PIVOTS_WITH_TEXT
    k = k.to(dev)
    x = features.float()
    importance = scores if scores is not None else x.norm(p=pivot_norm, dim=-1)
    p = k.clamp(max=pivots)  # (B,) image pivots per sample
    piv = topk_indices(importance, p, mask)  # (B, P) in importance order, -1 padded
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ar = torch.arange(B, device=dev)

    if text is not None and text_pivots > 0 and bool(tmask.any()):
        t = tmask.sum(1).clamp(max=text_pivots)  # (B,) text pivots per sample
        t_imp = tscores if tscores is not None else text.norm(p=pivot_norm, dim=-1)
        tpiv = topk_indices(t_imp, t, tmask)  # (B, Pt)
        tn = text / text.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    else:
        t = torch.zeros_like(p)
        tpiv = torch.zeros(B, 0, dtype=torch.long, device=dev)
        tn = None
    n_piv = p + t  # (B,) pivots in all: image pivots first, then text pivots

    cand = mask.clone()
    cand[ar.unsqueeze(1).expand_as(piv)[piv >= 0], piv[piv >= 0]] = False
    chosen = ~cand & mask  # image pivots
    rest = k - p
    for i in range(int(n_piv.max())):
        share = (torch.div((i + 1) * rest, n_piv, rounding_mode="floor")
                 - torch.div(i * rest, n_piv, rounding_mode="floor"))
        share = torch.where(i < n_piv, share, torch.zeros_like(share))
        if not bool((share > 0).any()):
            continue
        # slot i is image pivot i while i < p[b], then text pivot i - p[b]
        img_slot = piv[:, min(i, piv.shape[1] - 1)].clamp(min=0)
        vec = xn[ar, img_slot]  # (B, D)
        if tn is not None:
            j = (i - p).clamp(min=0, max=max(tpiv.shape[1] - 1, 0))
            tvec = tn[ar, tpiv.gather(1, j.unsqueeze(1)).squeeze(1).clamp(min=0)]
            vec = torch.where((i >= p).unsqueeze(1), tvec, vec)
        sim = torch.einsum("bnd,bd->bn", xn, vec)  # (B, N)
        rank = rank_desc(-sim, cand)  # least similar first, ties by lower index, non-candidates last
        pick = cand & (rank < share.unsqueeze(1))
        chosen |= pick
        cand &= ~pick
    return selected_to_indices(chosen)
