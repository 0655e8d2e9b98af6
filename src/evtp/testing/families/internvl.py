"""Tiny InternVL 3 (HF-native ``InternVLForConditionalGeneration``), from OpenGVLab/InternVL3-1B-hf.

Kept: the InternViT tower with its CLS token dropped (``vision_feature_select_strategy``
"default"), ``vision_feature_layer`` -1, pixel shuffle ``downsample_ratio`` 0.5, images cut into up
to 12 tiles plus a thumbnail (``crop_to_patches``), each tile ``image_seq_length`` tokens between
``<img>`` and ``</img>``, the Qwen2 LM. Shrunk: widths, depths, tile size (448 -> 16 px, so 256 ->
4 tokens per tile), vocabulary. Images go through the family's processor with its PIL image
processor (GotOcr2ImageProcessorPil); the video processor needs torchvision and is left out
(InternVL's videos are frames as images).
"""
from __future__ import annotations

from evtp.testing import tiny

INTERNVL = "OpenGVLab/InternVL3-1B-hf"
PAD, IMAGE, VIDEO, START, END = 0, 200, 201, 202, 203
TILE, PATCH = 16, 4
PER_TILE = (TILE // PATCH // 2) ** 2  # 4 (released: (448 / 14 / 2)² = 256)


def build(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=[TILE, TILE], patch_size=[PATCH, PATCH], use_qk_norm=False,
                           layer_scale_init_value=0.1, norm_type="layer_norm", use_mean_pooling=True),
        text_config=dict(model_type="qwen2", pad_token_id=PAD, **tiny.TEXT), image_token_id=IMAGE,
        downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_seq_length=PER_TILE)
    return tiny.instantiate(tf.InternVLForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def processor():
    import transformers as tf
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    images = GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1,
                                      max_patches=12)
    tok = tiny.word_tokenizer({"<|endoftext|>": PAD, "<IMG_CONTEXT>": IMAGE, "<img>": START, "</img>": END,
                               "<video>": VIDEO}, pad="<|endoftext|>", start_image_token="<img>",
                              end_image_token="</img>", context_image_token="<IMG_CONTEXT>", video_token="<video>")
    return tiny.image_only(tf.InternVLProcessor)(image_processor=images, tokenizer=tok, image_seq_length=PER_TILE)


def inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec (H, W) px: the processor cuts it into tiles of 16 px (+ a thumbnail when > 1 tile)."""
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    return tiny.run_processor(processor(), prompts, lambda it: "<IMG_CONTEXT>", padding_side=padding_side,
                              images=images)


def tiles(spec) -> int:
    h, w = spec
    n = (h // TILE) * (w // TILE)
    return n + 1 if n > 1 else n


def cases() -> list[tiny.TinyCase]:
    return [tiny.TinyCase(
        "internvl", INTERNVL, build, inputs, ((16, 16), (16, 32)), lambda spec, what="image": PER_TILE * tiles(spec),
        (IMAGE,), tiny.text_id, "the family's processor (PIL image processor; its video processor, which needs "
        "torchvision, left out)",
        keeps="InternViT with CLS dropped (strategy 'default'), feature layer -1, pixel shuffle 0.5, up to 12 tiles "
        "+ thumbnail, <img> / </img> around each image, Qwen2 LM")]
