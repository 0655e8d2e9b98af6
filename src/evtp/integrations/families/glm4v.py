"""GLM-4.1V, GLM-4.5V, GLM-4.6V and GLM-OCR (``Glm4vModel``, ``Glm4vMoeModel``, ``Glm46VModel``,
``GlmOcrModel``): Qwen-VL grids and 3-D M-RoPE, with images and videos sharing one placeholder id.

* GLM's processor writes every video frame as ``<|begin_of_image|>`` + *image* placeholders +
  ``<|end_of_image|>`` + a timestamp, inside ``<|begin_of_video|> ... <|end_of_video|>``; image and
  video tokens differ only in ``mm_token_type_ids`` (1 image, 2 video), which the adapter stashes
  and splits the placeholders by (`evtp.integrations.grids.split_by_token_type`). Its
  ``video_token_id`` is only matched in ``inputs_embeds``-only calls (transformers' own
  ``get_placeholder_mask``), so both ids count as placeholders.
* Grids: images (row, col), videos (frame, row, col) from ``image_grid_thw`` / ``video_grid_thw``;
  inside ``generate`` (which drops those) from the M-RoPE ids of ``get_rope_index`` — every frame
  is its own run with its own temporal id, regrouped into videos from the per-video feature
  counts of ``mm_encoder_outputs``, as for Qwen3-VL. One budget per image / video.
* Positions: the (3, B, L) ids of ``get_rope_index`` (4 rows inside ``generate``) shrink with the
  sequence; with ``position_mode="original"`` kept tokens keep them.
* transformers 5.23 scatters image features into *every* image-id placeholder, video frames
  included, so a call cannot hold images and videos together (its ``ValueError`` "Image features
  and image tokens do not match").
"""
from __future__ import annotations

import torch

from evtp.integrations.families.qwen_vl import QwenVLFamily, items_from_encoder_outputs
from evtp.integrations.grids import split_by_token_type

TOKEN_TYPES = {"image": 1, "video": 2}


class Glm4vFamily(QwenVLFamily):
    placeholders = {"image": "image_token_id", "video": "video_token_id"}
    stash_keys = QwenVLFamily.stash_keys + ("mm_token_type_ids",)

    def items_of_runs(self, mask, name, stash):
        return items_from_encoder_outputs(mask, name, stash)

    def modality_masks(self, masks: dict, stash: dict) -> dict:
        """Image / video masks from the shared placeholders and ``mm_token_type_ids``; without the
        types, a call that carries the grid of only one modality is all that modality."""
        shared = masks["image"] | masks["video"]
        types = stash.get("mm_token_type_ids")
        if types is None:
            given = [name for name, key in (("image", "image_grid_thw"), ("video", "video_grid_thw"))
                     if stash.get(key) is not None]
            if len(given) == 1:
                return {name: shared if name == given[0] else torch.zeros_like(shared) for name in TOKEN_TYPES}
        return split_by_token_type(shared, types, TOKEN_TYPES)

    def grid(self, core, masks, stash, embeds):
        return super().grid(core, self.modality_masks(masks, stash), stash, embeds)


class Glm4v(Glm4vFamily):
    name = "GLM-4.1V"
    core_names = ("Glm4vModel",)


class Glm4vMoe(Glm4vFamily):
    name = "GLM-4.5V (Glm4vMoe)"
    core_names = ("Glm4vMoeModel",)


class Glm46V(Glm4vFamily):
    name = "GLM-4.6V"
    core_names = ("Glm46VModel",)


class GlmOcr(Glm4vFamily):
    name = "GLM-OCR"
    core_names = ("GlmOcrModel",)
