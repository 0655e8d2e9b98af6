"""Tiny LLaVA, LLaVA-NeXT and LLaVA-OneVision, from the released llava-hf configs and processors.

Kept from the released configs: ``vision_feature_select_strategy``, ``vision_feature_layer``, the
tower type (CLIP with a CLS token / SigLIP without), ``image_grid_pinpoints`` (scaled with the
tile size), ``vision_aspect_ratio``, an odd number of patches per tile side for OneVision (27 in
the release, 7 here: its videos pool to ``ceil(side / 2)``), the projector activation.
Shrunk: widths, depths, tile size, vocabulary (the special tokens keep their names and roles).
Images go through the family's processor with its PIL image processor; OneVision videos are
hand-built (its video processor needs torchvision): ``16 * frames + 1`` ``<video>`` ids spliced into
the processor's output (`evtp.testing.tiny.splice`), ``pixel_values_videos`` the frames normalised
as its image processor does.
"""
from __future__ import annotations

import numpy as np
import torch

from evtp.testing import tiny

LLAVA = "llava-hf/llava-1.5-7b-hf"
LLAVA_NEXT = "llava-hf/llava-v1.6-mistral-7b-hf"
ONEVISION = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"  # and every llava-onevision-*-hf
IMAGE, VIDEO, PAD = 200, 201, 0


def _clip(image_size: int, patch_size: int):
    import transformers as tf

    return tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=image_size, patch_size=patch_size, projection_dim=32)


def _tokenizer(video: bool = False):
    special = {"<pad>": PAD, "<image>": IMAGE, **({"<video>": VIDEO} if video else {})}
    named = {"image_token": "<image>", **({"video_token": "<video>"} if video else {})}
    return tiny.word_tokenizer(special, pad="<pad>", **named)


# -- LLaVA 1.5: CLIP ViT-L/14-336 (576 tokens, CLS dropped by "default"), feature layer -2 -------
def build_llava(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.LlavaConfig(vision_config=_clip(16, 4), text_config=tf.LlamaConfig(**tiny.TEXT), image_token_id=IMAGE,
                         projector_hidden_act="gelu", vision_feature_select_strategy="default",
                         vision_feature_layer=-2, image_seq_length=16, pad_token_id=PAD)
    return tiny.instantiate(tf.LlavaForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def llava_processor():
    import transformers as tf
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    images = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return tf.LlavaProcessor(image_processor=images, tokenizer=_tokenizer(), patch_size=4,
                             vision_feature_select_strategy="default", num_additional_image_tokens=1)


def llava_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec (H, W) px, resized and centre-cropped to 16 px by the processor: 16 tokens each."""
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    return tiny.run_processor(llava_processor(), prompts, lambda it: "<image>", padding_side=padding_side,
                              images=images)


# -- LLaVA-NeXT: any resolution, 5 pinpoints of 1x2 / 2x1 / 2x2 / 3x1 / 1x3 tiles ------------------
NEXT_PINPOINTS = [[16, 32], [32, 16], [32, 32], [48, 16], [16, 48]]  # released: the same x 336 / 16


def build_next(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.LlavaNextConfig(vision_config=_clip(16, 4), text_config=tf.MistralConfig(**dict(tiny.TEXT, head_dim=8)),
                             image_token_id=IMAGE, image_grid_pinpoints=NEXT_PINPOINTS, projector_hidden_act="gelu",
                             vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=16,
                             pad_token_id=PAD)
    return tiny.instantiate(tf.LlavaNextForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def next_processor():
    import transformers as tf
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    images = LlavaNextImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                        image_grid_pinpoints=NEXT_PINPOINTS)
    return tf.LlavaNextProcessor(image_processor=images, tokenizer=_tokenizer(), patch_size=4,
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1)


def next_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    return tiny.run_processor(next_processor(), prompts, lambda it: "<image>", padding_side=padding_side,
                              images=images)


# -- LLaVA-OneVision: SigLIP (no CLS, strategy "full"), 36 pinpoints (1..6 x 1..6 tiles), anyres_max_9
OV_SIDE, OV_PATCH = 7, 4
OV_TILE = OV_SIDE * OV_PATCH  # 28 px
OV_PINPOINTS = [[OV_TILE * i, OV_TILE * j] for i in range(1, 7) for j in range(1, 7)]


def build_onevision(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   image_size=OV_TILE, patch_size=OV_PATCH, vision_use_head=False)
    text = tf.Qwen2Config(**dict(tiny.TEXT, tie_word_embeddings=True))
    cfg = tf.LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                                  video_token_index=VIDEO, image_grid_pinpoints=OV_PINPOINTS,
                                  projector_hidden_act="gelu", vision_feature_select_strategy="full",
                                  vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
                                  tie_word_embeddings=True, pad_token_id=PAD)
    return tiny.instantiate(tf.LlavaOnevisionForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def onevision_processor():
    import transformers as tf
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import \
        LlavaOnevisionImageProcessorPil

    images = LlavaOnevisionImageProcessorPil(size={"height": OV_TILE, "width": OV_TILE},
                                             image_grid_pinpoints=OV_PINPOINTS)
    return tiny.image_only(tf.LlavaOnevisionProcessor)(
        image_processor=images, tokenizer=_tokenizer(video=True), num_image_tokens=OV_SIDE * OV_SIDE,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")


def onevision_video_tokens(frames: int) -> int:
    pooled = -(-OV_SIDE // 2)
    return frames * pooled * pooled + 1  # + the newline after the last frame


def onevision_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """Images (H, W) px through the processor; a video of ``frames`` 28-px frames by hand."""
    proc = onevision_processor()
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    videos = tiny.media_items(prompts, "video")

    def media(it):
        return "<image>" if it[0] == "image" else tiny.SPLICE

    out = tiny.run_processor(proc, prompts, media, padding_side=padding_side, images=images)
    if videos:
        runs = [[VIDEO] * onevision_video_tokens(n) for _, n in videos]
        out = tiny.splice(out, proc.tokenizer, runs, padding_side=padding_side)
        ip = proc.image_processor
        mean, std = np.asarray(ip.image_mean, np.float32), np.asarray(ip.image_std, np.float32)
        clips = [tiny.pixels(seed, n, OV_TILE, OV_TILE, 3).astype(np.float32) / 255.0 for _, n in videos]
        out["pixel_values_videos"] = torch.from_numpy(np.stack([(c - mean) / std for c in clips])).permute(0, 1, 4, 2, 3)
    return out


def anyres_selectable(side: int, tiles_of):
    """selectable(spec) of an any-resolution image: the base tile plus the un-padded high-resolution
    grid (``tiles_of(H, W)`` -> its (rows, cols) in tokens); newlines are always kept."""

    def count(spec, what: str = "image"):
        if what == "video":
            return spec * (-(-side // 2)) ** 2
        rows, cols = tiles_of(*spec)
        return side * side + rows * cols

    return count


def cases() -> list[tiny.TinyCase]:
    common = dict(text_id=tiny.text_id, processor="the family's processor (PIL image processor)")
    return [
        tiny.TinyCase("llava", LLAVA, build_llava, llava_inputs, ((16, 16), (24, 20)), lambda spec, what="image": 16,
                      (IMAGE,), keeps="CLIP tower, vision_feature_select_strategy='default' (CLS dropped), "
                      "vision_feature_layer=-2, gelu projector", **common),
        tiny.TinyCase("llava_next", LLAVA_NEXT, build_next, next_inputs, ((16, 16), (16, 32)),
                      anyres_selectable(4, lambda h, w: (4, 4) if (h, w) == (16, 16) else (4, 8)), (IMAGE,),
                      always_kept=("image_newline",), keeps="CLIP tower, strategy 'default', feature layer -2, the "
                      "5 released pinpoints (1x2, 2x1, 2x2, 3x1, 1x3 tiles), Mistral LM", **common),
        tiny.TinyCase("llava_onevision", ONEVISION, build_onevision, onevision_inputs, ((28, 28), (28, 56)),
                      anyres_selectable(OV_SIDE, lambda h, w: (OV_SIDE, OV_SIDE * w // h)), (IMAGE, VIDEO),
                      video_spec=3, always_kept=("image_newline",),
                      keeps="SigLIP tower (no CLS), vision_feature_select_strategy='full', feature layer -1, "
                      "the 36 released pinpoints (1..6 x 1..6 tiles), anyres_max_9, odd tile side (27 -> 7), "
                      "Qwen2 LM with tied embeddings", **dict(common, processor="the family's processor for "
                      "images (PIL); videos hand-built (its video processor needs torchvision)")),
    ]
