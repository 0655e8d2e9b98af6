"""Masks measured on a model's patch grid: which share of each patch a mask covers."""
from __future__ import annotations

import numpy as np


def patch_shares(gt: np.ndarray, patch: int) -> np.ndarray:
    """Share of each patch's pixels on the mask: gt (T, H, W) bool -> (T, H/patch, W/patch) float."""
    T, H, W = gt.shape
    g = H // patch
    return gt[:, :g * patch, :g * patch].reshape(T, g, patch, g, patch).mean(axis=(2, 4))
