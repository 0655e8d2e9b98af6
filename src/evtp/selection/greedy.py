"""The shared core of the greedy k-center methods (`kcenter`, `evtp`): one distance matrix from one
batched Gram product, the first centre, and Gonzalez's greedy farthest-point loop driven to a fixed
or an adaptive budget.

The Gram product is the cost DivPrune's first-pick rule cannot avoid (every token's
nearest-neighbour distance needs every pair's product; on one CPU thread each pair is computed
about once, `gram_matrix`); the loop (`evtp.selection.greedy_loop`) keeps a running min-distance
vector, so each step reads one row of the matrix, takes an element-wise minimum and an argmax.

Metrics (half-squared Euclidean between augmented vectors, so sqrt(2 * d) is a true metric):

    kcenter:  d(i, j) = 1 - cos(x_i, x_j)
    evtp:     d(i, j) = 1 - cos(x_i, x_j) + (lambda^2 / 2) * ||p_i - p_j||^2
              = 0.5 * || [x_i/|x_i|, lambda p_i] - [x_j/|x_j|, lambda p_j] ||^2

where p are per-axis-normalised grid coordinates (`evtp.selection.positions.normalized_positions`;
the frame axis is scaled by `temporal_weight`). With lambda = 0 `evtp` computes exactly `kcenter`'s matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evtp.selection.options import MethodOptions, option
from evtp.selection.greedy_loop import greedy_loop_compiled, greedy_loop_numpy, greedy_loop_torch

FIRST_RULES = ("divprune", "center", "norm", "random")
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LOOPS = ("eager", "compiled")
NORM_FLOOR = 1e-12  # a feature row with a smaller norm is all zero, or rescaled first (`in_float32_range`)
GRAM_STRIP_ROWS = 128  # rows per strip of the symmetric Gram product on CPU (`gram_matrix`)
GRAM_STRIP_MIN_DIM = 128  # narrower features take one full product: the mirror copies cost more than they save
GRAM_MIRROR_ROWS = 512  # a block is mirrored in pieces of this many source rows (N = 3328: 11 ms against 25 ms whole)


def cosine_distance_matrix(features: torch.Tensor, *, precision: str = "float32",
                           projection_dim: int | None = None, projection_seed: int = 0,
                           coords: torch.Tensor | None = None, spatial_weight: float = 0.0,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
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
        mask: (B, N) bool, True for real tokens (padded ones may hold NaN or inf), or None.
    Returns:
        (B, N, N) float32 distances.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {sorted(PRECISIONS)}")
    x = features.float()
    if projection_dim is not None and projection_dim < x.shape[-1]:
        g = torch.Generator(device="cpu").manual_seed(int(projection_seed))
        proj = torch.randn(x.shape[-1], projection_dim, generator=g).to(x.device)
        x = in_float32_range(x, mask)[0] @ proj
    x, norm = in_float32_range(x, mask)
    norm = norm.clamp_min(NORM_FLOOR)
    dt = PRECISIONS[precision]
    if coords is None or spatial_weight == 0:
        xd = (x / norm).to(dt)
        gram = gram_matrix(xd)
        gram = gram.float() if dt != torch.float32 else gram
        return torch.sub(gram.new_ones(()), gram, out=gram)  # 1 - gram in one pass
    # a = [x / |x|, lambda * p] written into one buffer; 0.5 |a|^2 = 0.5 (1 + lambda^2 |p|^2)
    # (0.5 lambda^2 |p|^2 for an all-zero feature vector)
    B, N, D = x.shape
    lam_p = float(spatial_weight) * coords.to(x)
    a = x.new_empty(B, N, D + lam_p.shape[-1])
    torch.div(x, norm, out=a[..., :D])
    a[..., D:] = lam_p
    half_sq = 0.5 * ((norm.squeeze(-1) > NORM_FLOOR).to(x) + (lam_p * lam_p).sum(-1))
    ad = a.to(dt)
    gram = gram_matrix(ad)
    gram = gram.float() if dt != torch.float32 else gram
    return torch.sub(half_sq.unsqueeze(2), gram, out=gram).add_(half_sq.unsqueeze(1))


def gram_matrix(a: torch.Tensor) -> torch.Tensor:
    """The Gram product a a^T, on CPU computed by row strips from the diagonal block rightwards.

    The product is symmetric, so each strip of `GRAM_STRIP_ROWS` rows multiplies only the columns
    from its own diagonal block on, and every block below the diagonal is copied from its mirror
    image above (in pieces of `GRAM_MIRROR_ROWS` rows: one long transposed read misses the cache):
    about (1 + h / N) / 2 of the multiply-adds of one full product (0.55 at N = 1280, h = 128).
    The entries the strips compute are the full product's bit for bit where the full product is
    bitwise symmetric (MKL on this CPU: `test_gram_matrix_is_the_full_product`), so the picks do
    not change. One full product is taken instead for narrow features (C < `GRAM_STRIP_MIN_DIM`:
    the mirror copies cost more than they save), short sequences (N < 2 h), other devices (where
    kernel launches, not the product, are the cost) and more than one torch thread (every strip
    and copy is then a parallel region, and on a shared CPU each region waits for a descheduled
    thread: a whole `kcenter` call took 2.7x as long with strips on this 2-core machine under load).

    Args:
        a: (B, N, C) float (any dtype `torch.bmm` takes).
    Returns:
        (B, N, N) a a^T in a's dtype, exactly symmetric when computed by strips.
    """
    B, N, C = a.shape
    h = GRAM_STRIP_ROWS
    if a.device.type != "cpu" or N < 2 * h or C < GRAM_STRIP_MIN_DIM or torch.get_num_threads() != 1:
        return torch.bmm(a, a.transpose(1, 2))
    gram = a.new_empty(B, N, N)
    strips = N // h  # every strip at least h rows (a one-row strip would be a matrix-vector product)
    edges = [N * i // strips for i in range(strips + 1)]
    for start, end in zip(edges[:-1], edges[1:]):
        torch.bmm(a[:, start:end], a[:, start:].transpose(1, 2), out=gram[:, start:end, start:])
    for start, end in zip(edges[1:-1], edges[2:]):
        for top in range(0, start, GRAM_MIRROR_ROWS):
            bottom = min(top + GRAM_MIRROR_ROWS, start)
            gram[:, start:end, top:bottom] = gram[:, top:bottom, start:end].transpose(1, 2)
    return gram


def in_float32_range(x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose squared norm over- or underflows float32 rescaled so that their norm does not.

    ``x.norm()`` of a float32 row with entries near 1e20 is inf and of one near 1e-25 is 0, which
    would turn every such token into an all-zero vector (distance 1 to everything, so the
    selection degenerates to the first k indices). Such rows (norm inf or below `NORM_FLOOR`) are
    divided by their largest absolute entry, which keeps their direction; every other row is
    returned bit for bit.

    Args:
        x: (..., D) float32, finite on real tokens.
        mask: (...) bool, True for real tokens (padded rows may hold anything and are left as
            they are), or None (all real).
    Returns:
        x: (..., D) float32; norm: (..., 1) float32 row norms of the returned x (0 for a zero row).
    Raises:
        ValueError: if a real token holds inf (entries beyond float32's range, e.g. float64
            features above 3.4e38 converted to float32).
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (the same bits as x.norm, faster)
    if norm.numel():
        lo, hi = torch.aminmax(norm)
        if float(lo) >= NORM_FLOOR and float(hi) < math.inf:  # the usual case (NaN fails both)
            return x, norm
    odd = ~(norm >= NORM_FLOOR) | (norm == math.inf)
    scale = x.abs().amax(dim=-1, keepdim=True)
    finite = torch.isfinite(scale)
    beyond = ~finite.squeeze(-1) if mask is None else ~finite.squeeze(-1) & mask
    if bool(beyond.any()):
        raise ValueError("features have entries beyond float32's range (inf after conversion to float32); "
                         "the selection computes in float32: divide the features by a constant first")
    rescale = odd & finite & (scale > 0)
    x = torch.where(rescale, x / scale.masked_fill(~rescale, 1.0), x)
    return x, x.norm(dim=-1, keepdim=True)


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
        sel, radius = greedy_loop_numpy(dist, K, mask, first, track=stop_below is not None)
    else:
        sel, radius = greedy_loop_torch(dist, K, mask, first, track=stop_below is not None)
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


@dataclass(frozen=True)
class GreedyOptions(MethodOptions):
    """The options `kcenter` and `evtp` share (each method subclasses it, `evtp` adds its own).

    precision: dtype of the Gram product ("float32" exact; "float16" / "bfloat16" fast paths).
    projection_dim: map the features by a fixed Gaussian random projection to this many
        dimensions first (None: no projection); projection_seed: its seed.
    radius / relative_radius / min_keep: the adaptive budget, set by `CoverageTarget`.
    loop: "eager" or "compiled" (the capturable greedy loop; the same picks).
    """

    precision: Literal["float32", "float16", "bfloat16"] = "float32"
    projection_dim: int | None = option(None, low=1)
    projection_seed: int = 0
    radius: float | None = option(None, low=0)
    relative_radius: float | None = option(None, low=0)
    min_keep: int = option(1, low=1)
    loop: Literal[LOOPS] = "eager"

    def check(self) -> None:
        if self.radius is not None and self.relative_radius is not None:
            raise ValueError(f"method {self.method!r}: pass radius or relative_radius, not both "
                             f"(got {self.radius!r} and {self.relative_radius!r})")
