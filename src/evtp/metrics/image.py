"""Image referring/reasoning segmentation metrics: cIoU and gIoU.

Definitions (LISA's ``validate`` and Sa2VA's RES evaluation):

* cIoU (cumulative IoU) = Σ_samples |pred ∩ gt| / Σ_samples |pred ∪ gt|.
* gIoU = mean over samples of |pred ∩ gt| / |pred ∪ gt|, where an empty union (both masks empty)
  counts as IoU 1.

A ``None`` prediction (the model emitted no ``[SEG]``) counts as an *empty* mask: it adds 0 to the
intersection sum and |gt| to the union sum. This is stricter than Sa2VA's script, which drops such
samples from the cIoU sums (see docs/evaluation.md).

Optional ``ignore`` masks (ReasonSeg's "ignore" polygons, LISA's label 255) remove pixels from
both the intersection and the union, as LISA's ``intersectionAndUnionGPU(..., ignore_index=255)``.
LISA divides by ``union + 1e-5``; evtp divides exactly (the difference is below 1e-5 / |union|).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def as_mask(x, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a bool array (nonzero = foreground), checking its rank."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:  # torch tensors and array-likes
            arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        except Exception as exc:  # pragma: no cover - defensive
            raise TypeError(f"{name} must be an array of masks, got {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric or bool array, got dtype object")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} has shape {arr.shape}; expected a {ndim}-d mask array")
    return arr.astype(bool) if arr.dtype != bool else arr


def intersection_union(pred, gt, ignore=None) -> tuple[int, int]:
    """Foreground intersection and union pixel counts of one mask pair.

    Args:
        pred: (..., H, W) bool prediction, or None (counts as empty).
        gt: (..., H, W) bool ground truth, same shape.
        ignore: optional bool mask of the same shape; True pixels are excluded.
    Returns:
        (intersection, union) as Python ints.
    """
    g = as_mask(gt, "gt")
    p = np.zeros_like(g) if pred is None else as_mask(pred, "pred")
    if p.shape != g.shape:
        raise ValueError(f"pred has shape {p.shape} but gt has shape {g.shape}; masks must match")
    if ignore is not None:
        ign = as_mask(ignore, "ignore")
        if ign.shape != g.shape:
            raise ValueError(f"ignore has shape {ign.shape} but gt has shape {g.shape}")
        valid = ~ign
        p = p & valid
        g = g & valid
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def sample_iou(intersection: float, union: float) -> float:
    """IoU of one sample with the benchmark convention: an empty union counts as 1."""
    return 1.0 if union == 0 else float(intersection) / float(union)


def ciou_giou_from_counts(intersections: Sequence[float], unions: Sequence[float]) -> tuple[float, float]:
    """cIoU and gIoU from per-sample intersection / union counts (e.g. read back from a run).

    Args:
        intersections: (S,) per-sample foreground intersection pixel counts.
        unions: (S,) per-sample foreground union pixel counts.
    Returns:
        (ciou, giou) in [0, 1]; cIoU is 1.0 when every union is empty (nothing to segment and
        nothing predicted). Raises ValueError for zero samples.
    """
    inter = np.asarray(intersections, dtype=np.float64)
    union = np.asarray(unions, dtype=np.float64)
    if inter.shape != union.shape or inter.ndim != 1:
        raise ValueError(f"intersections {inter.shape} and unions {union.shape} must be equal 1-d sequences")
    if inter.size == 0:
        raise ValueError("no samples: cIoU/gIoU need at least one (pred, gt) pair")
    if np.any(inter > union) or np.any(inter < 0):
        raise ValueError("every intersection must satisfy 0 <= intersection <= union")
    total_u = union.sum()
    ciou = 1.0 if total_u == 0 else float(inter.sum() / total_u)
    per = np.where(union == 0, 1.0, inter / np.where(union == 0, 1.0, union))
    return ciou, float(per.mean())


def ciou_giou(preds: Sequence, gts: Sequence, ignores: Sequence | None = None) -> tuple[float, float]:
    """cIoU and gIoU over a data set.

    Args:
        preds: S predictions, each (H, W) bool (or None: the model emitted no mask -> empty).
        gts: S ground truths, each (H, W) bool, same size as its prediction.
        ignores: optional S masks (or None entries) of pixels to exclude.
    Returns:
        (ciou, giou) as floats in [0, 1].
    """
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths")
    ign = [None] * len(gts) if ignores is None else list(ignores)
    if len(ign) != len(gts):
        raise ValueError(f"got {len(ign)} ignore masks for {len(gts)} ground truths")
    counts = [intersection_union(p, g, i) for p, g, i in zip(preds, gts, ign)]
    if not counts:
        raise ValueError("no samples: cIoU/gIoU need at least one (pred, gt) pair")
    inter, union = zip(*counts)
    return ciou_giou_from_counts(inter, union)
