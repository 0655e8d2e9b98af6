"""Tiny GLM-4.1V, GLM-4.5V (``Glm4vMoe``), GLM-4.6V and GLM-OCR, from the released zai-org configs.

Kept: patch merge 2 x 2 and temporal patch 2; 3-D M-RoPE on half of each head
(``partial_rotary_factor`` 0.5, ``mrope_section`` 8:12:12 -> 2:3:3); images written
``<|begin_of_image|>`` + image placeholders + ``<|end_of_image|>``; video frames written with the
*image* placeholder inside ``<|begin_of_video|> ... <|end_of_video|>``, a timestamp after each
frame, told apart by the processor's ``mm_token_type_ids`` (1 image, 2 video); GLM-4.5V's MoE LM
with a dense first layer and a shared expert. Shrunk: widths, depths, patch size (14 -> 4), image
sizes, experts, vocabulary. Images go through the family's processor (PIL image processor); videos
are hand-built (the video processor needs torchvision): the processor's layout spliced in,
``pixel_values_videos`` random normalised patches of its shape.
"""
from __future__ import annotations

import torch

from evtp.testing import tiny

GLM4V = "zai-org/GLM-4.1V-9B-Thinking"
GLM4V_MOE = "zai-org/GLM-4.5V"
GLM46V = "zai-org/GLM-4.6V"
GLM_OCR = "zai-org/GLM-OCR"
PAD, IMAGE, VIDEO, BOI, EOI, BOV, EOV = 0, 200, 201, 202, 203, 204, 205
PATCH, MERGE, TEMPORAL = 4, 2, 2
TIMESTAMP = 50  # the word standing for a frame's "<seconds>" after <|end_of_image|>


def _configs(**text_extra):
    rope = dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3], partial_rotary_factor=0.5)
    text = dict(tiny.TEXT, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                rope_parameters=rope, pad_token_id=PAD, **text_extra)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH,
                  spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, in_channels=3, out_hidden_size=32,
                  image_size=24)
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, image_start_token_id=BOI, image_end_token_id=EOI,
               video_start_token_id=BOV, video_end_token_id=EOV)
    return text, vision, ids


def build(kind: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    if kind == "glm4v_moe":
        text, vision, ids = _configs(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                     n_shared_experts=1, first_k_dense_replace=1)
        cfg, cls = tf.Glm4vMoeConfig(text_config=text, vision_config=vision, **ids), tf.Glm4vMoeForConditionalGeneration
    elif kind == "glm46v":
        text, vision, ids = _configs()
        cfg = tf.Glm46VConfig(text_config=dict(text, model_type="glm4v_text"),
                              vision_config=dict(vision, model_type="glm4v_vision"), **ids)
        cls = tf.Glm46VForConditionalGeneration
    elif kind == "glm_ocr":
        text, vision, ids = _configs()
        cfg, cls = tf.GlmOcrConfig(text_config=text, vision_config=vision, **ids), tf.GlmOcrForConditionalGeneration
    else:
        text, vision, ids = _configs()
        cfg, cls = tf.Glm4vConfig(text_config=text, vision_config=vision, **ids), tf.Glm4vForConditionalGeneration
    return tiny.instantiate(cls, cfg, seed=seed, attn_implementation=attn_implementation)


def processor(kind: str):
    import transformers as tf
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    step = PATCH * MERGE
    images = Glm4vImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL,
                                    size={"shortest_edge": step * step, "longest_edge": 64 * step * step})
    tok = tiny.word_tokenizer({"<|endoftext|>": PAD, "<|image|>": IMAGE, "<|video|>": VIDEO, "<|begin_of_image|>": BOI,
                               "<|end_of_image|>": EOI, "<|begin_of_video|>": BOV, "<|end_of_video|>": EOV},
                              pad="<|endoftext|>", image_token="<|image|>", video_token="<|video|>")
    cls = tf.Glm46VProcessor if kind == "glm46v" else tf.Glm4vProcessor
    return tiny.image_only(cls)(image_processor=images, tokenizer=tok)


def video_tokens(t: int, h: int, w: int) -> list[int]:
    frame = [BOI] + [IMAGE] * (h * w // (MERGE * MERGE)) + [EOI, tiny.text_id(TIMESTAMP)]
    return [BOV] + frame * t + [EOV]


def glm_inputs(prompts, *, seed: int = 0, padding_side: str = "left", kind: str = "glm4v"):
    """Image spec (H, W) px (resized to multiples of 8 by the processor); video spec (t, h, w) in
    patches (t temporal patches of 2 frames)."""
    proc = processor(kind)
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    videos = [it[1] for it in tiny.media_items(prompts, "video")]

    def media(it):
        return "<|begin_of_image|><|image|><|end_of_image|>" if it[0] == "image" else tiny.SPLICE

    out = tiny.run_processor(proc, prompts, media, padding_side=padding_side, images=images)
    if videos:
        out = tiny.splice(out, proc.tokenizer, [video_tokens(*thw) for thw in videos], padding_side=padding_side,
                          values={"mm_token_type_ids": lambda run: [2 if i == IMAGE else 0 for i in run]})
        out["pixel_values_videos"] = torch.cat([tiny.randn(seed, t * h * w, 3 * TEMPORAL * PATCH * PATCH)
                                                for t, h, w in videos])
        out["video_grid_thw"] = torch.tensor(videos)
    return out


def tokens(spec, what: str = "image") -> int:
    if what == "video":
        t, h, w = spec
        return t * h * w // (MERGE * MERGE)
    return (spec[0] // (PATCH * MERGE)) * (spec[1] // (PATCH * MERGE))


def cases() -> list[tiny.TinyCase]:
    out = []
    for kind, released, extra in ((("glm4v", GLM4V, "")), ("glm4v_moe", GLM4V_MOE, "; MoE LM, dense first layer, "
                                  "a shared expert (128 experts top 8 -> 4 top 2)"), ("glm46v", GLM46V, ""),
                                  ("glm_ocr", GLM_OCR, "")):
        out.append(tiny.TinyCase(
            kind, released, lambda kind=kind, **kw: build(kind, **kw),
            lambda p, kind=kind, **kw: glm_inputs(p, kind=kind, **kw), ((16, 16), (16, 24)), tokens, (IMAGE,),
            tiny.text_id, "the family's processor for images (PIL); videos hand-built (its video processor needs "
            "torchvision)", video_spec=(2, 4, 4), rope_rows=3, video_with_images=False,
            keeps="patch merge 2, temporal patch 2, partial_rotary_factor 0.5 with mrope_section 8:12:12 (-> 2:3:3), "
            "begin / end of image and video tokens, video frames at the image id told apart by mm_token_type_ids"
            + extra))
    return out
