"""Aggregation of per-sample metrics: per expression, over expressions, per expression family.

Per-sample metric records are plain dicts (what `evtp eval` writes in each JSON line):

* image samples: ``{"intersection": int, "union": int, "iou": float}``
  -> data set ``cIoU`` (Σ I / Σ U) and ``gIoU`` (mean IoU, empty union = 1);
* video expressions: ``{"J": float, "F": float, "J&F": float}`` (+ ``"A"``, ``"R"`` for ReVOS)
  -> data set means over expressions.

All values are fractions in [0, 1].
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from evtp.metrics.image import ciou_giou_from_counts, intersection_union, sample_iou
from evtp.metrics.stats import score_parts
from evtp.metrics.video import j_and_f, revos_accuracy_robustness

VIDEO_KEYS = ("J", "F", "J&F", "A", "R")


def image_sample_metrics(pred, gt, ignore=None) -> dict:
    """Per-sample record for an image: intersection/union counts and IoU.

    Args:
        pred: (H, W) or (1, H, W) bool, or None (empty).  gt: same shape.  ignore: optional.
    """
    inter, union = intersection_union(pred, gt, ignore)
    return {"intersection": inter, "union": union, "iou": sample_iou(inter, union)}


def video_sample_metrics(pred, gt, foreground=None, bound_th: float = 0.008) -> dict:
    """Per-expression record for a video: J, F, J&F (frame means), plus A and R if ``foreground``."""
    j, f, jf = j_and_f(pred, gt, bound_th)
    out = {"J": j, "F": f, "J&F": jf}
    if foreground is not None:
        out["A"], out["R"] = revos_accuracy_robustness(pred, gt, foreground)
    return out


def summarize_metrics(records: Sequence[Mapping]) -> dict:
    """Data-set scores from per-sample metric records of one kind.

    Image records give ``{"n", "cIoU", "gIoU"}``; video records give ``{"n", "J", "F", "J&F"}``
    (+ ``"A"``, ``"R"`` when every record has them). ``J&F`` is (mean J + mean F) / 2, which equals
    the mean of the per-expression J&F.
    """
    records = list(records)
    if not records:
        return {"n": 0}
    if all("intersection" in r for r in records):
        ciou, giou = ciou_giou_from_counts([r["intersection"] for r in records],
                                           [r["union"] for r in records])
        return {"n": len(records), "cIoU": ciou, "gIoU": giou}
    if all("J" in r and "F" in r for r in records):
        out = {"n": len(records)}
        out["J"] = float(np.mean([r["J"] for r in records]))
        out["F"] = float(np.mean([r["F"] for r in records]))
        out["J&F"] = (out["J"] + out["F"]) / 2
        for key in ("A", "R"):
            if all(key in r for r in records):
                out[key] = float(np.mean([r[key] for r in records]))
        return out
    raise ValueError("metric records mix image (intersection/union) and video (J/F) samples, or "
                     "lack both; summarise each kind separately")


def summarize_by_family(records: Sequence[Mapping], families: Iterable[str]) -> dict[str, dict]:
    """``summarize_metrics`` per expression family (records and families in the same order)."""
    groups: dict[str, list] = {}
    for rec, fam in zip(records, families, strict=True):
        groups.setdefault(fam or "", []).append(rec)
    return {fam: summarize_metrics(groups[fam]) for fam in sorted(groups)}


def mean_of_families(by_family: Mapping[str, Mapping]) -> dict:
    """Overall score as the unweighted mean of the family scores (ReVOS's "overall" row:
    the mean of the referring and the reasoning scores)."""
    fams = [v for v in by_family.values() if v.get("n", 0) > 0]
    if not fams:
        return {"n": 0}
    keys = [k for k in fams[0] if k != "n" and all(k in v for v in fams)]
    out = {"n": int(sum(v["n"] for v in fams))}
    for k in keys:
        out[k] = float(np.mean([v[k] for v in fams]))
    return out


def paired_bootstrap(a: Sequence[Mapping], b: Sequence[Mapping], *, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """Difference of two systems' data-set scores on the same samples, with its bootstrap error.

    ``a`` and ``b`` are per-sample metric records of one kind in the same sample order (image:
    intersection/union -> cIoU; video: J/F -> J&F). Each of ``n_boot`` resamples draws the
    samples with replacement and scores both systems on the *same* draw, so what the samples
    share cancels out. Returns ``{"diff": score(a) - score(b), "se": std of the resampled
    differences, "n": samples}``.
    """
    a, b = list(a), list(b)
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty record lists; got "
                         f"{len(a)} and {len(b)}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    try:  # one set of per-sample parts for both systems: their kinds must agree
        num, den = score_parts(a + b)
    except ValueError:
        raise ValueError("paired_bootstrap: records must all be image (intersection/union) or all "
                         "video (J/F) records") from None
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))

    def score(half: slice, sel=None):
        n, d = num[half], den[half]
        if sel is None:
            return n.sum() / max(d.sum(), 1e-12)
        return n[sel].sum(1) / np.maximum(d[sel].sum(1), 1e-12)

    first, second = slice(0, len(a)), slice(len(a), None)
    diffs = score(first, idx) - score(second, idx)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(score(first) - score(second)), "se": float(diffs.std(ddof=1)), "lo": float(lo),
            "hi": float(hi), "n": len(a)}
