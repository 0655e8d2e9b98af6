"""Gemma 3 (``Gemma3Model``): one run of ``mm_tokens_per_image`` pooled tokens per image; the
language model receives a *dict* of attention masks built from ``token_type_ids`` (the tokens of
one image attend to each other bidirectionally), which is rebuilt for the pruned sequence with
the model's own mask builders."""
from __future__ import annotations

import math
import sys

import torch

from evtp.integrations import tiny
from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family


def gather_rows(values: torch.Tensor | None, kept_indices: torch.Tensor, fill: int = 0) -> torch.Tensor | None:
    """(B, L) per-token values -> (B, L') at the pruned sequence's slots (``fill`` at padding)."""
    if values is None:
        return None
    slot = kept_indices >= 0
    got = values.to(kept_indices.device).gather(1, kept_indices.clamp(min=0))
    return torch.where(slot, got, torch.full_like(got, fill))


@register_family("Gemma3Model")
class Gemma3(Family):
    """Visual tokens: ``image_token_id``; grid (row, col) of the pooled ``side x side`` map."""

    name = "Gemma3"
    stash_keys = ("token_type_ids",)

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        side = math.isqrt(int(core.config.mm_tokens_per_image))
        grid, run = tiled_runs(m, side, what="image")
        return [Modality(m, grid[..., 1:], run)]

    def lm_inputs(self, core, kw, out, stash):
        kw = super().lm_inputs(core, kw, out, stash)
        mod = sys.modules[type(core).__module__]
        mask_kwargs = {"config": core.config.get_text_config(), "inputs_embeds": out.inputs_embeds,
                       "attention_mask": out.attention_mask, "past_key_values": kw.get("past_key_values"),
                       "position_ids": out.position_ids}
        token_types = gather_rows(stash.get("token_type_ids"), out.kept_indices)
        if token_types is not None:
            block = mod.get_block_sequence_ids_for_mask(token_types, device=out.inputs_embeds.device)
            kw["attention_mask"] = mod.create_masks_for_vision_model(block_sequence_ids=block, **mask_kwargs)
        else:
            kw["attention_mask"] = mod.create_masks_for_generate(**mask_kwargs)
        return kw

    def tiny_cases(self):
        return [TinyCase("gemma3", build_tiny, tiny_inputs, (None, None), selectable=lambda spec: 4,
                         placeholder_ids=(tiny.IMAGE,), notes="sliding window 4 on layer 0")]


def build_tiny(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text = tf.Gemma3TextConfig(**dict(tiny.TEXT, head_dim=8, sliding_window=4,
                                      layer_types=["sliding_attention", "full_attention"]))
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                   image_size=32, patch_size=8)
    cfg = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=tiny.IMAGE,
                          boi_token_index=tiny.VSTART, eoi_token_index=tiny.VEND)
    return tiny.instantiate(tf.Gemma3ForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def tiny_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """4 pooled tokens (2 x 2) per 32-px image, between <start_of_image> and <end_of_image>;
    ``token_type_ids`` 1 at image tokens."""
    g = torch.Generator().manual_seed(seed)
    pix = []

    def expand(item):
        pix.append(torch.randn(1, 3, 32, 32, generator=g))
        return [tiny.VSTART] + [tiny.IMAGE] * 4 + [tiny.VEND]

    ids, mask = tiny.expand_prompts(prompts, expand, padding_side)
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (ids == tiny.IMAGE).long()}
    if pix:
        out["pixel_values"] = torch.cat(pix)
    return out
