"""Tiny models for the tests of ``evtp bench transformers`` (``--model tiny``): the tiny LLaVA and
InternVL family cases with a fixed prompt, registered by `evtp.testing.register_test_models`."""
from __future__ import annotations

from evtp.testing.families import internvl, llava, make_inputs


def load_tiny():
    """(model, input_ids, pixel_values, description): the tiny LLaVA, 16 image tokens."""
    inp = make_inputs("llava", [[1, 5, ("image", (16, 16)), 7, 8, 9]])
    return llava.build_llava(), inp["input_ids"], inp["pixel_values"], "tiny random LLaVA (16 image tokens)"


def load_tiny_video(frames: int):
    """(model, input_ids, pixel_values, description): the tiny InternVL, ``frames`` one-tile frames
    of 4 tokens (Sa2VA's layout: frames as images)."""
    prompt = [1, 5] + [it for f in range(frames) for it in (("image", (16, 16)), 6)] + [7, 8]
    inp = make_inputs("internvl", [prompt])
    return (internvl.build(), inp["input_ids"], inp["pixel_values"],
            f"tiny random InternVL ({frames} frames x {internvl.PER_TILE} tokens)")
