"""IVS models that evtp can evaluate, behind one small protocol (`evtp.models.base`).

``load_model(name)`` resolves a name lazily, so a model family is imported only when used.
"""
from __future__ import annotations

import importlib

from evtp.models.base import IVSModel, Prediction

# name -> "module:factory"; the factory takes keyword options and returns an IVSModel.
MODELS: dict[str, str] = {
    "reference": "evtp.models.reference:load_pretrained",
    # transformers LLaVA + [SEG] projector + SamModel, pruned by evtp.integrations.transformers
    "llava-sam-tiny": "evtp.models.segmentation:load_tiny",  # tiny random (tests)
    "llava-smollm2-sam": "evtp.models.segmentation:load_smollm2_sam",  # real SmolLM2, random rest
}

# name -> what its scores mean on the real benchmarks (`evtp eval` prints it for them)
NOTES: dict[str, str] = {
    "reference": "the reference model was trained on synthetic scenes only (evtp.data.synthetic); its "
                 "scores on a real benchmark say nothing about pruning a real IVS model",
    "llava-sam-tiny": "llava-sam-tiny has tiny random weights: its masks and scores are meaningless",
    "llava-smollm2-sam": "llava-smollm2-sam has random vision, [SEG] and SAM weights: its masks and scores "
                         "are meaningless (token counts and LLM costs are real)",
}


def load_model(name: str, **options) -> IVSModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module), func)(**options)


__all__ = ["IVSModel", "Prediction", "MODELS", "NOTES", "load_model"]
