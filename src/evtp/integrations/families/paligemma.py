"""PaliGemma 1 / 2 (``PaliGemmaModel``): ``(image_size / patch_size)²`` SigLIP tokens per image;
the language model receives a causal mask (a dict with a sliding-window one for PaliGemma 2)
whose prefix (``token_type_ids == 0``) is bidirectional; it is rebuilt for the pruned sequence."""
from __future__ import annotations

import sys

import torch

from evtp.integrations import tiny
from evtp.integrations.families.gemma3 import gather_rows
from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family


@register_family("PaliGemmaModel")
class PaliGemma(Family):
    """Visual tokens: ``image_token_id``; grid (row, col) of the SigLIP patch grid; the images of
    a prompt stand side by side before the text, so they form one run and share one budget
    (grid (image, row, col))."""

    name = "PaliGemma"
    stash_keys = ("token_type_ids",)

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        vc = core.config.vision_config
        side = int(vc.image_size) // int(vc.patch_size)
        grid, run = tiled_runs(m, side, what="image")
        return [Modality(m, grid, run)]

    def lm_inputs(self, core, kw, out, stash):
        kw = super().lm_inputs(core, kw, out, stash)
        mod = sys.modules[type(core).__module__]
        mask_kwargs = {"config": core.config.get_text_config(), "inputs_embeds": out.inputs_embeds,
                       "attention_mask": out.attention_mask, "past_key_values": kw.get("past_key_values"),
                       "position_ids": out.position_ids}
        token_types = gather_rows(stash.get("token_type_ids"), out.kept_indices, fill=1)
        if token_types is not None:
            mask_kwargs["block_sequence_ids"] = torch.where(token_types == 0, 0, -1)
        causal = mod.create_causal_mask(**mask_kwargs)
        if getattr(core.config.text_config, "sliding_window", None) is not None:
            causal = {"full_attention": causal,
                      "sliding_attention": mod.create_sliding_window_causal_mask(**mask_kwargs)}
        kw["attention_mask"] = causal
        return kw

    def tiny_cases(self):
        return [TinyCase("paligemma", build_tiny, tiny_inputs, (None, None), selectable=lambda spec: 16,
                         placeholder_ids=(tiny.IMAGE,), several_images=False, generated_token_type=1)]


def build_tiny(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text = tf.GemmaConfig(**dict(tiny.TEXT, head_dim=8))
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                   image_size=32, patch_size=8, projection_dim=32)
    cfg = tf.PaliGemmaConfig(text_config=text, vision_config=vision, image_token_id=tiny.IMAGE, projection_dim=32,
                             hidden_size=32)
    return tiny.instantiate(tf.PaliGemmaForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def tiny_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """16 SigLIP tokens (4 x 4) per 32-px image; the prompt is the prefix (``token_type_ids`` 0)."""
    g = torch.Generator().manual_seed(seed)
    pix = []

    def expand(item):
        pix.append(torch.randn(1, 3, 32, 32, generator=g))
        return [tiny.IMAGE] * 16

    ids, mask = tiny.expand_prompts(prompts, expand, padding_side)
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    if pix:
        out["pixel_values"] = torch.cat(pix)
    return out
