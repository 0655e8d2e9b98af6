"""Video object segmentation metrics: J (region), F (boundary), J&F, and ReVOS's A and R.

Definitions follow the DAVIS toolkit as used by MeViS, Ref-YouTube-VOS, Ref-DAVIS and ReVOS
evaluation scripts:

* **J** (region similarity) of a frame = |pred ∩ gt| / |pred ∪ gt|, and 1 when the union is empty.
* **F** (boundary F-measure) of a frame:

  1. Each mask is turned into a one-pixel boundary map: a pixel is a boundary pixel when its value
     differs from its east, south or south-east neighbour; neighbours outside the image take the
     pixel's own value (so the image border itself is never a boundary).
  2. Each boundary map is dilated (cv2.dilate) with a disk of radius
     r = ceil(0.008 × sqrt(H² + W²)) (``bound_th`` >= 1 gives r directly in pixels); the disk holds
     the offsets (dy, dx) with dy² + dx² <= r².
  3. Precision = matched predicted boundary pixels / predicted boundary pixels, where a predicted
     boundary pixel is matched when it lies in the dilated ground-truth boundary; recall is the
     same with the roles swapped.
  4. DAVIS conventions for empty boundaries: no predicted and no ground-truth boundary ->
     P = R = 1 (F = 1); no predicted boundary but some ground truth -> P = 1, R = 0 (F = 0); some
     predicted boundary but no ground truth -> P = 0, R = 1 (F = 0).
  5. F = 2PR / (P + R), and 0 when P + R = 0.

* Per expression, J and F are averaged over the frames; J&F = (J + F) / 2. A data set's J, F, J&F
  are the means over expressions.
* **A** (ReVOS accuracy) of a frame = the fraction of pixels where pred == gt.
* **R** (ReVOS robustness) of a frame = max(0, 1 - |pred \\ gt| / (|foreground| + 1e-6)), where
  ``foreground`` is the union of all annotated objects in the video frame
  (``mask_dict_foreground.json``).

A ``None`` prediction counts as all-empty masks.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from evtp.metrics.image import as_mask


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    g = as_mask(gt, "gt")
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3:
        raise ValueError(f"gt has shape {g.shape}; expected (T, H, W) or (H, W)")
    if pred is None:
        return np.zeros_like(g), g
    p = as_mask(pred, "pred")
    if p.ndim == 2:
        p = p[None]
    if p.shape != g.shape:
        raise ValueError(f"pred has shape {p.shape} but gt has shape {g.shape}; "
                         f"resize the prediction to the frame size")
    return p, g


def region_similarity(pred, gt) -> np.ndarray:
    """Per-frame J.

    Args:
        pred: (T, H, W) bool or None (empty).  gt: (T, H, W) bool.
    Returns:
        (T,) float64 IoU per frame, 1 where the union is empty.
    """
    p, g = _pair(pred, gt)
    inter = np.count_nonzero(p & g, axis=(1, 2)).astype(np.float64)
    union = np.count_nonzero(p | g, axis=(1, 2)).astype(np.float64)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1.0))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask (DAVIS convention, see module docstring).

    Args:
        mask: (H, W) or (T, H, W) bool.
    Returns:
        bool array of the same shape.
    """
    m = as_mask(mask, "mask")
    squeeze = m.ndim == 2
    if squeeze:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"mask has shape {m.shape}; expected (H, W) or (T, H, W)")
    pad = np.pad(m, ((0, 0), (0, 1), (0, 1)), mode="edge")
    east = pad[:, :-1, 1:]
    south = pad[:, 1:, :-1]
    south_east = pad[:, 1:, 1:]
    b = (m != east) | (m != south) | (m != south_east)
    return b[0] if squeeze else b


def disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 structuring element with ones where dy² + dx² <= r²."""
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ((yy * yy + xx * xx) <= r * r).astype(np.uint8)


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``bound_th`` if >= 1, else ceil(bound_th × image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def boundary_f(pred, gt, bound_th: float = 0.008) -> np.ndarray:
    """Per-frame boundary F-measure (DAVIS).

    Args:
        pred: (T, H, W) bool or None (empty).  gt: (T, H, W) bool.
        bound_th: boundary tolerance: fraction of the image diagonal (< 1) or pixels (>= 1).
    Returns:
        (T,) float64 F per frame.
    """
    p, g = _pair(pred, gt)
    _, h, w = g.shape
    kernel = disk(boundary_radius(h, w, bound_th))
    pb, gb = boundary_map(p), boundary_map(g)
    out = np.empty(len(g), dtype=np.float64)
    for t in range(len(g)):
        n_p, n_g = int(pb[t].sum()), int(gb[t].sum())
        if n_p == 0 and n_g == 0:
            prec, rec = 1.0, 1.0
        elif n_p == 0:
            prec, rec = 1.0, 0.0
        elif n_g == 0:
            prec, rec = 0.0, 1.0
        else:
            g_dil = cv2.dilate(gb[t].astype(np.uint8), kernel) > 0
            p_dil = cv2.dilate(pb[t].astype(np.uint8), kernel) > 0
            prec = np.count_nonzero(pb[t] & g_dil) / n_p
            rec = np.count_nonzero(gb[t] & p_dil) / n_g
        out[t] = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return out


def j_and_f(pred, gt, bound_th: float = 0.008) -> tuple[float, float, float]:
    """J, F and J&F of one expression (means over its frames).

    Args:
        pred: (T, H, W) bool prediction, or None (the model emitted no mask -> empty).
        gt: (T, H, W) bool ground truth ((H, W) is read as T = 1).
    Returns:
        (j, f, jf) floats in [0, 1], jf = (j + f) / 2.
    """
    j = float(region_similarity(pred, gt).mean())
    f = float(boundary_f(pred, gt, bound_th).mean())
    return j, f, (j + f) / 2


def revos_accuracy_robustness(pred, gt, foreground) -> tuple[float, float]:
    """ReVOS's A (pixel accuracy) and R (robustness) of one expression, means over frames.

    Args:
        pred: (T, H, W) bool or None (empty).  gt: (T, H, W) bool.
        foreground: (T, H, W) bool union of every annotated object of the video.
    Returns:
        (a, r) floats in [0, 1].
    """
    p, g = _pair(pred, gt)
    fg = as_mask(foreground, "foreground")
    if fg.ndim == 2:
        fg = fg[None]
    if fg.shape != g.shape:
        raise ValueError(f"foreground has shape {fg.shape} but gt has shape {g.shape}")
    acc = (p == g).mean(axis=(1, 2))
    false_pos = np.count_nonzero(p & ~g, axis=(1, 2)).astype(np.float64)
    pos = np.count_nonzero(fg, axis=(1, 2)).astype(np.float64)
    rob = np.maximum(1.0 - false_pos / (pos + 1e-6), 0.0)
    return float(acc.mean()), float(rob.mean())
