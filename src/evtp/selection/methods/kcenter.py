"""Greedy k-center selection: `kcenter` (DivPrune's rules) and `evtp` (EVTP-IV, spatially aware).

Both build one (B, N, N) distance matrix with a single batched Gram product (the cost floor that
DivPrune's first-pick rule cannot avoid) and then run Gonzalez's greedy farthest-point loop with a
running min-distance vector: every step reads one row of the matrix, takes an element-wise minimum
and an argmax, and writes into preallocated buffers. On CPU the loop runs in NumPy (a few
microseconds per step); elsewhere it stays in torch so nothing synchronises with the host.

Metrics (half-squared Euclidean between augmented vectors, so sqrt(2 * d) is a true metric):

    kcenter:  d(i, j) = 1 - cos(x_i, x_j)
    evtp:     d(i, j) = 1 - cos(x_i, x_j) + (lambda^2 / 2) * ||p_i - p_j||^2
              = 0.5 * || [x_i/|x_i|, lambda p_i] - [x_j/|x_j|, lambda p_j] ||^2

where p are per-axis-normalised grid coordinates (`evtp.selection.positions.normalized_positions`;
the frame axis is scaled by `temporal_weight`). With lambda = 0 `evtp` computes exactly `kcenter`'s matrix.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from evtp.selection.greedy_loop import greedy_loop_compiled
from evtp.selection.groups import group_table, selected_to_indices, split_budget
from evtp.selection.positions import normalized_positions
from evtp.selection.registry import register_method

FIRST_RULES = ("divprune", "center", "norm", "random")
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
VIDEO_BUDGETS = ("global", "per_frame")
LOOPS = ("eager", "compiled")


# --------------------------------------------------------------------------------------------
# distance matrices
# --------------------------------------------------------------------------------------------
def cosine_distance_matrix(features: torch.Tensor, *, precision: str = "float32",
                           projection_dim: int | None = None, projection_seed: int = 0,
                           coords: torch.Tensor | None = None, spatial_weight: float = 0.0) -> torch.Tensor:
    """All pairwise selection distances from one batched Gram product.

    Without coordinates (or with spatial_weight = 0): d = 1 - cos(x_i, x_j) (`kcenter`).
    With them: d = 0.5 * ||a_i - a_j||^2 for the augmented vectors a = [x/|x|, lambda * p]
    (`evtp`), computed as 0.5|a_i|^2 + 0.5|a_j|^2 - a_i.a_j from the Gram product of a.

    Args:
        features: (B, N, D) float.
        precision: dtype of the Gram product ("float32" exact; "float16"/"bfloat16" fast path).
        projection_dim: if set (and < D), features are first mapped by a fixed Gaussian random
            projection D -> projection_dim (Johnson-Lindenstrauss) and re-normalised.
        projection_seed: seed of that projection (the same seed gives the same projection).
        coords: (B, N, P) float normalised coordinates, or None.
        spatial_weight: lambda, the weight of the coordinates.
    Returns:
        (B, N, N) float32 distances.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {sorted(PRECISIONS)}")
    x = features.float()
    if projection_dim is not None and projection_dim < x.shape[-1]:
        g = torch.Generator(device="cpu").manual_seed(int(projection_seed))
        proj = torch.randn(x.shape[-1], projection_dim, generator=g).to(x.device)
        x = x @ proj
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dt = PRECISIONS[precision]
    if coords is None or spatial_weight == 0:
        xd = (x / norm).to(dt)
        gram = torch.bmm(xd, xd.transpose(1, 2))
        return (gram.float() if dt != torch.float32 else gram).neg_().add_(1.0)
    # a = [x / |x|, lambda * p] written into one buffer; 0.5 |a|^2 = 0.5 (1 + lambda^2 |p|^2)
    # (0.5 lambda^2 |p|^2 for an all-zero feature vector)
    B, N, D = x.shape
    lam_p = float(spatial_weight) * coords.to(x)
    a = x.new_empty(B, N, D + lam_p.shape[-1])
    torch.div(x, norm, out=a[..., :D])
    a[..., D:] = lam_p
    half_sq = 0.5 * ((norm.squeeze(-1) > 1e-12).to(x) + (lam_p * lam_p).sum(-1))
    ad = a.to(dt)
    gram = torch.bmm(ad, ad.transpose(1, 2))
    gram = gram.float() if dt != torch.float32 else gram
    return gram.neg_().add_(half_sq.unsqueeze(2)).add_(half_sq.unsqueeze(1))


# --------------------------------------------------------------------------------------------
# first centre and the greedy loop
# --------------------------------------------------------------------------------------------
def first_center(dist: torch.Tensor, mask: torch.Tensor, rule: str, *, features: torch.Tensor | None = None,
                 coords: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index of the first centre per sample.

    Rules: "divprune" - the token whose nearest other token is farthest (argmax_i min_{j != i} d_ij);
    "center" - the token nearest the centroid of the grid; "norm" - the largest feature norm;
    "random" - uniform over valid tokens, drawn from `generator`.
    `dist` (B, N, N) gets +inf on its diagonal and on padded columns (harmless for the greedy loop,
    which masks chosen and padded tokens itself). Returns (B,) long.
    """
    B, N, _ = dist.shape
    if rule == "divprune":
        dist.diagonal(dim1=1, dim2=2).fill_(math.inf)
        if not bool(mask.all()):
            dist.masked_fill_(~mask.unsqueeze(1), math.inf)
        nn = dist.amin(dim=2).masked_fill_(~mask, -math.inf)
        # A mutual nearest-neighbour pair always ties exactly; the Gram product is not bitwise
        # symmetric, so break near-ties (1e-6 relative) towards the lower index, whatever the
        # batch shape the product was computed in.
        # (a sample with a single valid token has nn = +inf there: compare exactly, inf - inf is NaN)
        best = nn.amax(dim=1, keepdim=True)
        slack = torch.where(torch.isfinite(best), 1e-6 * best.abs().clamp(min=1.0), torch.zeros_like(best))
        near = nn >= best - slack
        return near.byte().argmax(dim=1)
    if rule == "center":
        if coords is None:
            raise ValueError("first='center' needs positions")
        w = mask.unsqueeze(-1).float()
        centroid = (coords * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        d = ((coords - centroid) ** 2).sum(-1).masked_fill_(~mask, math.inf)
        return d.argmin(dim=1)
    if rule == "norm":
        return features.norm(dim=-1).masked_fill_(~mask, -math.inf).argmax(dim=1)
    if rule == "random":
        u = torch.rand(B, N, generator=generator, device="cpu" if generator is None else generator.device)
        return u.to(mask.device).masked_fill_(~mask, -1.0).argmax(dim=1)
    raise ValueError(f"first={rule!r}; expected one of {FIRST_RULES}")


def greedy_kcenter(dist: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, first: torch.Tensor,
                   *, stop_below: float | torch.Tensor | None = None, min_keep: int = 1,
                   loop: str = "eager") -> torch.Tensor:
    """Gonzalez's greedy k-center over precomputed distances, the whole batch at once.

    Keeps a running vector of each token's distance to its nearest chosen centre; step t picks the
    farthest token (ties: lowest index). Chosen and padded tokens are masked with -inf explicitly.

    Args:
        dist: (B, N, N) float32 distances (any symmetric dissimilarity; diagonal is ignored).
            Padded columns are set to +inf in place.
        k: (B,) long, tokens to keep per sample (0 allowed: the row returns only -1).
        mask: (B, N) bool, True for real tokens.
        first: (B,) long, first centre per sample.
        stop_below: adaptive budget: a sample stops once the largest running distance (its
            covering radius) is <= stop_below (a float, or (B,) per sample); it still keeps at
            least `min_keep` tokens.
        loop: "eager" (NumPy on CPU, torch ops elsewhere) or "compiled" (`torch.compile`d steps;
            on CUDA the whole loop replayed as one captured graph, see `evtp.selection.greedy_loop`).
            Both give the same picks.
    Returns:
        (B, max(k)) long: picks in selection order, -1 where a sample keeps fewer.
    """
    if loop not in LOOPS:
        raise ValueError(f"loop={loop!r}; expected one of {LOOPS}")
    B, N, _ = dist.shape
    K = int(k.max()) if B else 0
    if K == 0:
        return torch.full((B, 0), -1, dtype=torch.long, device=dist.device)
    if not bool(mask.all()):
        # padded tokens may hold NaN features; a NaN column would poison the running minimum
        dist.masked_fill_(~mask.unsqueeze(1), math.inf)
    if loop == "compiled":
        sel, radius = greedy_loop_compiled(dist, K, mask, first)
    elif dist.device.type == "cpu":
        sel, radius = _greedy_numpy(dist, K, mask, first, track=stop_below is not None)
        sel, radius = torch.from_numpy(sel), torch.from_numpy(radius)
    else:
        sel, radius = _greedy_torch(dist, K, mask, first, track=stop_below is not None)
    steps = torch.arange(K, device=sel.device).unsqueeze(0)
    count = k.to(sel.device).clone()
    if stop_below is not None:
        # radius[:, t] = covering radius of the first t picks; the smallest t with radius <= eps
        eps = torch.as_tensor(stop_below, dtype=radius.dtype, device=radius.device).reshape(-1, 1)
        done = radius <= eps
        done[:, 0] = False
        t_stop = torch.where(done.any(1), done.float().argmax(1), torch.full_like(count, K))
        count = torch.minimum(count, t_stop.clamp(min=min_keep))
    count = torch.minimum(count, mask.sum(1).to(count.device))
    return torch.where(steps < count.unsqueeze(1), sel, torch.full_like(sel, -1))


def one_center_distance(dist: torch.Tensor, mask: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """The set's own spread: min over tokens i of max over tokens j of w_j d(i, j) (the covering
    radius of its best single token, in the loop's units), over valid tokens only.

    Args:
        dist: (B, N, N) float32 distances (not modified); mask: (B, N) bool;
        weights: (B, N) column weights (saliency) or None.
    Returns:
        (B,) float32, >= 0.
    """
    d = dist if weights is None else dist * weights.to(dist).unsqueeze(1)
    if not bool(mask.all()):
        d = d.masked_fill(~mask.unsqueeze(1), -math.inf)
    far = d.amax(dim=2).masked_fill(~mask, math.inf)  # (B, N) farthest valid token from each i
    return far.amin(dim=1).clamp_min(0.0)


def stop_distance(dist: torch.Tensor, mask: torch.Tensor, *, radius=None, relative_radius=None,
                  weights: torch.Tensor | None = None):
    """The adaptive budget's threshold in the loop's units d = half the squared Euclidean
    distance, for an absolute ``radius`` (d = radius^2 / 2) or a ``relative_radius`` eps
    (d = eps^2 * `one_center_distance`, i.e. a Euclidean radius of eps times the set's 1-centre
    radius). Returns None, a float, or (B,) float32."""
    if radius is not None and relative_radius is not None:
        raise ValueError("pass radius or relative_radius, not both")
    if relative_radius is not None:
        return float(relative_radius) ** 2 * one_center_distance(dist, mask, weights)
    return None if radius is None else 0.5 * float(radius) ** 2


def _greedy_numpy(dist: torch.Tensor, K: int, mask: torch.Tensor, first: torch.Tensor, *, track: bool):
    B, N, _ = dist.shape
    d = dist.detach().contiguous().numpy().reshape(B * N, N)  # row b * N + i = distances from token i
    sel = np.empty((K, B), dtype=np.int64)
    radius = np.full((K, B), np.inf, dtype=np.float32)
    mind = np.empty((B, N), dtype=np.float32)
    flat = mind.reshape(-1)
    rows = np.arange(B, dtype=np.int64) * N + first.cpu().numpy().astype(np.int64)
    np.take(d, rows, axis=0, out=mind)
    mind[~mask.cpu().numpy()] = -np.inf
    flat[rows] = -np.inf
    sel[0] = rows % N
    if B == 1:  # scalar indices: about 1.5 us per step
        row = d
        for t in range(1, K):
            c = int(flat.argmax())
            if track:
                radius[t, 0] = flat[c]
            sel[t, 0] = c
            np.minimum(flat, row[c], out=flat)
            flat[c] = -np.inf
    else:
        base = rows - rows % N
        c = np.empty(B, dtype=np.int64)
        row = np.empty((B, N), dtype=np.float32)
        for t in range(1, K):
            np.argmax(mind, axis=1, out=c)
            np.add(base, c, out=rows)
            if track:
                radius[t] = flat[rows]
            sel[t] = c
            np.take(d, rows, axis=0, out=row)
            np.minimum(mind, row, out=mind)
            flat[rows] = -np.inf
    if track:
        radius[radius == -np.inf] = 0.0  # every valid token already chosen
    return np.ascontiguousarray(sel.T), np.ascontiguousarray(radius.T)


def _greedy_torch(dist: torch.Tensor, K: int, mask: torch.Tensor, first: torch.Tensor, *, track: bool):
    B, N, _ = dist.shape
    dev = dist.device
    c = first.to(dev).long().clone().unsqueeze(1)  # (B, 1)
    sel = torch.empty(B, K, dtype=torch.long, device=dev)
    radius = torch.full((B, K), math.inf, device=dev)
    val = torch.empty(B, 1, device=dev)
    mind = torch.empty(B, 1, N, device=dev)
    row = torch.empty(B, 1, N, device=dev)
    neg = torch.full((B, 1), -math.inf, device=dev)
    torch.gather(dist, 1, c.unsqueeze(2).expand(B, 1, N), out=mind)
    mind = mind.squeeze(1)
    mind.masked_fill_(~mask, -math.inf)
    mind.scatter_(1, c, neg)
    sel[:, 0:1] = c
    for t in range(1, K):
        torch.max(mind, dim=1, keepdim=True, out=(val, c))
        if track:
            radius[:, t:t + 1] = val
        sel[:, t:t + 1] = c
        torch.gather(dist, 1, c.unsqueeze(2).expand(B, 1, N), out=row)
        torch.minimum(mind, row.squeeze(1), out=mind)
        mind.scatter_(1, c, neg)
    if track:
        radius[radius == -math.inf] = 0.0
    return sel, radius


# --------------------------------------------------------------------------------------------
# the two registered methods
# --------------------------------------------------------------------------------------------
def _check_common(precision, projection_dim, loop="eager", radius=None, relative_radius=None):
    if loop not in LOOPS:
        raise ValueError(f"loop={loop!r}; expected one of {LOOPS}")
    for name, v in (("radius", radius), ("relative_radius", relative_radius)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or v < 0):
            raise ValueError(f"{name} must be a finite number >= 0 or None, got {v!r}")
    if radius is not None and relative_radius is not None:
        raise ValueError(f"pass radius or relative_radius, not both (got {radius!r} and {relative_radius!r})")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {sorted(PRECISIONS)}")
    if projection_dim is not None and (isinstance(projection_dim, bool) or not isinstance(projection_dim, int)
                                       or projection_dim < 1):
        raise ValueError(f"projection_dim must be a positive int or None, got {projection_dim!r}")


@register_method("kcenter", adaptive=True,
                 summary="feature-only greedy k-center with DivPrune's rules (1 - cosine, max-NN first pick)",
                 options={"precision": "float32", "projection_dim": None, "projection_seed": 0,
                          "radius": None, "relative_radius": None, "min_keep": 1, "loop": "eager"})
def kcenter(features, positions, k, *, mask, scores=None, generator=None, precision="float32",
            projection_dim=None, projection_seed=0, radius=None, relative_radius=None, min_keep=1,
            loop="eager"):
    """Greedy k-center in 1 - cosine with DivPrune's first pick; returns (B, K) picks.

    With `keep=CoverageTarget(radius=eps)` selection stops once every token is within
    1 - cos <= eps of a kept token; with `CoverageTarget(relative_radius=eps)` once every token is
    within a chord sqrt(2 (1 - cos)) of eps times the set's 1-centre radius (see `stop_distance`).
    ``loop="compiled"``: the capturable greedy loop (`evtp.selection.greedy_loop`), same picks.
    """
    _check_common(precision, projection_dim, loop, radius, relative_radius)
    dist = cosine_distance_matrix(features, precision=precision, projection_dim=projection_dim,
                                  projection_seed=projection_seed)
    # kcenter's absolute radius is in its own unit, 1 - cos: the loop's d itself
    stop = radius if relative_radius is None else stop_distance(dist, mask, relative_radius=relative_radius)
    first = first_center(dist, mask, "divprune")
    return greedy_kcenter(dist, k, mask, first, stop_below=stop, min_keep=min_keep, loop=loop)


EVTP_DEFAULTS = {
    "spatial_weight": 1.0,
    "temporal_weight": 1.0,
    "first": "divprune",
    "video_budget": "global",
    "precision": "float32",
    "projection_dim": None,
    "projection_seed": 0,
    "radius": None,
    "relative_radius": None,
    "min_keep": 1,
    "center_features": False,
    "saliency_weight": 0.0,
    "loop": "eager",
}

SALIENCY_FLOOR = 0.05  # weight (floor + r)^alpha: the least salient token keeps floor^alpha > 0


@register_method("evtp", uses_positions=True, adaptive=True, score_options=("saliency_weight",),
                 summary="EVTP-IV: greedy k-center on [unit features, lambda * normalised (t, row, col)]",
                 options=EVTP_DEFAULTS)
def evtp(features, positions, k, *, mask, scores=None, generator=None, spatial_weight=1.0,
         temporal_weight=1.0, first="divprune", video_budget="global", precision="float32",
         projection_dim=None, projection_seed=0, radius=None, relative_radius=None, min_keep=1,
         center_features=False, saliency_weight=0.0, loop="eager"):
    """EVTP-IV: greedy k-center whose metric adds spatial (and temporal) distance to feature distance.

    Options:
        spatial_weight (lambda): weight of the coordinates against unit-norm features; 0 gives
            exactly `kcenter`'s metric.
        temporal_weight: scale of the normalised frame axis relative to the row/col axes (video).
        first: first-centre rule, one of "divprune", "center", "norm", "random".
        video_budget: "global" (one budget over all frames, frame index in the metric) or
            "per_frame" (the budget split over frames in proportion to their tokens, k-center per frame).
        precision / projection_dim: fast paths for the Gram product (see `cosine_distance_matrix`).
        radius: adaptive budget (set by `CoverageTarget`), in the metric sqrt(2 d) above.
        relative_radius: adaptive budget as a fraction of the set's 1-centre radius in the same
            metric (`CoverageTarget(relative_radius=...)`; per frame with video_budget="per_frame").
        center_features: subtract each sample's mean feature (over its valid tokens) before the
            cosine, so that a component shared by all tokens (a LayerNorm bias, a register
            direction) does not make every pair look alike.
        saliency_weight (alpha): 0 (default) is plain EVTP-IV. With alpha > 0 it needs ``scores``
            (per-token importance, larger = more salient) and the greedy step picks
            argmax_i w_i * min_c d(i, c) with w_i = (SALIENCY_FLOOR + r_i)^alpha, r the scores
            min-max normalised per sample: a weighted k-center that still spreads the picks over
            features and space but prefers salient tokens, so it spends fewer of them on empty
            background. The first centre still follows ``first``; an adaptive ``radius`` applies to
            the weighted distances.
        loop: "eager" or "compiled" (the capturable greedy loop, `evtp.selection.greedy_loop`;
            the same picks).
    """
    _check_common(precision, projection_dim, loop, radius, relative_radius)
    if not isinstance(center_features, bool):
        raise ValueError(f"center_features must be True or False, got {center_features!r}")
    if center_features:
        w = mask.to(features.dtype).unsqueeze(-1)
        mean = (features * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)
        features = features - mean
    if first not in FIRST_RULES:
        raise ValueError(f"first={first!r}; expected one of {FIRST_RULES}")
    if video_budget not in VIDEO_BUDGETS:
        raise ValueError(f"video_budget={video_budget!r}; expected one of {VIDEO_BUDGETS}")
    for name, v in (("spatial_weight", spatial_weight), ("temporal_weight", temporal_weight),
                    ("saliency_weight", saliency_weight)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if positions is None and (spatial_weight != 0 or first == "center"):
        raise ValueError("method 'evtp' needs positions=... (row, col) or (frame, row, col) grid "
                         "coordinates; use method='kcenter' or spatial_weight=0 for feature-only selection")
    weights = None
    if saliency_weight > 0:
        if scores is None:
            raise ValueError("evtp with saliency_weight > 0 needs scores=... (per-token importance, e.g. "
                             "the vision encoder's attention); pass them or set saliency_weight=0")
        weights = saliency_weights(scores, mask, saliency_weight)
    budget = dict(radius=radius, relative_radius=relative_radius, min_keep=min_keep, loop=loop)
    if positions is not None and positions.shape[-1] == 3 and video_budget == "per_frame":
        return _per_frame(features, positions, k, mask, spatial_weight=spatial_weight, first=first,
                          precision=precision, projection_dim=projection_dim,
                          projection_seed=projection_seed, generator=generator, weights=weights, **budget)
    return _evtp_batch(features, positions, k, mask, spatial_weight=spatial_weight,
                       temporal_weight=temporal_weight, first=first, precision=precision,
                       projection_dim=projection_dim, projection_seed=projection_seed,
                       generator=generator, weights=weights, **budget)


def saliency_weights(scores: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-token k-center weights w = (SALIENCY_FLOOR + r)^alpha, r = min-max normalised scores.

    Args:
        scores: (B, N) float importance (larger = more salient); mask: (B, N) bool.
    Returns:
        (B, N) float32 weights in [SALIENCY_FLOOR^alpha, (1 + SALIENCY_FLOOR)^alpha].
    """
    from evtp.selection.methods.dpp import relevance

    return (SALIENCY_FLOOR + relevance(scores, mask)) ** float(alpha)


def _evtp_batch(features, positions, k, mask, *, spatial_weight, temporal_weight=1.0, first,
                precision, projection_dim, projection_seed, generator, radius, relative_radius, min_keep,
                loop, weights=None):
    coords = None
    if positions is not None:
        coords = normalized_positions(positions, mask=mask, temporal_weight=temporal_weight)
    dist = cosine_distance_matrix(features, precision=precision, projection_dim=projection_dim,
                                  projection_seed=projection_seed, coords=coords,
                                  spatial_weight=spatial_weight)
    stop = stop_distance(dist, mask, radius=radius, relative_radius=relative_radius, weights=weights)
    c0 = first_center(dist, mask, first, features=features, coords=coords, generator=generator)
    if weights is not None:
        # column scaling: the running minimum over rows c of w_i * d(c, i) is w_i * min_c d(c, i)
        dist.mul_(weights.to(dist).unsqueeze(1))
    return greedy_kcenter(dist, k, mask, c0, stop_below=stop, min_keep=min_keep, loop=loop)


def _per_frame(features, positions, k, mask, *, spatial_weight, first, precision, projection_dim,
               projection_seed, generator, weights=None, **budget):
    """k-center inside each frame, the budget split over frames by their token counts."""
    B, N, D = features.shape
    frame = positions[..., 0] - positions[..., 0].min()
    F = int(frame.max()) + 1
    groups = torch.arange(B, device=features.device).unsqueeze(1) * F + frame  # (B, N) global ids
    table, valid = group_table(groups, mask)  # (G, M) flat indices b * N + n
    present = torch.unique(groups[mask])  # (G,) the ids of the table's rows, ascending
    counts = torch.bincount(groups[mask], minlength=B * F).view(B, F)
    kf = split_budget(k, counts).flatten()[present]  # (G,)
    src = table.clamp(min=0)
    picks = _evtp_batch(features.reshape(B * N, D)[src], positions.reshape(B * N, -1)[src][..., 1:],
                        kf, valid, spatial_weight=spatial_weight, first=first, precision=precision,
                        projection_dim=projection_dim, projection_seed=projection_seed,
                        generator=generator, weights=None if weights is None else weights.reshape(B * N)[src],
                        **budget)
    flat = table.gather(1, picks.clamp(min=0))[picks >= 0]
    selected = torch.zeros(B * N, dtype=torch.bool, device=features.device)
    selected[flat] = True
    return selected_to_indices(selected.view(B, N))
