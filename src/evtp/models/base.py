"""The protocol between evaluation code and IVS models."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from evtp.data.types import Sample


@dataclass
class Prediction:
    """What a model returns for one sample.

    Attributes:
        masks: (T, H, W) bool at the sample's frame size, or None when the model emitted no
            ``[SEG]`` (metrics then count an empty mask).
        tokens_kept / tokens_total: visual tokens the language model saw / would have seen.
        timings_ms: per-component wall time, e.g. {"vision": .., "selection": .., "lm_prefill": ..,
            "decode": .., "mask_decoder": .., "total": ..}.
        extra: anything else (kept indices, coverage, generated text ...).
    """

    masks: np.ndarray | None
    tokens_kept: int
    tokens_total: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class IVSModel(Protocol):
    name: str

    def predict(self, sample: Sample, *, method: str = "evtp", keep: float | int = 0.2,
                **options: Any) -> Prediction:
        """Segment ``sample.instruction`` in ``sample.frames`` with visual tokens pruned by
        ``evtp.select_tokens(method=method, keep=keep, **options)``."""
        ...
