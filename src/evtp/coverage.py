"""Coverage measures: how well a kept subset of tokens represents the full set.

All functions are pure, vectorised over the batch and accept an optional padding mask.
Shapes (ToMe style):

    features:  (N, D) or (B, N, D) float
    positions: (N, P) or (B, N, P) integer grid coordinates, P = 2 (row, col) or 3 (frame, row, col)
    kept:      (k,) or (B, K) long indices into the token axis; -1 entries are padding (ignored)
    mask:      (N,) or (B, N) bool, True for real tokens (padded tokens are neither covered nor cover)

Unbatched input gives 0-d results, batched input (B,) results.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from evtp.selection.positions import normalized_positions
from evtp.selection.validation import validate_tokens

__all__ = ["normalized_positions", "nearest_kept_distance", "covering_radius", "one_center_radius",
           "relative_covering_radius", "mean_nearest_distance",
           "spatial_coverage", "coverage_information", "CoverageInformation", "gaussian_rate_distortion",
           "METRICS"]

METRICS = ("feature", "spatial", "combined")


# ----------------------------------------------------------------------------------------------
# input checks (the shared ones live in evtp.selection.validation)
# ----------------------------------------------------------------------------------------------
def _check_kept(kept, B, N, batched, m):
    """(B, K) long kept indices with -1 padding; every real entry in range, on a valid token, unique."""
    if not isinstance(kept, torch.Tensor):
        raise TypeError(f"kept must be a torch.Tensor of token indices, got {type(kept).__name__}")
    if kept.dtype == torch.bool or kept.is_floating_point() or kept.is_complex():
        raise TypeError(f"kept must hold integer token indices (e.g. from select_tokens), got {kept.dtype}")
    want = 2 if batched else 1
    if kept.dim() != want or (batched and kept.shape[0] != B):
        raise ValueError(f"kept has shape {tuple(kept.shape)}; expected {'(B, K)' if batched else '(k,)'} "
                         f"{'with B = ' + str(B) if batched else ''}".rstrip())
    kb = (kept if batched else kept.unsqueeze(0)).long().to(m.device)
    real = kb >= 0
    if bool((kb < -1).any()) or bool((kb >= N).any()):
        raise ValueError(f"kept has indices outside [0, {N}) (use -1 only as padding)")
    if not bool(real.any(1).all()):
        raise ValueError("kept leaves a sample with no kept token; every sample needs at least one")
    if not bool(m.gather(1, kb.clamp(min=0))[real].all()):
        raise ValueError("kept contains a padded token (mask is False there)")
    return kb, real


def _resolve_weights(spatial_weight, temporal_weight):
    """Defaults and checks come from the `evtp` selection method's options class, so the combined
    metric matches it."""
    from evtp.selection.registry import METHODS
    import evtp.selection  # noqa: F401  (registers the methods)

    given = {k: v for k, v in (("spatial_weight", spatial_weight), ("temporal_weight", temporal_weight))
             if v is not None}
    opts = METHODS["evtp"].make_options(given)
    return opts.spatial_weight, opts.temporal_weight


def _prepare(features, kept, positions, metric, mask, spatial_weight, temporal_weight):
    """Validate and batch everything; returns a dict of (B, ...) tensors. ``kept=None`` means
    every valid token (for the set's own spread)."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; expected one of {METRICS}")
    if features is None and metric != "spatial":
        raise ValueError(f"metric={metric!r} needs features")
    needs_pos = metric in ("spatial", "combined")
    if needs_pos and not isinstance(positions, torch.Tensor):
        raise ValueError(f"metric={metric!r} needs positions=... (row, col) or (frame, row, col)")
    inp = validate_tokens(features, positions if needs_pos else None, mask=mask, integer_positions=False)
    x, p, m, batched = inp.features, inp.positions, inp.mask, inp.batched
    B, N = inp.B, inp.N
    if kept is None:
        kb = torch.arange(N, device=m.device).expand(B, N).masked_fill(~m, -1)
        real = kb >= 0
    else:
        kb, real = _check_kept(kept, B, N, batched, m)
    sw, tw = _resolve_weights(spatial_weight, temporal_weight)
    return dict(x=x, p=p, m=m, kb=kb, real=real, batched=batched, sw=sw, tw=tw)


def _embedding(d, metric):
    """(B, N, E) float32 points whose Euclidean distance is the metric (feature: unit vectors)."""
    parts = []
    if metric in ("feature", "combined"):
        x = d["x"].float()
        parts.append(x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    if metric == "combined":
        parts.append(d["sw"] * normalized_positions(d["p"], d["m"], temporal_weight=d["tw"]))
    if metric == "spatial":
        p = d["p"].float()
        if p.shape[-1] == 3 and d["tw"] != 1.0:
            p = p * torch.tensor([d["tw"], 1.0, 1.0], device=p.device)
        parts.append(p)
    return torch.cat(parts, -1).masked_fill(~d["m"].unsqueeze(-1), 0.0)  # padded may hold NaN


def _pairwise(d, metric):
    """(B, N, K) distances from every token to every kept token (+inf on -1 kept padding)."""
    kb, real = d["kb"], d["real"]
    idx = kb.clamp(min=0)
    if metric == "feature":
        x = d["x"].float()
        xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        xk = xn.gather(1, idx.unsqueeze(-1).expand(-1, -1, xn.shape[-1]))
        dist = (1.0 - torch.bmm(xn, xk.transpose(1, 2))).clamp_min(0.0)
    else:
        e = _embedding(d, metric)
        ek = e.gather(1, idx.unsqueeze(-1).expand(-1, -1, e.shape[-1]))
        if metric == "spatial":
            dist = torch.cdist(e, ek, compute_mode="donot_use_mm_for_euclid_dist")
        else:  # combined: exact split into a Gram part and a low-dimensional coordinate part
            E = d["x"].shape[-1]
            cos = torch.bmm(e[..., :E], ek[..., :E].transpose(1, 2))
            sq = (2.0 - 2.0 * cos).clamp_min(0.0)
            sq = sq + torch.cdist(e[..., E:], ek[..., E:], compute_mode="donot_use_mm_for_euclid_dist") ** 2
            dist = sq.sqrt()
    return dist.masked_fill(~real.unsqueeze(1), math.inf)


def _out(t, batched):
    return t if batched else t[0]


# ----------------------------------------------------------------------------------------------
# coverage measures
# ----------------------------------------------------------------------------------------------
def nearest_kept_distance(features, kept, positions=None, *, metric="feature", spatial_weight=None,
                          temporal_weight=None, mask=None) -> torch.Tensor:
    """Distance from every token to its nearest kept token.

    Metrics:
        "feature":  1 - cos(x_i, x_j) (DivPrune's distance; kept tokens are at 0).
        "spatial":  Euclidean distance in grid cells between (row, col) or (frame, row, col)
                    coordinates (the frame axis scaled by `temporal_weight`).
        "combined": Euclidean distance between [x/||x||, spatial_weight * p̂], p̂ from
                    `normalized_positions(positions, mask, temporal_weight)` - the `evtp` selection
                    metric (its ``radius``); equals sqrt(2 (1 - cos) + spatial_weight^2 ||Δp̂||^2).
        `spatial_weight` / `temporal_weight` default to the `evtp` method's defaults.

    Args:
        features: (N, D) or (B, N, D) float (may be None for metric="spatial").
        kept: (k,) or (B, K) long token indices, -1 = padding.
        positions: (N, P) or (B, N, P) grid coordinates (spatial / combined metrics).
        mask: (N,) or (B, N) bool, True for real tokens.
    Returns:
        (N,) or (B, N) float32 distances; NaN on padded tokens.
    """
    d = _prepare(features, kept, positions, metric, mask, spatial_weight, temporal_weight)
    near = _pairwise(d, metric).amin(-1).masked_fill(~d["m"], math.nan)
    return _out(near, d["batched"])


def covering_radius(features, kept, positions=None, *, metric="feature", spatial_weight=None,
                    temporal_weight=None, mask=None) -> torch.Tensor:
    """Covering radius: max over valid tokens of the distance to the nearest kept token.

    The quantity greedy k-center minimises (within a factor 2). Arguments and metrics as in
    `nearest_kept_distance`.

    Returns:
        0-d (unbatched) or (B,) float32.
    """
    d = _prepare(features, kept, positions, metric, mask, spatial_weight, temporal_weight)
    near = _pairwise(d, metric).amin(-1).masked_fill(~d["m"], -math.inf)
    return _out(near.amax(-1), d["batched"])


def one_center_radius(features, positions=None, *, metric="feature", spatial_weight=None,
                      temporal_weight=None, mask=None) -> torch.Tensor:
    """The set's own spread: the smallest covering radius a single kept token can reach,
    min over tokens i of max over tokens j of the distance d(i, j) (valid tokens only).

    It is the unit of `CoverageTarget(relative_radius=...)` and of `relative_covering_radius`.
    Arguments and metrics (and units: 1 - cos for "feature") as in `nearest_kept_distance`; it
    builds all N x N distances.

    Returns:
        0-d (unbatched) or (B,) float32.
    """
    d = _prepare(features, None, positions, metric, mask, spatial_weight, temporal_weight)
    far = _pairwise(d, metric).masked_fill(~d["m"].unsqueeze(1), -math.inf).amax(-1)  # (B, N)
    return _out(far.masked_fill(~d["m"], math.inf).amin(-1), d["batched"])


def relative_covering_radius(features, kept, positions=None, *, metric="feature", spatial_weight=None,
                             temporal_weight=None, mask=None) -> torch.Tensor:
    """Covering radius as a fraction of the set's 1-centre radius (`one_center_radius`), both as
    Euclidean distances in the metric's embedding (for "feature" the chord sqrt(2 (1 - cos)), so
    the ratio is sqrt(radius / one-centre radius) in 1 - cos units).

    This is the scale of `CoverageTarget(relative_radius=...)`: a selection with that target
    stops at the first greedy pick where this value is <= the target. 1 is what the best single
    token achieves, 0 means every token is kept (or duplicates a kept one); 0 when all tokens
    coincide. Arguments as in `nearest_kept_distance`.

    Returns:
        0-d (unbatched) or (B,) float32.
    """
    r = covering_radius(features, kept, positions, metric=metric, spatial_weight=spatial_weight,
                        temporal_weight=temporal_weight, mask=mask)
    one = one_center_radius(features, positions, metric=metric, spatial_weight=spatial_weight,
                            temporal_weight=temporal_weight, mask=mask)
    ratio = torch.where(one > 0, r / one.clamp_min(1e-30), torch.zeros_like(r))
    return ratio.clamp_min(0.0).sqrt() if metric == "feature" else ratio


def mean_nearest_distance(features, kept, positions=None, *, metric="feature", spatial_weight=None,
                          temporal_weight=None, mask=None) -> torch.Tensor:
    """Mean over valid tokens (kept ones included, at distance 0) of the distance to the nearest kept token.

    Arguments and metrics as in `nearest_kept_distance`.

    Returns:
        0-d (unbatched) or (B,) float32.
    """
    d = _prepare(features, kept, positions, metric, mask, spatial_weight, temporal_weight)
    near = _pairwise(d, metric).amin(-1).masked_fill(~d["m"], 0.0)
    return _out(near.sum(-1) / d["m"].sum(-1), d["batched"])


def spatial_coverage(positions, kept, r: int = 1, mask=None) -> torch.Tensor:
    """Share of grid cells within r cells (Chebyshev distance, same frame for video) of a kept token.

    A cell is a valid token's (row, col) position; for P = 3 a token is covered only by kept
    tokens of its own frame. r = 0 gives the kept share of the cells.

    Args:
        positions: (N, P) or (B, N, P) integer grid coordinates, P = 2 or 3.
        kept: (k,) or (B, K) long indices, -1 = padding.
        r: int >= 0, neighbourhood radius in cells.
        mask: (N,) or (B, N) bool, True for real tokens.
    Returns:
        0-d or (B,) float32 in [0, 1].
    """
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be an int >= 0 (cells), got {r!r}")
    inp = validate_tokens(None, positions, mask=mask, integer_positions=True)
    p, m, batched = inp.positions, inp.mask, inp.batched
    kb, real = _check_kept(kept, inp.B, inp.N, batched, m)
    p = p.long()
    pk = p.gather(1, kb.clamp(min=0).unsqueeze(-1).expand(-1, -1, p.shape[-1]))  # (B, K, P)
    diff = (p.unsqueeze(2) - pk.unsqueeze(1)).abs()  # (B, N, K, P)
    cheb = diff[..., -2:].amax(-1)
    near = (cheb <= r) & real.unsqueeze(1)
    if p.shape[-1] == 3:
        near &= diff[..., 0] == 0
    covered = near.any(-1) & m
    return _out(covered.sum(-1).float() / m.sum(-1).float(), batched)


# ----------------------------------------------------------------------------------------------
# information view
# ----------------------------------------------------------------------------------------------
class CoverageInformation(NamedTuple):
    """Rate-distortion summary of a kept subset seen as a codebook; every field 0-d or (B,).

    distortion:    E ||z - q(z)||^2, the mean squared distance (in the metric's embedding) from a
                   token z to its nearest kept token q(z) (for "feature", z = x/||x|| and
                   ||z - q(z)||^2 = 2 (1 - cos), twice the feature-metric distance).
    variance:      total variance tr Cov(z) of the tokens (the distortion of the best 1-point code).
    explained:     1 - distortion / variance (share of the token variance the subset reproduces).
    rate:          Gaussian rate-distortion function R(distortion) in nats (reverse water-filling
                   on the eigenvalues of Cov(z)): the mutual information I(Z; Ẑ) any representation
                   with that distortion must carry about a Gaussian source with the tokens'
                   covariance; inf at distortion 0.
    cell_entropy:  H(q(Z)) in nats for Z uniform over the valid tokens: the information the
                   nearest-kept assignment carries (<= log k); I(Z; q(Z)) equals it exactly.
    """

    distortion: torch.Tensor
    variance: torch.Tensor
    explained: torch.Tensor
    rate: torch.Tensor
    cell_entropy: torch.Tensor


def gaussian_rate_distortion(eigenvalues: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
    """R(D) of a Gaussian vector source under squared error, by reverse water-filling.

    R(D) = sum_i max(0, 1/2 log(lambda_i / theta)) with theta such that sum_i min(lambda_i, theta) = D.

    Args:
        eigenvalues: (B, E) float >= 0, covariance eigenvalues (any order).
        distortion: (B,) float >= 0, total squared-error distortion D.
    Returns:
        (B,) float64 rate in nats (0 when D >= sum lambda, inf when D = 0 and some lambda > 0).
    """
    lam = eigenvalues.double().clamp_min(0.0).sort(dim=-1, descending=True).values
    Dt = distortion.double().unsqueeze(-1)
    E = lam.shape[-1]
    j = torch.arange(1, E + 1, device=lam.device, dtype=torch.float64)
    tail = lam.sum(-1, keepdim=True) - torch.cumsum(lam, -1)  # sum_{i > j} lambda_i
    F = j * lam + tail  # water level at lambda_j gives total distortion F_j (non-increasing in j)
    above = (F > Dt) & (lam > 0)
    n_above = above.sum(-1, keepdim=True)  # components with lambda_i > theta
    jj = n_above.clamp(min=1)
    tail_at = tail.gather(-1, jj - 1)
    theta = ((Dt - tail_at) / jj.double()).clamp_min(0.0)
    ratio = torch.where(above, lam / theta, torch.ones_like(lam))
    rate = 0.5 * torch.log(ratio).sum(-1)
    return torch.where(n_above.squeeze(-1) > 0, rate, torch.zeros_like(rate))


def coverage_information(features, kept, positions=None, *, metric="feature", spatial_weight=None,
                         temporal_weight=None, mask=None) -> CoverageInformation:
    """The kept tokens as a quantisation codebook for all tokens: distortion, rate and entropy.

    Every token z (the metric's embedding: unit features, grid coordinates, or
    [x/||x||, spatial_weight * p̂] for "combined") is represented by its nearest kept token q(z).
    See `CoverageInformation` for the fields and docs/methods_baselines.md ("Why coverage
    predicts segmentation quality") for the argument. Arguments as in `nearest_kept_distance`.

    Returns:
        CoverageInformation of 0-d (unbatched) or (B,) tensors (rate float64, the rest float32).
    """
    d = _prepare(features, kept, positions, metric, mask, spatial_weight, temporal_weight)
    m = d["m"]
    n = m.sum(-1)
    dist = _pairwise(d, metric)  # (B, N, K)
    near, which = dist.min(-1)  # first minimum: ties to the lower kept column
    # squared Euclidean distance in the embedding; on the unit sphere |u - v|^2 = 2 (1 - cos)
    sq = 2.0 * near if metric == "feature" else near ** 2
    distortion = sq.masked_fill(~m, 0.0).sum(-1) / n
    z = _embedding(d, metric).double()
    mu = z.sum(1, keepdim=True) / n.view(-1, 1, 1)
    zc = (z - mu).masked_fill(~m.unsqueeze(-1), 0.0)
    variance = (zc ** 2).sum((1, 2)) / n
    sv = torch.linalg.svdvals(zc)  # (B, min(N, E))
    lam = sv ** 2 / n.unsqueeze(-1).double()
    rate = gaussian_rate_distortion(lam, distortion.double())
    K = dist.shape[-1]
    counts = torch.zeros(m.shape[0], K, dtype=torch.float64, device=m.device)
    counts.scatter_add_(1, which, m.double())
    pr = counts / n.unsqueeze(-1).double()
    cell_entropy = -(torch.where(pr > 0, pr * torch.log(pr), torch.zeros_like(pr))).sum(-1)
    explained = torch.where(variance > 0, 1.0 - distortion.double() / variance, torch.ones_like(variance))
    b = d["batched"]
    return CoverageInformation(_out(distortion.float(), b), _out(variance.float(), b),
                               _out(explained.float(), b), _out(rate, b), _out(cell_entropy.float(), b))
