"""`evtp`: EVTP-IV, greedy k-center whose metric adds the tokens' grid positions to their features.

Each token becomes a = [x / |x|, lambda * p] (p: per-axis normalised (frame,) row, col), and the
greedy farthest-point loop of `evtp.selection.greedy` runs on d = 0.5 |a_i - a_j|^2, which comes out
of one Gram product of the augmented vectors. With lambda = 0 it is exactly `kcenter`'s selection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from evtp.selection.greedy import (FIRST_RULES, GreedyOptions, cosine_distance_matrix, first_center,
                                   greedy_kcenter, stop_distance)
from evtp.selection.helpers import group_table, relevance, selected_to_indices, split_budget
from evtp.selection.options import option
from evtp.selection.positions import normalized_positions
from evtp.selection.registry import register_method

VIDEO_BUDGETS = ("global", "per_frame")


SALIENCY_FLOOR = 0.05  # weight (floor + r)^alpha: the least salient token keeps floor^alpha > 0


@dataclass(frozen=True)
class EvtpOptions(GreedyOptions):
    """Options of `evtp`: the shared greedy options (`GreedyOptions`) plus the metric's and the first pick's (each described
    in `evtp`'s docstring)."""

    spatial_weight: float = option(1.0, low=0)
    temporal_weight: float = option(1.0, low=0)
    first: Literal[FIRST_RULES] = "divprune"
    video_budget: Literal[VIDEO_BUDGETS] = "global"
    center_features: bool = False
    saliency_weight: float = option(0.0, low=0)


@register_method("evtp", uses_positions=True, adaptive=True, score_options=("saliency_weight",),
                 summary="EVTP-IV: greedy k-center on [unit features, lambda * normalised (t, row, col)]",
                 options=EvtpOptions)
def evtp(features, positions, k, *, mask, scores, generator, spatial_weight, temporal_weight, first,
         video_budget, precision, projection_dim, projection_seed, radius, relative_radius, min_keep,
         center_features, saliency_weight, loop):
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
    if center_features:
        w = mask.to(features.dtype).unsqueeze(-1)
        mean = (features * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)
        features = features - mean
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
    return (SALIENCY_FLOOR + relevance(scores, mask)) ** float(alpha)


def _evtp_batch(features, positions, k, mask, *, spatial_weight, temporal_weight=1.0, first,
                precision, projection_dim, projection_seed, generator, radius, relative_radius, min_keep,
                loop, weights=None):
    coords = None
    if positions is not None:
        coords = normalized_positions(positions, mask=mask, temporal_weight=temporal_weight)
    dist = cosine_distance_matrix(features, precision=precision, projection_dim=projection_dim,
                                  projection_seed=projection_seed, coords=coords,
                                  spatial_weight=spatial_weight, mask=mask)
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
