"""Tiny random-weight builds of the supported transformers VLMs, and matching inputs.

For tests and the tiny IVS model only: everything is built from configs (no download), in well
under a second, with a fixed seed. The outputs are meaningless; shapes and flow are real.
Every family adapter brings its own `TinyCase` (`evtp.integrations.protocol.tiny_cases`); this
module holds the shared vocabulary, the two entry points `build` / `make_inputs`, and the
helpers the families' input builders share (`expand_prompts`, `pad`).
"""
from __future__ import annotations

import torch

VOCAB = 128
IMAGE, VIDEO, VSTART, VEND = 100, 101, 102, 103  # placeholder token ids
# ids 104..127 are free for family-specific special tokens (newline, tile separators, [SEG] ...)
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}


def cases() -> dict:
    """kind -> `TinyCase` of every registered family."""
    from evtp.integrations.protocol import tiny_cases

    return tiny_cases()


def kinds() -> tuple[str, ...]:
    return tuple(cases())


def build(kind: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    """A tiny ``*ForConditionalGeneration`` of ``kind`` (a key of `cases`), eval mode, float32."""
    all_cases = cases()
    if kind not in all_cases:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {sorted(all_cases)}")
    return all_cases[kind].build(seed=seed, attn_implementation=attn_implementation)


def make_inputs(kind: str, prompts: list[list], *, seed: int = 0, padding_side: str = "left") -> dict:
    """Model inputs for a batch of prompts (see `TinyCase.inputs`)."""
    return cases()[kind].inputs(prompts, seed=seed, padding_side=padding_side)


def pad(seqs: list[list[int]], padding_side: str = "left", extra: list[list[int]] | None = None):
    """(input_ids, attention_mask[, extra row values]) of a padded batch; ``extra``: per-token
    values padded alike (e.g. token_type_ids)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
    L = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    ext = torch.zeros(len(seqs), L, dtype=torch.long)
    for b, s in enumerate(seqs):
        sl = slice(L - len(s), L) if padding_side == "left" else slice(0, len(s))
        ids[b, sl] = torch.tensor(s)
        mask[b, sl] = 1
        if extra is not None:
            ext[b, sl] = torch.tensor(extra[b])
    return (ids, mask, ext) if extra is not None else (ids, mask)


def expand_prompts(prompts: list[list], expand, padding_side: str = "left", extra=None):
    """`pad` of a batch of prompts whose media items are expanded into placeholder tokens.

    A prompt is a list of int token ids (kept as they are) and media items (("image", spec) /
    ("video", spec)); ``expand(item) -> list[int]`` gives the token ids standing for one item. It is
    called once per item, in prompt order, row by row, so the caller's closure can draw and record
    the items' pixels / grids in batch order. ``extra(item, ids) -> list[int]``: per-token values of
    an item's ``ids`` (text tokens take 0), padded alike (e.g. token_type_ids).

    Returns (input_ids (B, L), attention_mask (B, L)[, extra values (B, L)]), L the longest prompt.
    """
    seqs, values = [], []
    for prompt in prompts:
        seq, val = [], []
        for it in prompt:
            if isinstance(it, int):
                seq.append(it)
                val.append(0)
                continue
            ids = expand(it)
            seq += ids
            if extra is not None:
                val += extra(it, ids)
        seqs.append(seq)
        values.append(val)
    return pad(seqs, padding_side, values if extra is not None else None)


def instantiate(cls, cfg, *, seed: int, attn_implementation: str):
    """``cls(cfg)`` with a fixed seed and attention implementation, in eval mode."""
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    return cls(cfg).eval()
