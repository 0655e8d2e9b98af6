"""`dpp`: CDPruner's conditional determinantal point process with fast greedy MAP inference.

Kernel (per sample, fp32):

    S = cos(x_i, x_j)                      (N, N) cosine similarity of the features
    r = (s - min s) / (max s - min s)      relevance from `scores`, min-max normalised over the
                                           sample's valid tokens (r = 1 when no scores are given
                                           or all scores are equal)
    L = diag(r) S diag(r)

Greedy MAP (Chen et al., "Fast greedy MAP inference for DPP", NeurIPS 2018; the incremental
Cholesky form CDPruner uses): every candidate i keeps its marginal gain g_i = det(L_{S+i}) / det(L_S)
(initially L_ii) and a coefficient vector c_i. A step picks j = argmax g, computes for every i
e_i = (L_ji - <c_j, c_i>) / sqrt(g_j), appends e_i to c_i and subtracts e_i^2 from g_i, then sets
g_j = -inf so a chosen token can never be picked again (padded tokens start at -inf). The loop over
the k picks is inherently sequential; each step is one batched (1 x t) @ (t x N) product per sample
and writes into preallocated buffers (O(k^2 N) memory traffic in all, as in CDPruner).

The kernel depends on the features only through cosines, so scaling the features changes no
pick: S's diagonal is set to exactly 1 (0 for an all-zero feature vector). Without it the rounded
diagonal (1 up to a few ulp, depending on the scale) would decide the first pick, where every
token ties at gain 1 when no scores are given; the tie goes to the lowest index.

CDPruner's sign quirk: in CDPruner's code the relevance is the mean over instruction tokens of the
cosine between CLIP image and text embeddings, and the code negates that mean before the min-max
normalisation, so the tokens *least* similar to the instruction get relevance 1. We take `scores`
as given (larger = more relevant); pass ``negate_scores=True`` to reproduce the quirk exactly.

When the kernel is rank-deficient (more picks than its rank, or duplicated tokens), the remaining
gains reach zero up to rounding; a gain at or below ``eps`` or `RANK_TOLERANCE` times the sample's
largest initial gain counts as exactly 0 (it adds no Cholesky column), so the following picks go
by lowest index and exactly k tokens are always returned, the same for any scale of the features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from evtp.selection.helpers import relevance
from evtp.selection.options import MethodOptions, option
from evtp.selection.registry import register_method


def dpp_kernel(features: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor | None = None,
               *, negate_scores: bool = False) -> torch.Tensor:
    """CDPruner's conditional kernel L = diag(r) S diag(r).

    Args:
        features: (B, N, D) float.
        mask: (B, N) bool, True for real tokens (padded rows/columns of L are 0).
        scores: (B, N) float relevance or None (r = 1).
        negate_scores: use -scores (CDPruner's sign quirk).
    Returns:
        (B, N, N) float32 kernel.
    """
    x = features.float()
    norm = x.norm(dim=-1, keepdim=True)
    x = x / norm.clamp_min(1e-12)
    x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # padded tokens may hold NaN
    L = torch.bmm(x, x.transpose(1, 2))
    # cos(x, x) = 1 exactly: the rounded diagonal (1 +- a few ulp, depending on the features'
    # scale) would otherwise decide the first pick, which ties for every token without scores
    L.diagonal(dim1=1, dim2=2).copy_((norm.squeeze(-1) > 1e-12) & mask)
    if scores is not None:
        r = relevance(scores, mask, negate=negate_scores)
        L.mul_(r.unsqueeze(2)).mul_(r.unsqueeze(1))
    return L


RANK_TOLERANCE = 1e-5  # float32 rounding of the incremental Cholesky stays well below this share


def greedy_map(L: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-10) -> torch.Tensor:
    """Fast greedy MAP for a batch of DPP kernels (incremental Cholesky).

    Args:
        L: (B, N, N) float32 symmetric PSD kernels.
        k: (B,) long picks per sample, k[b] <= mask[b].sum().
        mask: (B, N) bool, True for real tokens (never picks a padded token).
        eps: gains at or below eps (or below `RANK_TOLERANCE` times the sample's largest
            initial gain) add no Cholesky column and count as 0 (rank-deficient kernels).
    Returns:
        (B, max(k)) long picks in selection order, -1 where a sample keeps fewer.
    """
    B, N, _ = L.shape
    dev = L.device
    K = int(k.max()) if B else 0
    sel = torch.full((B, K), -1, dtype=torch.long, device=dev)
    if K == 0:
        return sel
    C = torch.zeros(B, K, N, dtype=torch.float32, device=dev)  # Cholesky rows c_i, built column by column
    gain = L.diagonal(dim1=1, dim2=2).clone().masked_fill_(~mask, -math.inf)
    ar = torch.arange(B, device=dev)
    k = k.to(dev)
    dot = torch.empty(B, 1, N, dtype=torch.float32, device=dev)  # <c_j, c_i> for all i
    # gains at or below tol are rounding noise of a spent rank: snapped to 0, so that the picks
    # after it go by lowest index whatever the features' scale
    tol = gain.masked_fill(~mask, 0.0).amax(1).mul(RANK_TOLERANCE).clamp_min(eps).unsqueeze(1)  # (B, 1)
    for t in range(K):
        j = gain.argmax(dim=1)  # (B,)  ties: lowest index
        gj = gain[ar, j]
        active = t < k
        sel[:, t] = torch.where(active, j, sel[:, t])
        ok = active & (gj > tol.squeeze(1))
        e = C[:, t]  # (B, N) view: this step's Cholesky column, written in place
        e.copy_(L.gather(1, j.view(B, 1, 1).expand(B, 1, N)).squeeze(1))  # row L_j (gather: no copy of L)
        if t:
            torch.bmm(C[ar, :t, j].unsqueeze(1), C[:, :t], out=dot)
            e.sub_(dot.squeeze(1))
        e.mul_((ok / gj.clamp_min(eps).sqrt()).unsqueeze(1))
        gain.addcmul_(e, e, value=-1.0)
        gain.masked_fill_((gain <= tol) & (gain > -math.inf), 0.0)
        gain[ar, j] = -math.inf
    return sel


@dataclass(frozen=True)
class DppOptions(MethodOptions):
    """Options of `dpp`: ``negate_scores`` reproduces CDPruner's sign quirk; ``eps`` is the gain at
    or below which a pick adds no Cholesky column (rank-deficient kernels)."""

    negate_scores: bool = False
    eps: float = option(1e-10, low=0)


@register_method("dpp", summary="CDPruner: conditional DPP (cosine x relevance from scores), greedy MAP",
                 options=DppOptions)
def dpp(features, positions, k, *, mask, scores, generator, negate_scores, eps):
    """CDPruner's conditional DPP selection (see the module docstring).

    Args:
        features: (B, N, D) float32; k: (B,) long; mask: (B, N) bool;
        scores: (B, N) relevance (larger = more relevant) or None for the plain similarity DPP.
        negate_scores: reproduce CDPruner's sign quirk; eps: rank-deficiency threshold.
    Returns:
        (B, max(k)) long, -1 padded.
    """
    L = dpp_kernel(features, mask, scores, negate_scores=negate_scores)
    return greedy_map(L, k, mask, eps=float(eps))
