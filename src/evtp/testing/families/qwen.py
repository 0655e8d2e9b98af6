"""Tiny Qwen2-VL, Qwen2.5-VL, Qwen3-VL (dense, MoE) and Qwen3.5, from the released Qwen configs.

Kept: the vision tower's patch merge (2 x 2) and temporal patch (2); M-RoPE with the released
``mrope_section`` proportions (Qwen2 / 2.5-VL 16:24:24, Qwen3-VL 24:20:20 interleaved, Qwen3.5
11:11:10 -> 3:3:2 interleaved on a quarter of the head), Qwen2.5-VL's windowed vision blocks with
the last block full (``fullatt_block_indexes``), Qwen3-VL's deepstack layers and learned position
grid, Qwen3-VL-MoE's experts, Qwen3.5's linear-attention : full-attention layers (3 : 1 -> 1 : 1),
the processors' ``<|vision_start|>`` / ``<|vision_end|>`` around every image (and every Qwen3-VL
video frame, after its timestamp) and ``mm_token_type_ids``. Shrunk: widths, depths, patch size
(14 / 16 -> 4), image sizes, experts, vocabulary. Images go through the family's processor (PIL
image processor); videos are hand-built (the video processors need torchvision): the processor's
token layout spliced in (`evtp.testing.tiny.splice`), ``pixel_values_videos`` random normalised
patches of the processor's shape, ``video_grid_thw`` their grid.
"""
from __future__ import annotations

import torch

from evtp.testing import tiny

QWEN2_VL = "Qwen/Qwen2-VL-7B-Instruct"
QWEN2_5_VL = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN3_VL = "Qwen/Qwen3-VL-4B-Instruct"
QWEN3_VL_MOE = "Qwen/Qwen3-VL-30B-A3B-Instruct"
QWEN3_5 = "Qwen/Qwen3.5-27B"
PAD, IMAGE, VIDEO, VSTART, VEND = 0, 200, 201, 202, 203
PATCH, MERGE, TEMPORAL = 4, 2, 2
TIMESTAMP = 50  # the word standing for Qwen3-VL's "<t seconds>" before every video frame
IDS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)


def _text(mrope_section, *, head_dim: int, heads: int, interleaved: bool = False, **extra):
    rope = dict(rope_type="default", rope_theta=10000.0, mrope_section=mrope_section,
                **({"mrope_interleaved": True} if interleaved else {}))
    rope.update(extra.pop("rope_extra", {}))
    return dict(tiny.TEXT, hidden_size=32, num_attention_heads=heads, num_key_value_heads=1, head_dim=head_dim,
                rope_parameters=rope, pad_token_id=PAD, **extra)


def build_qwen2_vl(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4, patch_size=PATCH, spatial_merge_size=MERGE,
                  temporal_patch_size=TEMPORAL, in_channels=3)
    cfg = tf.Qwen2VLConfig(vision_config=vision, text_config=_text([2, 3, 3], head_dim=16, heads=2), **IDS)
    return tiny.instantiate(tf.Qwen2VLForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def build_qwen2_5_vl(*, seed: int = 0, attn_implementation: str = "sdpa", cls=None):
    """``cls``: a subclass to build instead (UniPixel's, a fine-tune's)."""
    import transformers as tf

    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH,
                  spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, in_channels=3, out_hidden_size=32,
                  window_size=PATCH * MERGE * 4, fullatt_block_indexes=[1])
    cfg = tf.Qwen2_5_VLConfig(vision_config=vision, text_config=_text([2, 3, 3], head_dim=16, heads=2), **IDS)
    return tiny.instantiate(cls or tf.Qwen2_5_VLForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def _vision3(**extra):
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=PATCH, spatial_merge_size=MERGE,
                temporal_patch_size=TEMPORAL, in_channels=3, out_hidden_size=32, num_position_embeddings=16, **extra)


def build_qwen3_vl(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.Qwen3VLConfig(vision_config=_vision3(deepstack_visual_indexes=[0, 1]),
                           text_config=_text([6, 5, 5], head_dim=32, heads=2, interleaved=True), **IDS)
    return tiny.instantiate(tf.Qwen3VLForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def build_qwen3_vl_moe(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text = _text([6, 5, 5], head_dim=32, heads=2, interleaved=True, num_experts=4, num_experts_per_tok=2,
                 moe_intermediate_size=32)
    cfg = tf.Qwen3VLMoeConfig(vision_config=_vision3(deepstack_visual_indexes=[0, 1]), text_config=text, **IDS)
    return tiny.instantiate(tf.Qwen3VLMoeForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def build_qwen3_5(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text = _text([3, 3, 2], head_dim=64, heads=2, interleaved=True, rope_extra={"partial_rotary_factor": 0.25},
                 layer_types=["linear_attention", "full_attention"], linear_key_head_dim=8, linear_value_head_dim=8,
                 linear_num_key_heads=2, linear_num_value_heads=4)
    cfg = tf.Qwen3_5Config(vision_config=_vision3(), text_config=text, **IDS)
    return tiny.instantiate(tf.Qwen3_5ForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def processor(version: int):
    import transformers as tf
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    step = PATCH * MERGE
    images = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL,
                                      size={"shortest_edge": step * step, "longest_edge": 64 * step * step})
    tok = tiny.word_tokenizer({"<|endoftext|>": PAD, "<|image_pad|>": IMAGE, "<|video_pad|>": VIDEO,
                               "<|vision_start|>": VSTART, "<|vision_end|>": VEND}, pad="<|endoftext|>",
                              image_token="<|image_pad|>", video_token="<|video_pad|>",
                              vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>")
    cls = tf.Qwen2VLProcessor if version == 2 else tf.Qwen3VLProcessor
    return tiny.image_only(cls)(image_processor=images, tokenizer=tok)


def video_tokens(t: int, h: int, w: int, frames_split: bool) -> list[int]:
    """The processor's layout of a (t, h, w)-patch video: one run, or (Qwen3-VL) one run per
    temporal patch after its timestamp."""
    per = h * w // (MERGE * MERGE)
    if frames_split:
        return ([tiny.text_id(TIMESTAMP), VSTART] + [VIDEO] * per + [VEND]) * t
    return [VSTART] + [VIDEO] * (t * per) + [VEND]


def qwen_inputs(prompts, *, seed: int = 0, padding_side: str = "left", version: int = 2):
    """Image spec (H, W) px (the processor resizes to multiples of 8 = 4 * 2 px); video spec
    (t, h, w) in patches (t temporal patches of 2 frames)."""
    proc = processor(version)
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    videos = [it[1] for it in tiny.media_items(prompts, "video")]

    def media(it):
        return "<|vision_start|><|image_pad|><|vision_end|>" if it[0] == "image" else tiny.SPLICE

    out = tiny.run_processor(proc, prompts, media, padding_side=padding_side, images=images)
    if videos:
        runs = [video_tokens(*thw, frames_split=version == 3) for thw in videos]
        out = tiny.splice(out, proc.tokenizer, runs, padding_side=padding_side,
                          values={"mm_token_type_ids": lambda run: [2 if i == VIDEO else 0 for i in run]})
        out["pixel_values_videos"] = torch.cat([tiny.randn(seed, t * h * w, 3 * TEMPORAL * PATCH * PATCH)
                                                for t, h, w in videos])
        out["video_grid_thw"] = torch.tensor(videos)
    return out


def image_tokens(spec, what: str = "image") -> int:
    """Selectable tokens: an (H, W)-px image -> (H / 8) (W / 8) (H, W multiples of 8 here); a
    (t, h, w)-patch video -> t h w / 4."""
    if what == "video":
        t, h, w = spec
        return t * h * w // (MERGE * MERGE)
    h, w = spec
    return (h // (PATCH * MERGE)) * (w // (PATCH * MERGE))


def cases() -> list[tiny.TinyCase]:
    common = dict(text_id=tiny.text_id, rope_rows=3, video_spec=(2, 4, 4),
                  processor="the family's processor for images (PIL); videos hand-built (its video processor "
                  "needs torchvision)")
    v2 = lambda p, **kw: qwen_inputs(p, version=2, **kw)  # noqa: E731
    v3 = lambda p, **kw: qwen_inputs(p, version=3, **kw)  # noqa: E731
    specs = ((16, 16), (24, 40))
    return [
        tiny.TinyCase("qwen2_vl", QWEN2_VL, build_qwen2_vl, v2, specs, image_tokens, (IMAGE, VIDEO),
                      keeps="patch merge 2, temporal patch 2, mrope_section 16:24:24 (-> 2:3:3), vision start / end "
                      "tokens, mm_token_type_ids", **common),
        tiny.TinyCase("qwen2_5_vl", QWEN2_5_VL, build_qwen2_5_vl, v2, specs, image_tokens, (IMAGE, VIDEO),
                      keeps="as Qwen2-VL, plus windowed vision attention (window = 4 merged tokens, as 112 px / "
                      "28 px) with the last block full (fullatt_block_indexes)", **common),
        tiny.TinyCase("qwen3_vl", QWEN3_VL, build_qwen3_vl, v3, specs, image_tokens, (IMAGE, VIDEO),
                      keeps="mrope_section 24:20:20 (-> 6:5:5) interleaved, deepstack layers, learned position "
                      "grid, every video frame its own run after a timestamp", **common),
        tiny.TinyCase("qwen3_vl_moe", QWEN3_VL_MOE, build_qwen3_vl_moe, v3, specs, image_tokens, (IMAGE, VIDEO),
                      keeps="as Qwen3-VL, with a MoE LM (128 experts top 8 -> 4 top 2)", **common),
        tiny.TinyCase("qwen3_5", QWEN3_5, build_qwen3_5, v3, specs, image_tokens, (IMAGE, VIDEO),
                      keeps="linear-attention and full-attention layers (3 : 1 -> 1 : 1), mrope_section 11:11:10 "
                      "(-> 3:3:2) interleaved on partial_rotary_factor 0.25 of the head", **common),
    ]
