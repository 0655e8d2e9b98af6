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
    "llava-smollm2-sam": "evtp.models.segmentation:load_smollm2_sam",  # real SmolLM2, random rest
    # released IVS checkpoints you have (path=<folder or hub id>): docs/evaluation.md
    "sa2va": "evtp.models.sa2va:load_sa2va",  # Sa2VA's own predict_forward under evtp.TokenPruner
    "seg-zero": "evtp.models.seg_zero:load_seg_zero",  # Qwen2.5-VL box + points answer -> SAM2
}

# name -> what its scores mean on the real benchmarks (`evtp eval` prints it for them)
NOTES: dict[str, str] = {
    "reference": "the reference model was trained on synthetic scenes only (evtp.data.synthetic); its "
                 "scores on a real benchmark say nothing about pruning a real IVS model",
    "llava-smollm2-sam": "llava-smollm2-sam has random vision, [SEG] and SAM weights: its masks and scores "
                         "are meaningless (token counts and LLM costs are real)",
    "sa2va": "sa2va runs the Sa2VA checkpoint given as path= (its own remote code, trust_remote_code=true); "
             "its scores are that checkpoint's; only tiny random checkpoints and a stand-in of "
             "Sa2VA-InternVL's code were run by evtp's tests, never the released weights",
    "seg-zero": "seg-zero runs the Qwen2.5-VL reasoning segmenter given as path= (Seg-Zero / VisionReasoner "
                "answer format) and the SAM2 given as sam_path=; its scores are those checkpoints'; only tiny "
                "random checkpoints were run by evtp's tests, never the released weights",
}


def register_model(name: str, target: str, note: str | None = None) -> None:
    """Make ``name`` loadable: ``target`` is "module:factory" (imported on first use); ``note``: what
    its scores mean on the real benchmarks. Test support registers its tiny models this way
    (`evtp.testing.register_test_models`). Registering the same target again is a no-op.

    Raises:
        ValueError when ``name`` is registered with another target, or ``target`` is not "module:factory".
    """
    if target.count(":") != 1:
        raise ValueError(f"target {target!r}: expected 'module:factory'")
    if MODELS.get(name, target) != target:
        raise ValueError(f"model {name!r} is already registered as {MODELS[name]!r}")
    MODELS[name] = target
    if note is not None:
        NOTES[name] = note


def load_model(name: str, **options) -> IVSModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module), func)(**options)


__all__ = ["IVSModel", "Prediction", "MODELS", "NOTES", "load_model", "register_model"]
