"""Leak checks of a readout: does the mask come from what the LM read in the image?

Four controls on synthetic samples (``evtp leaks reference`` prints them; docs/reference_model.md
records them for the shipped weights):

* **keep 0**: the LM reads no visual token. Accuracy must fall to a small share of full tokens
  (goal for "point": <= 20 %), or the mask path finds the object without the LM.
* **word swap** (attribute images): the colour (or shape) word is replaced by the one of another
  object with the same shape (colour) that the new words name uniquely; the prediction should move
  to that object (goal >= 90 %).
* **shuffled positions**: the kept tokens' position ids are permuted among them
  (``position_mode="shuffled"``); accuracy should collapse, since the location the LM writes can
  then only come from positions.
* **another image**: sample i's instruction on sample i+1's frames, scored against sample i's mask,
  beside chance (the mean score of each object of the other image as the mask).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from evtp.data.synthetic import make_sample


def _ciou(pairs: list[tuple[int, int]]) -> float:
    inter = sum(p[0] for p in pairs)
    union = sum(p[1] for p in pairs)
    return float(inter / union) if union else 0.0


def _score(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    return int((pred & gt).sum()), int((pred | gt).sum())


def picked_object(mask: np.ndarray, labels: np.ndarray) -> int:
    """The object (index into meta["objects"]) a predicted frame-0 mask (H, W) covers most, by IoU;
    -1 for an empty mask or one on no object."""
    if not mask.any():
        return -1
    n = int(labels.max())
    ious = [((labels == o + 1) & mask).sum() / ((labels == o + 1) | mask).sum() for o in range(n)]
    best = int(np.argmax(ious)) if ious else -1
    return best if best >= 0 and ious[best] > 0 else -1


def word_swaps(sample) -> list[tuple[str, str, int]]:
    """For an attribute sample with labels: (kind, new instruction, newly named object) for the
    colour swap (another object of the target's shape, named uniquely by its colour) and the shape
    swap (another object of the target's colour, named uniquely by its shape), where they exist."""
    objs = sample.meta["objects"]
    tgt = objs[sample.meta["target"]]
    words = sample.instruction.split()
    out = []
    for kind, key, other in (("colour", "color", "shape"), ("shape", "shape", "color")):
        if words.count(tgt[key]) != 1:
            continue
        for j, o in enumerate(objs):
            unique = sum(p["shape"] == o["shape"] and p["color"] == o["color"] for p in objs) == 1
            if o[other] == tgt[other] and o[key] != tgt[key] and unique:
                out.append((kind, " ".join(o[key] if w == tgt[key] else w for w in words), j))
                break
    return out


def _with_frames(sample, other):
    """``sample`` with ``other``'s frames (its instruction and ground truth unchanged)."""
    return replace(sample, frames=other.frames)


@torch.no_grad()
def leak_report(model, n_images: int, *, split: str = "val", readout: str | None = None,
                n_swap: int | None = None, seed: int = 0) -> dict:
    """The four leak controls on the first ``n_images`` images of ``split`` (word swaps on the first
    ``n_swap`` attribute images, default ``n_images``). Returns {"full", "keep0", "keep0_share",
    "shuffled", "shuffled_share", "other_image", "other_image_chance", "swap": {"colour", "shape":
    {"n", "followed", "kept_old"}}, "n", "readout"} (accuracies are cIoU)."""
    readout = model.check_readout(readout)
    g = torch.Generator().manual_seed(seed)
    full, keep0, shuffled, other, chance = [], [], [], [], []
    samples = [make_sample(split, i, "image") for i in range(n_images + 1)]
    for i in range(n_images):
        s = samples[i]
        gt = s.gt_masks
        full.append(_score(model.predict(s, keep=1.0, readout=readout).masks, gt))
        keep0.append(_score(model.predict(s, keep=0, readout=readout).masks, gt))
        shuffled.append(_score(model.predict(s, keep=1.0, readout=readout, position_mode="shuffled",
                                             generator=g).masks, gt))
        mixed = _with_frames(s, samples[i + 1])
        other.append(_score(model.predict(mixed, keep=1.0, readout=readout).masks, gt))
    for i in range(n_images):  # chance: each object of the other image taken as the mask
        o = make_sample(split, i + 1, "image", with_labels=True).meta["labels"]
        gt = samples[i].gt_masks
        scores = [_score(o == k, gt) for k in range(1, int(o.max()) + 1)]
        chance.append(tuple(np.mean(scores, 0)))
    swap = {"colour": [0, 0, 0], "shape": [0, 0, 0]}  # n, followed, kept the old target
    i = done = 0
    while done < (n_images if n_swap is None else n_swap):
        s = make_sample(split, i, "image", family="attribute", with_labels=True)
        i += 1
        done += 1
        lab = s.meta["labels"][0]
        for kind, text, j in word_swaps(s):
            pick = picked_object(model.predict(replace(s, instruction=text), keep=1.0, readout=readout).masks[0], lab)
            r = swap[kind]
            r[0] += 1
            r[1] += pick == j
            r[2] += pick == s.meta["target"]
    f = _ciou(full)
    return {"readout": readout, "split": split, "n": n_images, "full": f, "keep0": _ciou(keep0),
            "keep0_share": _ciou(keep0) / f if f else None, "shuffled": _ciou(shuffled),
            "shuffled_share": _ciou(shuffled) / f if f else None, "other_image": _ciou(other),
            "other_image_chance": _ciou(chance),
            "swap": {k: {"n": n, "followed": a / n if n else None, "kept_old": b / n if n else None}
                     for k, (n, a, b) in swap.items()}}
