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
  and image tokens do not match"); the tiny case says so (``video_with_images=False``).
"""
from __future__ import annotations

import torch

from evtp.integrations import tiny
from evtp.integrations.families.qwen_vl import QwenVLFamily, items_from_encoder_outputs, thw_inputs
from evtp.integrations.grids import split_by_token_type
from evtp.integrations.protocol import TinyCase, register_family

VIDEO_START, VIDEO_END = 104, 105  # <|begin_of_video|>, <|end_of_video|> in the tiny vocabulary
TIMESTAMP = 50  # a text token standing for the frame's "<seconds>" after <|end_of_image|>
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


@register_family("Glm4vModel")
class Glm4v(Glm4vFamily):
    name = "GLM-4.1V"

    def tiny_cases(self):
        return [glm_case("glm4v", build_glm4v)]


@register_family("Glm4vMoeModel")
class Glm4vMoe(Glm4vFamily):
    name = "GLM-4.5V (Glm4vMoe)"

    def tiny_cases(self):
        return [glm_case("glm4v_moe", build_glm4v_moe, notes="layer 0 dense, layer 1 MoE (4 experts, top 2)")]


@register_family("Glm46VModel")
class Glm46V(Glm4vFamily):
    name = "GLM-4.6V"

    def tiny_cases(self):
        return [glm_case("glm46v", build_glm46v)]


@register_family("GlmOcrModel")
class GlmOcr(Glm4vFamily):
    name = "GLM-OCR"

    def tiny_cases(self):
        return [glm_case("glm_ocr", build_glm_ocr)]


def glm_case(kind, build, notes: str = "") -> TinyCase:
    return TinyCase(kind, build, glm_inputs, ((1, 4, 4), (1, 4, 6)), video_spec=(2, 4, 4),
                    selectable=lambda thw: thw[0] * thw[1] * thw[2] // 4, placeholder_ids=(tiny.IMAGE,),
                    rope_rows=3, video_with_images=False, notes=notes)


def _configs(**text_extra):
    rope = dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 1, 1], partial_rotary_factor=1.0)
    text = dict(tiny.TEXT, rope_parameters=rope, **text_extra)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3, out_hidden_size=32, image_size=16)
    ids = dict(image_token_id=tiny.IMAGE, video_token_id=tiny.VIDEO, image_start_token_id=tiny.VSTART,
               image_end_token_id=tiny.VEND, video_start_token_id=VIDEO_START, video_end_token_id=VIDEO_END)
    return text, vision, ids


def build_glm4v(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text, vision, ids = _configs()
    cfg = tf.Glm4vConfig(text_config=text, vision_config=vision, **ids)
    return tiny.instantiate(tf.Glm4vForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def build_glm4v_moe(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text, vision, ids = _configs(head_dim=8, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                 n_shared_experts=1, first_k_dense_replace=1)
    cfg = tf.Glm4vMoeConfig(text_config=text, vision_config=vision, **ids)
    return tiny.instantiate(tf.Glm4vMoeForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def build_glm46v(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text, vision, ids = _configs()
    cfg = tf.Glm46VConfig(text_config=dict(text, model_type="glm4v_text"),
                          vision_config=dict(vision, model_type="glm4v_vision"), **ids)
    return tiny.instantiate(tf.Glm46VForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def build_glm_ocr(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text, vision, ids = _configs()
    cfg = tf.GlmOcrConfig(text_config=text, vision_config=vision, **ids)
    return tiny.instantiate(tf.GlmOcrForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def glm_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec = (t, h, w) grid in 4-px patches (h, w even; images t = 1), as GLM's processor lays
    them out: an image is ``<boi> IMAGE * (h*w/4) <eoi>``; a video ``<bov>``, then per temporal
    patch ``<boi> IMAGE * (h*w/4) <eoi> <timestamp>``, then ``<eov>``. ``mm_token_type_ids`` is 1 at
    image and 2 at video placeholders."""

    def layout(what, t, h, w):
        frame = [tiny.VSTART] + [tiny.IMAGE] * (h * w // 4) + [tiny.VEND]
        return frame if what == "image" else [VIDEO_START] + (frame + [TIMESTAMP]) * t + [VIDEO_END]

    def types(item, ids):  # mm_token_type_ids: 1 / 2 at an image's / a video's placeholders, else 0
        kind = TOKEN_TYPES["image" if item[0] == "image" else "video"]
        return [kind if i == tiny.IMAGE else 0 for i in ids]

    (ids, mask, token_types), media = thw_inputs(prompts, layout, seed=seed, padding_side=padding_side,
                                                 extra=types)
    return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": token_types, **media}
