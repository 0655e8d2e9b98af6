"""Tiny cases of every supported family (`tiny_cases`), one module per family group.

Each `evtp.testing.tiny.TinyCase` names the released checkpoint its config mirrors
(``case.released``), builds a random-weight model (``case.build(seed=0)``) and gives the inputs
the family's processor returns for a batch of prompts (``case.inputs(prompts)``).
"""
from __future__ import annotations

from evtp.testing.tiny import TinyCase

GROUPS = ("llava", "gemma", "qwen", "glm", "internvl", "idefics", "mistral", "llama4")


def tiny_cases() -> dict[str, TinyCase]:
    """kind -> `TinyCase` of every family."""
    import importlib

    out = {}
    for group in GROUPS:
        for case in importlib.import_module(f"evtp.testing.families.{group}").cases():
            out[case.kind] = case
    return out


def build(kind: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    """The tiny ``*ForConditionalGeneration`` of ``kind`` (a key of `tiny_cases`), eval mode, float32."""
    cases = tiny_cases()
    if kind not in cases:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {sorted(cases)}")
    return cases[kind].build(seed=seed, attn_implementation=attn_implementation)


def make_inputs(kind: str, prompts: list[list], *, seed: int = 0, padding_side: str = "left") -> dict:
    """The inputs of ``kind``'s case for a batch of prompts (`TinyCase.inputs`)."""
    return tiny_cases()[kind].inputs(prompts, seed=seed, padding_side=padding_side)
