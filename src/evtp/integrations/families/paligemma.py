"""PaliGemma 1 / 2 (``PaliGemmaModel``): ``(image_size / patch_size)²`` SigLIP tokens per image;
the language model receives a causal mask (a dict with a sliding-window one for PaliGemma 2)
whose prefix (``token_type_ids == 0``) is bidirectional; it is rebuilt for the pruned sequence."""
from __future__ import annotations

import sys

import torch

from evtp.integrations.families.gemma3 import gather_rows
from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality


class PaliGemma(Family):
    """Visual tokens: ``image_token_id``; grid (row, col) of the SigLIP patch grid; the images of
    a prompt stand side by side before the text, so they form one run and share one budget
    (grid (image, row, col))."""

    name = "PaliGemma"
    core_names = ("PaliGemmaModel",)
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
