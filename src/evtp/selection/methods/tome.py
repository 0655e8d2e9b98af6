"""`tome`: ToMe's bipartite soft matching, applied in rounds until exactly k tokens remain.

ToMe (Bolya et al., ICLR 2023) merges tokens instead of dropping them. One round on the n current
tokens of a sample (all vectorised over the batch):

1. Split the current tokens alternately by their order in the sequence: A = even ranks
   (0, 2, 4, ...), B = odd ranks; |A| = ceil(n / 2), |B| = floor(n / 2).
2. Score every A-B pair (only that block: N^2/4 products) by the cosine of the current
   (size-weighted mean) features; each A token takes its best B match (ties: lower index).
3. The r A tokens with the highest best-match scores (ties: lower index) are merged into their B
   matches, r = min(n - k, floor(n / 2), cap). floor(n / 2) is ToMe's own bound (for odd n one
   A token always survives). The cap is the option ``r`` (a fixed number per round, ToMe's
   constant-r schedule), or by default floor(n / 4) (at least 1): half of the A set.
   Several A tokens may merge into one B token. A merge is a size-weighted mean: every token
   carries the number of original tokens it represents (or the given `sizes`).

Why the default cap: a round that merges *every* A token (r = |A|) keeps exactly the B set,
whatever the content; repeated, that keeps a fixed lattice (every kept index = 3 mod 4 after two
such rounds, at keep <= 0.25). ToMe never meets this because it merges r << n / 2 per block. With
half of A merged per round, the A tokens whose best match is poorest (the most distinct content)
survive, and the next round re-splits the survivors by their new ranks, so the kept set follows
the content. The rounds shrink n by about a quarter each: about log(N / k) / log(4 / 3) rounds.

Merges only ever go into B tokens, which survive the round, so every survivor is an original
token: the `tome` selection returns these representatives' indices, and `tome_merge` returns them
together with the merged features and sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from evtp.selection.helpers import rank_desc, selected_to_indices
from evtp.selection.options import MethodOptions, option
from evtp.selection.registry import register_method
from evtp.selection.validation import check_per_token, resolve_keep, validate_tokens

__all__ = ["tome_merge", "tome_rounds"]


def tome_rounds(features: torch.Tensor, k: torch.Tensor, mask: torch.Tensor,
                sizes: torch.Tensor | None = None, *, r: int | None = None):
    """Bipartite soft matching in rounds until k[b] tokens remain in each sample.

    Args:
        features: (B, N, D) float (finite on valid tokens).
        k: (B,) long, 1 <= k[b] <= mask[b].sum().
        mask: (B, N) bool, True for real tokens.
        sizes: (B, N) float > 0 on valid tokens (tokens each already represent), default 1.
        r: per-round cap on merges (int >= 1) or None (floor(n / 4) of the current n, at least 1).
    Returns:
        kept: (B, K) long surviving original indices, ascending, -1 padded (K = max k).
        merged: (B, K, D) float32 size-weighted means of each survivor's group, 0 on padding.
        merged_sizes: (B, K) float32 total size of each group, 0 on padding.
        owner: (B, N) long, column in `kept` of the group each original token belongs to,
            -1 for padded tokens (the source map: ``merged.gather`` by owner "unmerges").
    """
    B, N, D = features.shape
    dev = features.device
    k = k.to(dev)
    ids = selected_to_indices(mask)  # (B, n) ascending originals, -1 padded
    valid = ids >= 0
    safe = ids.clamp(min=0)
    x = features.float().gather(1, safe.unsqueeze(-1).expand(-1, -1, D)).masked_fill(~valid.unsqueeze(-1), 0.0)
    if sizes is None:
        sz = valid.float()
    else:
        sz = sizes.float().gather(1, safe).masked_fill(~valid, 0.0)
    owner = torch.where(mask, torch.cumsum(mask.long(), 1) - 1, torch.full_like(ids[:, :1], -1).expand(B, N))

    while True:
        n = valid.sum(1)
        excess = n - k
        if not bool((excess > 0).any()):
            break
        nc = ids.shape[1]
        posn = torch.arange(nc, device=dev).unsqueeze(0)
        is_a = valid & (posn % 2 == 0)
        is_b = valid & (posn % 2 == 1)
        # ToMe's bound: at most floor(n / 2) merges (for odd n one A token always survives);
        # the per-round cap below keeps the choice of merged A tokens to the content
        cap = torch.div(n, 4, rounding_mode="floor").clamp(min=1) if r is None else torch.full_like(n, r)
        r_b = torch.minimum(excess.clamp(min=0), torch.minimum(torch.div(n, 2, rounding_mode="floor"), cap))
        xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # valid tokens are packed at the front, so A = even columns, B = odd columns: only the
        # (ceil(n/2), floor(n/2)) A-B block of the similarity is computed
        sim = torch.bmm(xn[:, 0::2], xn[:, 1::2].transpose(1, 2))
        sim.masked_fill_(~is_b[:, 1::2].unsqueeze(1), -math.inf)
        best_a, dest_a = sim.max(dim=2)  # first maximum: ties go to the lower B index
        del sim
        best = torch.zeros(B, nc, dtype=best_a.dtype, device=dev)
        best[:, 0::2] = best_a
        dest = torch.zeros(B, nc, dtype=torch.long, device=dev)
        dest[:, 0::2] = 2 * dest_a + 1
        best.masked_fill_(~is_a, 0.0)
        merged = is_a & (rank_desc(best, is_a) < r_b.unsqueeze(1))
        dst = torch.where(merged, dest, posn.expand(B, nc))
        wsum = torch.zeros_like(x).scatter_add_(1, dst.unsqueeze(-1).expand(-1, -1, D), x * sz.unsqueeze(-1))
        szn = torch.zeros_like(sz).scatter_add_(1, dst, sz)
        surv = valid & ~merged
        newpos = torch.cumsum(surv.long(), 1) - 1
        order = selected_to_indices(surv)  # (B, n2) columns of the survivors
        o = order.clamp(min=0)
        keep_col = order >= 0
        xs = wsum / szn.clamp_min(1e-30).unsqueeze(-1)
        x = xs.gather(1, o.unsqueeze(-1).expand(-1, -1, D)).masked_fill(~keep_col.unsqueeze(-1), 0.0)
        sz = szn.gather(1, o).masked_fill(~keep_col, 0.0)
        ids = torch.where(keep_col, ids.gather(1, o), torch.full_like(o, -1))
        valid = keep_col
        own = owner.clamp(min=0)
        owner = torch.where(owner >= 0, newpos.gather(1, dst.gather(1, own)), owner)
    return ids, x, sz, owner


def tome_merge(features: torch.Tensor, keep, *, mask: torch.Tensor | None = None,
               sizes: torch.Tensor | None = None):
    """Merge tokens down to ``keep`` by ToMe's bipartite soft matching (size-weighted means).

    Args:
        features: (N, D) or (B, N, D) float, finite on valid tokens.
        keep: int count or ratio in (0, 1] of each sample's valid tokens (as in `select_tokens`).
        mask: (N,) or (B, N) bool, True for real tokens (padded tokens are neither merged nor kept).
        sizes: (N,) or (B, N) float > 0, how many tokens each input token already represents
            (e.g. the sizes from a previous merge); default 1.
    Returns:
        merged: (k, D) or (B, K, D) size-weighted mean features of each group, in features' dtype.
        sizes: (k,) or (B, K) float32 group sizes (sum of the input sizes); total size is conserved.
        kept_indices: (k,) or (B, K) long representative (surviving) token of each group, ascending.
        Batched rows that keep fewer than K tokens are padded with 0 / 0 / -1.
    """
    inp = validate_tokens(features, mask=mask)
    m = inp.mask
    s = check_per_token(sizes, inp.B, inp.N, inp.batched, "sizes", device=m.device)
    if s is not None:
        if s.dtype == torch.bool or s.is_complex() or (not s.is_floating_point()
                                                        and s.dtype not in (torch.int32, torch.int64)):
            raise TypeError(f"sizes must be a float or integer tensor, got {s.dtype}")
        sv = s[m].float()
        if not bool(torch.isfinite(sv).all()) or not bool((sv > 0).all()):
            raise ValueError("sizes must be finite and > 0 on every valid token")
    k = resolve_keep(keep, m.sum(1))
    if inp.B == 0:
        D = features.shape[-1]
        return (features.new_zeros(0, 0, D), torch.zeros(0, 0, device=m.device),
                torch.zeros(0, 0, dtype=torch.long, device=m.device))
    x = inp.features
    kept, merged, msz, _ = tome_rounds(x, k, m, s)
    merged = merged.to(features.dtype)
    if not inp.batched:
        return merged[0], msz[0], kept[0]
    return merged, msz, kept


@dataclass(frozen=True)
class TomeOptions(MethodOptions):
    """Options of `tome`: ``r``, the per-round cap on merges (ToMe's constant r), or None (a
    quarter of the current tokens per round; see the module docstring)."""

    r: int | None = option(None, low=1)


@register_method("tome", summary="ToMe bipartite soft matching in rounds down to k; returns the survivors",
                 options=TomeOptions)
def tome(features, positions, k, *, mask, scores, generator, r):
    """Indices of the k tokens that survive ToMe merging (each represents its merged group).

    Use `tome_merge` for the merged features and sizes.

    Args:
        features: (B, N, D) float32; k: (B,) long; mask: (B, N) bool;
        r: per-round cap on merges (int >= 1, ToMe's constant r) or None (a quarter of the current
            tokens per round, at least 1; see the module docstring). Every round also merges at
            most floor(n / 2), ToMe's bound.
    Returns:
        (B, max(k)) long, -1 padded.
    """
    kept, _, _, _ = tome_rounds(features, k, mask, r=r)
    return kept
