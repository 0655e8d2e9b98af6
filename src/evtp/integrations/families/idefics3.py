"""Idefics3 and SmolVLM (``Idefics3Model``, ``SmolVLMModel``): the language model is ``text_model``.

Every image is cut into tiles plus a global view; each tile's ``image_seq_len`` tokens
(``(image_size / patch_size)² / scale_factor²`` after pixel shuffle) form one run of placeholders
between ``<fake_token_around_image>`` and ``<row_r_col_c>`` / ``<global-img>`` text tokens, which
are never pruned. Grid (row, col) inside the tile; **one budget per tile** (every tile and the
global view keep ``keep`` of their tokens), since which tiles form one image is only in the text
tokens between them.
"""
from __future__ import annotations

import math

import torch

from evtp.integrations import tiny
from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family

FAKE, GLOBAL = 105, 106  # <fake_token_around_image>, <global-img> in the tiny vocabulary


class TiledTextModelFamily(Family):
    def language_model(self, core):
        return core.text_model

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        side = math.isqrt(int(core.image_seq_len))
        grid, run = tiled_runs(m, side, what="image")
        return [Modality(m, grid[..., 1:], run)]


@register_family("Idefics3Model")
class Idefics3(TiledTextModelFamily):
    name = "Idefics3"

    def tiny_cases(self):
        return [TinyCase("idefics3", lambda **kw: build_tiny("idefics3", **kw), tile_inputs, (1, 2),
                         selectable=lambda tiles: 4 * tiles, placeholder_ids=(tiny.IMAGE,),
                         notes="spec = tiles (each its own budget; the test counts per tile)")]


@register_family("SmolVLMModel")
class SmolVLM(TiledTextModelFamily):
    name = "SmolVLM"

    def tiny_cases(self):
        return [TinyCase("smolvlm", lambda **kw: build_tiny("smolvlm", **kw), tile_inputs, (1, 2),
                         selectable=lambda tiles: 4 * tiles, placeholder_ids=(tiny.IMAGE,))]


def build_tiny(kind: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  image_size=32, patch_size=8)
    if kind == "idefics3":
        cfg = tf.Idefics3Config(vision_config=vision, text_config=tf.LlamaConfig(**tiny.TEXT).to_dict(),
                                image_token_id=tiny.IMAGE, scale_factor=2)
        cls = tf.Idefics3ForConditionalGeneration
    else:
        cfg = tf.SmolVLMConfig(vision_config=vision, text_config=tf.LlamaConfig(**tiny.TEXT).to_dict(),
                               image_token_id=tiny.IMAGE, scale_factor=2)
        cls = tf.SmolVLMForConditionalGeneration
    return tiny.instantiate(cls, cfg, seed=seed, attn_implementation=attn_implementation)


def tile_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec = tiles; each 32-px tile gives 4 tokens (4 x 4 patches, pixel shuffle 2) in
    ``<fake><global-img><image>*4`` (the last tile closed by another ``<fake>``)."""
    g = torch.Generator().manual_seed(seed)
    tiles = []

    def expand(item):
        tiles.extend(torch.randn(3, 32, 32, generator=g) for _ in range(item[1]))
        return ([FAKE, GLOBAL] + [tiny.IMAGE] * 4) * item[1] + [FAKE]

    ids, mask = tiny.expand_prompts(prompts, expand, padding_side)
    out = {"input_ids": ids, "attention_mask": mask}
    per_row = [sum(it[1] for it in prompt if not isinstance(it, int)) for prompt in prompts]  # tiles
    n = max(per_row)
    if n:
        pix = torch.zeros(len(prompts), n, 3, 32, 32)  # all-zero tiles are padding (the model drops them)
        for b, row in enumerate(torch.stack(tiles).split(per_row)):
            pix[b, :len(row)] = row
        out["pixel_values"] = pix
    return out
