"""A faithful re-implementation of DivPrune's published selection procedure (arXiv 2503.02175).

Written from the paper's description, for tests and benchmarks only: it is the yardstick that
`kcenter` must match (same selection) and beat (speed). It is deliberately *not* optimised:

1. build the full (N, N) matrix D = 1 - cos(x_i, x_j);
2. first pick: the token whose nearest other token is farthest, read as the second-smallest entry
   of each column (the smallest is the zero self-distance);
3. every step: gather the rows of all tokens chosen so far, take the column-wise minimum over all
   of them (O(|S| N) per step, O(k^2 N) in total) and pick the argmax.
"""
from __future__ import annotations

import torch


def divprune_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """DivPrune's procedure on one sample.

    Args:
        features: (N, D) float.
        k: number of tokens to keep, 1 <= k <= N.
    Returns:
        (k,) long indices in the order they were picked.
    """
    x = features.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dist = 1.0 - x @ x.T
    N = dist.shape[0]
    if N == 1:
        return torch.zeros(1, dtype=torch.long)
    first = torch.topk(dist, 2, dim=0, largest=False).values[1].argmax()
    chosen = [int(first)]
    for _ in range(1, k):
        min_to_chosen = dist[chosen].min(dim=0).values
        chosen.append(int(min_to_chosen.argmax()))
    return torch.tensor(chosen, dtype=torch.long)
