"""Grid coordinates normalised per axis: the spatial half of the `evtp` metric.

Selection (`evtp`) and the coverage measures (`evtp.coverage`, metric "combined") both use
`normalized_positions`, so it lives here, below both: coverage imports it from selection, never
the other way round.
"""
from __future__ import annotations

import torch

from evtp.selection.validation import check_mask, check_positions

__all__ = ["normalized_positions"]


def normalized_positions(positions: torch.Tensor, mask: torch.Tensor | None = None,
                         temporal_weight: float = 1.0) -> torch.Tensor:
    """Per-axis normalised grid coordinates p̂, the spatial half of the combined (`evtp`) metric.

    Each axis is mapped to ``(p - min) / max(1, max - min)`` with min/max taken over the sample's
    valid tokens, so an image grid spans [0, 1] along rows and columns (a 1-cell axis stays 0).
    For video (P = 3, axes frame, row, col) the frame axis is then multiplied by
    ``temporal_weight``.

    Args:
        positions: (N, P) or (B, N, P) integer (or float) grid coordinates, P in {2, 3}.
        mask: (N,) or (B, N) bool, True for real tokens; padded tokens get coordinates 0.
        temporal_weight: finite float >= 0, scale of the frame axis for P = 3 (ignored for P = 2).
    Returns:
        (N, P) or (B, N, P) float32 normalised coordinates.
    """
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
    if positions.dim() not in (2, 3):
        raise ValueError(f"positions has shape {tuple(positions.shape)}; expected (N, P) or (B, N, P)")
    tw = float(temporal_weight)
    if not (tw == tw and abs(tw) != float("inf") and tw >= 0):
        raise ValueError(f"temporal_weight must be a finite float >= 0, got {temporal_weight!r}")
    batched = positions.dim() == 3
    B, N = (positions.shape[0], positions.shape[1]) if batched else (1, positions.shape[0])
    m = check_mask(mask, B, N, batched, device=positions.device)
    p = check_positions(positions, B, N, batched, integer=False, mask=m).float()
    mm = m.unsqueeze(-1)
    big = torch.finfo(torch.float32).max
    lo = torch.where(mm, p, torch.full_like(p, big)).amin(dim=1, keepdim=True)  # (B, 1, P)
    hi = torch.where(mm, p, torch.full_like(p, -big)).amax(dim=1, keepdim=True)
    out = (p - lo) / (hi - lo).clamp(min=1.0)
    if p.shape[-1] == 3 and tw != 1.0:
        scale = torch.tensor([tw, 1.0, 1.0], dtype=out.dtype, device=out.device)
        out = out * scale
    out = torch.where(mm, out, torch.zeros_like(out))
    return out if batched else out[0]
