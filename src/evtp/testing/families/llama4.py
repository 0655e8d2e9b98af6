"""Tiny Llama 4, from meta-llama/Llama-4-Scout-17B-16E-Instruct.

Kept: pixel shuffle ratio 0.5 over the tile's patch grid, images as tiles plus a global view laid
out as the Llama 4 processor writes them (``<|image_start|>``, rows of tiles separated by
``<|tile_x_separator|>`` / ``<|tile_y_separator|>``, ``<|image|>`` before the global view,
``<|image_end|>``), the decoder's chunked-attention RoPE layers and NoPE layers with
``attn_temperature_tuning``, MoE layers with a shared expert, QK-norm. Shrunk: widths, depths,
tile (336 -> 16 px, 144 -> 4 tokens per tile), ``attention_chunk_size`` (8192 -> 16, so the chunked
mask is active), experts (16 top 1 -> 2 top 1), vocabulary. **Hand-built inputs**: the Llama 4
image processor needs torchvision; the ids follow the processor's layout and ``pixel_values`` are
random normalised tiles, one per tile and one for the global view.
"""
from __future__ import annotations

import torch

from evtp.testing import tiny

LLAMA4 = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
PAD, IMAGE, BOI, EOI, TILE_X, TILE_Y, GLOBAL = 0, 200, 201, 202, 203, 204, 205
TILE = 16


def build(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text = dict(tiny.TEXT, head_dim=8, intermediate_size_mlp=64, num_local_experts=2, num_experts_per_tok=1,
                moe_layers=[1], no_rope_layers=[1, 0], attention_chunk_size=16, use_qk_norm=True,
                attn_temperature_tuning=True, pad_token_id=PAD)
    vision = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, image_size=TILE,
                  patch_size=4, pixel_shuffle_ratio=0.5, vision_output_dim=32, projector_input_dim=32,
                  projector_output_dim=32)
    cfg = tf.Llama4Config(text_config=text, vision_config=vision, image_token_index=IMAGE, boi_token_index=BOI,
                          eoi_token_index=EOI)
    return tiny.instantiate(tf.Llama4ForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec = (rows, cols) of 16-px tiles; every tile and the global view give 4 tokens;
    ``pixel_values`` lists each image's tiles row by row, then its global view."""
    tiles = []

    def expand(item):
        rows, cols = item[1]
        seq = [BOI]
        if rows * cols > 1:
            for _ in range(rows):
                for c in range(cols):
                    seq += [IMAGE] * 4 + ([TILE_X] if c < cols - 1 else [])
                seq.append(TILE_Y)
            tiles.extend(tiny.randn(seed, 3, TILE, TILE, salt=100 * rows + 10 * cols + k) for k in range(rows * cols))
        tiles.append(tiny.randn(seed, 3, TILE, TILE, salt=100 * rows + 10 * cols + 9))
        return seq + [GLOBAL] + [IMAGE] * 4 + [EOI]

    ids, mask = tiny.expand_prompts(prompts, expand, tiny.text_id, padding_side, pad_id=PAD)
    out = {"input_ids": ids, "attention_mask": mask}
    if tiles:
        out["pixel_values"] = torch.stack(tiles)
    return out


def cases() -> list[tiny.TinyCase]:
    return [tiny.TinyCase(
        "llama4", LLAMA4, build, inputs, ((1, 1), (2, 2)),
        lambda rc, what="image": 4 * (rc[0] * rc[1] + 1 if rc[0] * rc[1] > 1 else 1), (IMAGE,), tiny.text_id,
        "hand-built (the Llama 4 image processor needs torchvision): the processor's token layout, random tiles",
        embeds_with_pixels=False, keeps="pixel shuffle 0.5, tiles + global view with the processor's separators, "
        "chunked-attention RoPE layers and NoPE layers with attn_temperature_tuning, MoE, QK-norm",
        notes="layer 0 RoPE + chunked attention (chunks of 16), layer 1 NoPE + MoE (2 experts)")]
