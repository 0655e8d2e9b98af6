"""LLaVA (``LlavaModel``): one run of ``(image_size / patch_size)²`` tokens per image."""
from __future__ import annotations

import torch

from evtp.integrations.protocol import Family, Modality


class Llava(Family):
    """Visual tokens: ``image_token_id``; grid: (row, col) of the tower's patch grid per image.
    With ``vision_feature_select_strategy="full"`` each image starts with its CLS token, which has
    no grid cell and is always kept."""

    name = "LLaVA"
    core_names = ("LlavaModel",)
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
