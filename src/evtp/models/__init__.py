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
    # released IVS checkpoints you have (path=<folder or hub id>): docs/evaluation.md
    "sa2va": "evtp.models.sa2va:load_sa2va",  # Sa2VA's own predict_forward under evtp.TokenPruner
    "seg-zero": "evtp.models.seg_zero:load_seg_zero",  # Qwen2.5-VL box + points answer -> SAM2
}

# name -> what its scores mean on the real benchmarks (`evtp eval` prints it for them)
NOTES: dict[str, str] = {
    "reference": "the reference model was trained on synthetic scenes only (evtp.data.synthetic); its "
                 "scores on a real benchmark say nothing about pruning a real IVS model",
    "llava-sam-tiny": "llava-sam-tiny has tiny random weights: its masks and scores are meaningless",
    "llava-smollm2-sam": "llava-smollm2-sam has random vision, [SEG] and SAM weights: its masks and scores "
                         "are meaningless (token counts and LLM costs are real)",
    "sa2va": "sa2va runs the Sa2VA checkpoint given as path= (its own remote code, trust_remote_code=true); "
             "its scores are that checkpoint's; only tiny random checkpoints and a stand-in of "
             "Sa2VA-InternVL's code were run by evtp's tests, never the released weights",
    "seg-zero": "seg-zero runs the Qwen2.5-VL reasoning segmenter given as path= (Seg-Zero / VisionReasoner "
                "answer format) and the SAM2 given as sam_path=; its scores are those checkpoints'; only tiny "
                "random checkpoints were run by evtp's tests, never the released weights",
}


def load_model(name: str, **options) -> IVSModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module), func)(**options)


__all__ = ["IVSModel", "Prediction", "MODELS", "NOTES", "load_model"]
