"""Tiny Mistral 3 (Pixtral tower), from mistralai/Mistral-Small-3.1-24B-Instruct-2503.

Kept: the Pixtral tower at variable image sizes (2-D RoPE over the patch grid, ``image_sizes``),
the 2 x 2 ``spatial_merge_size`` patch merger, ``vision_feature_layer`` -1, the projector without
bias, and the token layout of the Pixtral processor: every row of merged patches closed by
``[IMG_BREAK]``, the image by ``[IMG_END]``, at the released ids ([IMG] 10, [IMG_BREAK] 12,
[IMG_END] 13). Shrunk: widths, depths, patch size (14 -> 4 px), longest edge (1540 -> 32 px),
vocabulary. **Token ids hand-built**: ``PixtralProcessor`` is marked as needing torchvision, so
the ids are laid out as it writes them; ``pixel_values`` and ``image_sizes`` come from its PIL image
processor (``PixtralImageProcessorPil``).
"""
from __future__ import annotations

from evtp.testing import tiny

MISTRAL3 = "mistralai/Mistral-Small-3.1-24B-Instruct-2503"
UNK, BOS, EOS, IMAGE, PAD, BREAK, END = 0, 1, 2, 10, 11, 12, 13
PATCH, MERGE, LONGEST = 4, 2, 32


def build(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    vision = tf.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                    image_size=LONGEST, patch_size=PATCH, head_dim=8)
    text = tf.MistralConfig(**dict(tiny.TEXT, head_dim=8, pad_token_id=PAD))
    cfg = tf.Mistral3Config(vision_config=vision, text_config=text, image_token_index=IMAGE,
                            spatial_merge_size=MERGE, vision_feature_layer=-1, multimodal_projector_bias=False,
                            projector_hidden_act="gelu")
    return tiny.instantiate(tf.Mistral3ForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def image_processor():
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    return PixtralImageProcessorPil(size={"longest_edge": LONGEST}, patch_size={"height": PATCH, "width": PATCH})


def inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec (H, W) px (multiples of 8, longest edge <= 32): H/8 rows of W/8 [IMG] tokens, each row
    closed by [IMG_BREAK], the last by [IMG_END] (the Pixtral processor's layout)."""
    step = PATCH * MERGE

    def expand(item):
        h, w = item[1]
        return sum(([IMAGE] * (w // step) + [END if r == h // step - 1 else BREAK] for r in range(h // step)), [])

    ids, mask = tiny.expand_prompts(prompts, expand, tiny.text_id, padding_side, pad_id=PAD)
    out = {"input_ids": ids, "attention_mask": mask}
    images = [tiny.image(*it[1], seed) for it in tiny.media_items(prompts, "image")]
    if images:
        out.update(dict(image_processor()(images, return_tensors="pt")))
    return out


def cases() -> list[tiny.TinyCase]:
    step = PATCH * MERGE
    return [tiny.TinyCase(
        "mistral3", MISTRAL3, build, inputs, ((16, 16), (24, 32)),
        lambda spec, what="image": (spec[0] // step) * (spec[1] // step), (IMAGE,), tiny.text_id,
        "pixels from the family's PIL image processor; token ids hand-built in the Pixtral processor's layout "
        "(PixtralProcessor needs torchvision)",
        keeps="Pixtral tower at variable sizes, spatial_merge_size 2, feature layer -1, projector without bias, "
        "[IMG_BREAK] after every row and [IMG_END] after the image at the released ids")]
