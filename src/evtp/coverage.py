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

import torch

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
    if positions.shape[-1] not in (2, 3):
        raise ValueError(f"positions has P = {positions.shape[-1]} coordinates; expected 2 (row, col) "
                         f"or 3 (frame, row, col)")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"positions must be integer or float grid coordinates, got {positions.dtype}")
    tw = float(temporal_weight)
    if not (tw == tw and abs(tw) != float("inf") and tw >= 0):
        raise ValueError(f"temporal_weight must be a finite float >= 0, got {temporal_weight!r}")
    batched = positions.dim() == 3
    p = (positions if batched else positions.unsqueeze(0)).float()
    m = _mask(mask, p.shape[0], p.shape[1], batched, p.device)
    if not bool(torch.isfinite(p[m]).all()):
        raise ValueError("positions contain NaN or inf")
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


def _mask(mask: torch.Tensor | None, B: int, N: int, batched: bool, device) -> torch.Tensor:
    """(B, N) bool mask from an optional (N,) / (B, N) mask, with clear errors."""
    if mask is None:
        return torch.ones(B, N, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    m = mask if batched else mask.unsqueeze(0) if mask.dim() == 1 else mask
    if tuple(m.shape) != (B, N):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {'(B, N)' if batched else '(N,)'} "
                         f"= {(B, N) if batched else (N,)} to match the token axis")
    if not bool(m.any(-1).all()):
        raise ValueError("mask leaves a sample with no tokens at all")
    return m.to(device)
