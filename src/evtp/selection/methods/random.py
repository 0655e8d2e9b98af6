"""`random`: a uniformly random subset of the valid tokens (the usual sanity baseline)."""
from __future__ import annotations

import torch

from evtp.selection.helpers import topk_indices
from evtp.selection.registry import register_method


@register_method("random", summary="uniformly random subset of the valid tokens", options={},
                 uses_generator=True)
def random_subset(features, positions, k, *, mask, scores=None, generator=None):
    """Draw k[b] distinct valid tokens uniformly at random for every sample.

    Every token gets an i.i.d. U(0, 1) key (one (B, N) draw from ``generator``, on the generator's
    device, CPU when None); the k largest keys among the valid tokens win, which is a uniform random
    k-subset. The same generator state gives the same subset.

    Args:
        features: (B, N, D) (only its shape is used); k: (B,) long; mask: (B, N) bool.
        generator: torch.Generator or None (global RNG).
    Returns:
        (B, max(k)) long, -1 padded.
    """
    B, N = mask.shape
    dev = "cpu" if generator is None else generator.device
    u = torch.rand(B, N, generator=generator, device=dev).to(mask.device)
    return topk_indices(u, k, mask)
