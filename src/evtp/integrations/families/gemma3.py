"""Gemma 3 (``Gemma3Model``): one run of ``mm_tokens_per_image`` pooled tokens per image; the
language model receives a *dict* of attention masks built from ``token_type_ids`` (the tokens of
one image attend to each other bidirectionally), which is rebuilt for the pruned sequence with
the model's own mask builders."""
from __future__ import annotations

import math
import sys

import torch

from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality


def gather_rows(values: torch.Tensor | None, kept_indices: torch.Tensor, fill: int = 0) -> torch.Tensor | None:
    """(B, L) per-token values -> (B, L') at the pruned sequence's slots (``fill`` at padding)."""
    if values is None:
        return None
    slot = kept_indices >= 0
    got = values.to(kept_indices.device).gather(1, kept_indices.clamp(min=0))
    return torch.where(slot, got, torch.full_like(got, fill))


class Gemma3(Family):
    """Visual tokens: ``image_token_id``; grid (row, col) of the pooled ``side x side`` map."""

    name = "Gemma3"
    core_names = ("Gemma3Model",)
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
