"""InternVL (``InternVLModel``, HF-native InternVL 2.5 / 3): runs of 448-px tiles after pixel shuffle."""
from __future__ import annotations

import torch

from evtp.integrations import tiny
from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family


def internvl_side(vision_config, downsample_ratio: float) -> int:
    """Tokens per tile side after pixel shuffle: image_size / patch_size * downsample_ratio."""
    size = vision_config.image_size if isinstance(vision_config.image_size, int) else vision_config.image_size[0]
    patch = vision_config.patch_size if isinstance(vision_config.patch_size, int) else vision_config.patch_size[0]
    return int(round(int(size) // int(patch) * float(downsample_ratio)))


@register_family("InternVLModel")
class InternVL(Family):
    """Visual tokens: ``image_token_id``; every run of them is one image (or video frame), cut
    into tiles of ``side²`` tokens; grid (tile, row, col), one budget per image."""

    name = "InternVL"

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        side = internvl_side(core.config.vision_config, core.config.downsample_ratio)
        grid, run = tiled_runs(m, side, what="image")
        return [Modality(m, grid, run)]

    def tiny_cases(self):
        return [TinyCase("internvl", build_tiny, tiny_inputs, (1, 2), selectable=lambda tiles: 4 * tiles, placeholder_ids=(tiny.IMAGE,))]


def build_tiny(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, image_size=[32, 32], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", **tiny.TEXT), image_token_id=tiny.IMAGE, downsample_ratio=0.5,
        projector_hidden_act="gelu")
    return tiny.instantiate(tf.InternVLForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def tiny_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec = number of 32-px tiles; 4 tokens (2 x 2) per tile, between <img> and </img>."""
    g = torch.Generator().manual_seed(seed)
    pix = []

    def expand(item):
        n_tiles = item[1]
        pix.append(torch.randn(n_tiles, 3, 32, 32, generator=g))
        return [tiny.VSTART] + [tiny.IMAGE] * (4 * n_tiles) + [tiny.VEND]

    ids, mask = tiny.expand_prompts(prompts, expand, padding_side)
    out = {"input_ids": ids, "attention_mask": mask}
    if pix:
        out["pixel_values"] = torch.cat(pix)
    return out
