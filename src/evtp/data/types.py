"""The one sample type every data reader yields and every model consumes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass
class Sample:
    """One instructed-segmentation query.

    Attributes:
        sample_id: unique, stable id (used to resume runs and to merge shards).
        frames: (T, H, W, 3) uint8 RGB; T = 1 for an image.
        instruction: the referring expression or reasoning question.
        gt_masks: (T, H, W) bool ground truth, or None where the split has no masks.
        task: "image" or "video".
        family: expression family label (e.g. "attribute", "spatial", "motion"), "" if unknown.
        meta: anything else a reader knows (dataset ids, ReVOS type_id, ...).
    """

    sample_id: str
    frames: np.ndarray
    instruction: str
    gt_masks: np.ndarray | None = None
    task: Literal["image", "video"] = "image"
    family: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
