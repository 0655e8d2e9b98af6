"""ReasonSeg (LISA): reasoning segmentation queries on images.

Files (as distributed with LISA)::

    ROOT/            # the ReasonSeg folder
      train/ val/ test/
        <name>.jpg
        <name>.json   # {"text": [..] or "..", "is_sentence": bool, "shapes": [{"label", "points"}]}

The ground truth is rasterised exactly as LISA's ``get_mask_from_json`` does (so cIoU/gIoU match
the official numbers pixel for pixel): polygons are sorted by filled area, largest first, and each
is drawn with cv2 (outline of width 1, then filled) at integer-truncated vertices; label "ignore"
paints the ignore value, any other label paints the target, labels "flag" are skipped. Ignored
pixels are excluded from both the intersection and the union (``meta["ignore_mask"]``).

A file whose ``shapes`` list is empty (or holds only "flag" shapes) has an empty target, as in
LISA's ``get_mask_from_json`` (an all-zero mask): the sample is scored like any other, so an empty
prediction gets IoU 1 (LISA's ``acc_iou[union == 0] += 1.0``) and predicted pixels add to the
cIoU union; ``meta["empty_target"]`` marks it. A file without a ``shapes`` list (LISA's
``anno["shapes"]`` raises) is a failed sample naming the key.

LISA evaluates one query per image (the first ``text``); ``all_texts=True`` yields one sample per
text instead. The family is "long" for ``is_sentence`` queries and "short" otherwise (LISA reports
the two separately).
"""
from __future__ import annotations

import cv2
import numpy as np

from evtp.data.readers import DatasetReader, SampleError, load_json, load_rgb
from evtp.data.types import Sample

_IGNORE, _TARGET = 255, 1


def reasonseg_masks(shapes: list, height: int, width: int, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(target, ignore) (H, W) bool masks from ReasonSeg ``shapes`` (LISA's rasterisation)."""
    polys, areas = [], []
    for i, shp in enumerate(shapes):
        label = str(shp.get("label", ""))
        if label.lower() == "flag":
            continue
        try:
            pts = np.asarray(shp["points"], dtype=np.float64)
        except (KeyError, ValueError, TypeError):
            raise SampleError(sample_id, f"shape {i} has no valid 'points' list") from None
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 1:
            raise SampleError(sample_id, f"shape {i} points have shape {pts.shape}; expected (n, 2)")
        pts = np.array([pts], dtype=np.int32)
        tmp = np.zeros((height, width), np.uint8)
        cv2.polylines(tmp, pts, True, 1, 1)
        cv2.fillPoly(tmp, pts, 1)
        polys.append((label, pts))
        areas.append(int(tmp.sum()))
    label_map = np.zeros((height, width), np.uint8)
    for idx in np.argsort(areas, kind="stable")[::-1]:
        label, pts = polys[idx]
        value = _IGNORE if "ignore" in label.lower() else _TARGET
        cv2.polylines(label_map, pts, True, value, 1)
        cv2.fillPoly(label_map, pts, value)
    return label_map == _TARGET, label_map == _IGNORE


class ReasonSeg(DatasetReader):
    name, task = "reasonseg", "image"
    splits = ("val", "test", "train")

    def __init__(self, root, split, *, all_texts: bool | str = False, **options):
        super().__init__(root, split, **options)
        self.dir = self.root / split if (self.root / split).is_dir() else self.root
        # a sample per image or annotation: one without the other is listed and fails on loading
        stems = sorted({p.stem for p in self.dir.glob("*.jpg")} | {p.stem for p in self.dir.glob("*.json")})
        if not stems:
            raise FileNotFoundError(f"reasonseg: no .jpg or .json files in {str(self.dir)!r}; --root must "
                                    f"be the ReasonSeg folder that holds {'/'.join(self.splits)}/")
        self.all_texts = str(all_texts).lower() in ("1", "true", "yes")
        self._entries: dict[str, tuple[str, int]] = {}
        for stem in stems:
            n = 1
            if self.all_texts:
                try:
                    text = load_json(self.dir / f"{stem}.json").get("text", [])
                    n = len(text) if isinstance(text, list) else 1
                except (OSError, ValueError, AttributeError):
                    n = 1  # the problem is reported when the sample is loaded
            for k in range(max(n, 1)):
                sid = f"reasonseg/{split}/{stem}" + (f"#{k}" if self.all_texts else "")
                self._entries[sid] = (stem, k)

    def ids(self) -> list[str]:
        return list(self._entries)

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._entries:
            raise SampleError(sample_id, f"no such sample in reasonseg {self.split}")
        stem, k = self._entries[sample_id]
        json_path = self.dir / f"{stem}.json"
        if not json_path.is_file():
            raise SampleError(sample_id, f"annotation {str(json_path)!r} is missing")
        try:
            anno = load_json(json_path)
        except ValueError as exc:
            raise SampleError(sample_id, str(exc)) from None
        texts = anno.get("text")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        if k >= len(texts) or not str(texts[k]).strip():
            raise SampleError(sample_id, "empty query text")
        image = load_rgb(self.dir / f"{stem}.jpg", sample_id)  # SampleError when the image is missing
        h, w = image.shape[:2]
        shapes = anno.get("shapes")
        if not isinstance(shapes, list):
            raise SampleError(sample_id, f"annotation {str(json_path)!r} has no 'shapes' list (got "
                                         f"{type(shapes).__name__}); ReasonSeg files list the target polygons there")
        target, ignore = reasonseg_masks(shapes, h, w, sample_id)
        is_sentence = bool(anno.get("is_sentence", False))
        meta = {"dataset": self.name, "split": self.split, "image": f"{stem}.jpg",
                "text_index": k, "is_sentence": is_sentence, "ignore_mask": ignore[None],
                "empty_target": not target.any()}
        return Sample(sample_id=sample_id, frames=image[None], instruction=str(texts[k]).strip(),
                      gt_masks=target[None], task="image",
                      family="long" if is_sentence else "short", meta=meta)


__all__ = ["ReasonSeg", "reasonseg_masks"]
