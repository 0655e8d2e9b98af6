"""LLaVA (``LlavaModel``): one run of ``(image_size / patch_size)²`` tokens per image."""
from __future__ import annotations

import torch

from evtp.integrations import tiny
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family


@register_family("LlavaModel")
class Llava(Family):
    """Visual tokens: ``image_token_id``; grid: (row, col) of the tower's patch grid per image.
    With ``vision_feature_select_strategy="full"`` each image starts with its CLS token, which has
    no grid cell and is always kept."""

    name = "LLaVA"
    stash_keys = ("image_sizes",)

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        if stash.get("image_sizes") is not None:
            raise ValueError("image_sizes (variable-resolution LLaVA towers such as Pixtral) is not supported "
                             "by the LLaVA adapter; use fixed-size images")
        vc = core.config.vision_config
        side = int(vc.image_size) // int(vc.patch_size)
        strategy = getattr(core.config, "vision_feature_select_strategy", "default")
        per = side * side + (1 if strategy == "full" else 0)
        total = int(m.sum())
        if total % per:
            raise ValueError(f"found {total} image tokens, not a multiple of the {per} tokens per image of "
                             f"this LLaVA ({side}x{side} patches, strategy {strategy!r})")
        rank = (torch.cumsum(m.flatten().long(), 0) - 1).view(m.shape)
        img, local = rank // per, rank % per
        if strategy == "full":  # the CLS token has no grid cell: it is always kept
            m = m & (local != 0)
            local = local - 1
        grid = torch.stack([local // side, local % side], -1).clamp(min=0) * m.unsqueeze(-1)
        return [Modality(m, grid, torch.where(m, img, torch.full_like(img, -1)))]

    def tiny_cases(self):
        return [TinyCase("llava", build_tiny, tiny_inputs, (None, None), selectable=lambda spec: 16, placeholder_ids=(tiny.IMAGE,))]


def build_tiny(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, image_size=32, patch_size=8),
        text_config=tf.LlamaConfig(**tiny.TEXT), image_token_id=tiny.IMAGE, projector_hidden_act="gelu",
        vision_feature_layer=-1)
    return tiny.instantiate(tf.LlavaForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def tiny_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """16 image tokens per 32-px image (4 x 4 patches); the spec is ignored."""
    g = torch.Generator().manual_seed(seed)
    pix = []

    def expand(item):
        pix.append(torch.randn(1, 3, 32, 32, generator=g))
        return [tiny.IMAGE] * 16

    ids, mask = tiny.expand_prompts(prompts, expand, padding_side)
    out = {"input_ids": ids, "attention_mask": mask}
    if pix:
        out["pixel_values"] = torch.cat(pix)
    return out
