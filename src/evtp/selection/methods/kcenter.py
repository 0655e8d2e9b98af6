"""`kcenter`: feature-only greedy k-center with DivPrune's rules (distance 1 - cos, the first pick the
token whose nearest other token is farthest), on the shared core of `evtp.selection.greedy`."""
from __future__ import annotations

from dataclasses import dataclass

from evtp.selection.greedy import (GreedyOptions, cosine_distance_matrix, first_center, greedy_kcenter,
                                   stop_distance)
from evtp.selection.registry import register_method


@dataclass(frozen=True)
class KCenterOptions(GreedyOptions):
    """Options of `kcenter`: the shared greedy options (`evtp.selection.greedy.GreedyOptions`)."""


@register_method("kcenter", adaptive=True,
                 summary="feature-only greedy k-center with DivPrune's rules (1 - cosine, max-NN first pick)",
                 options=KCenterOptions)
def kcenter(features, positions, k, *, mask, scores, generator, precision, projection_dim, projection_seed,
            radius, relative_radius, min_keep, loop):
    """Greedy k-center in 1 - cosine with DivPrune's first pick; returns (B, K) picks.

    With `keep=CoverageTarget(radius=eps)` selection stops once every token is within
    1 - cos <= eps of a kept token; with `CoverageTarget(relative_radius=eps)` once every token is
    within a chord sqrt(2 (1 - cos)) of eps times the set's 1-centre radius (see `stop_distance`).
    ``loop="compiled"``: the capturable greedy loop (`evtp.selection.greedy_loop`), same picks.
    """
    dist = cosine_distance_matrix(features, precision=precision, projection_dim=projection_dim,
                                  projection_seed=projection_seed, mask=mask)
    # kcenter's absolute radius is in its own unit, 1 - cos: the loop's d itself
    stop = radius if relative_radius is None else stop_distance(dist, mask, relative_radius=relative_radius)
    first = first_center(dist, mask, "divprune")
    return greedy_kcenter(dist, k, mask, first, stop_below=stop, min_keep=min_keep, loop=loop)
