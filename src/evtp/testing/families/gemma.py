"""Tiny PaliGemma, PaliGemma 2 and Gemma 3, from the released Google configs and processors.

Kept: the SigLIP tower without a head; PaliGemma's images before ``<bos>`` with a bidirectional
prefix (``token_type_ids`` from the processor; its ``labels`` too), PaliGemma 2's Gemma 2 LM with
sliding-window and full layers and logit soft-capping; Gemma 3's average pooling of the patch grid
to ``mm_tokens_per_image`` tokens (kernel 4, as 64 -> 16 in the release), ``<start_of_image>`` /
``<end_of_image>`` around them, its 5 sliding : 1 full layer pattern (here 1 : 1) and
``token_type_ids``. Shrunk: widths, depths, image sizes, sliding window, vocabulary.
"""
from __future__ import annotations

from evtp.testing import tiny

PALIGEMMA = "google/paligemma-3b-mix-224"
PALIGEMMA2 = "google/paligemma2-3b-pt-224"
GEMMA3 = "google/gemma-3-4b-it"
PAD, EOS, BOS, IMAGE, BOI, EOI = 0, 1, 2, 200, 201, 202


def _siglip(image_size: int, patch_size: int):
    import transformers as tf

    return tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                 image_size=image_size, patch_size=patch_size, vision_use_head=False)


# -- PaliGemma 1 / 2: 256 SigLIP tokens (224 / 14) -> 16 here (16 / 4) ----------------------------
def build_paligemma(*, seed: int = 0, attn_implementation: str = "sdpa", version: int = 1):
    """``version=2``: Gemma 2's soft-capped attention runs eager only (transformers 5.23 refuses
    SDPA for ``Gemma2Model``), whatever ``attn_implementation`` asks."""
    import transformers as tf

    common = dict(tiny.TEXT, head_dim=8, num_key_value_heads=1, hidden_activation="gelu_pytorch_tanh")
    if version == 1:
        text = tf.GemmaConfig(**common)
    else:
        text = tf.Gemma2Config(**dict(common, sliding_window=8, query_pre_attn_scalar=8, attn_logit_softcapping=50.0,
                                      final_logit_softcapping=30.0,
                                      layer_types=["sliding_attention", "full_attention"]))
        attn_implementation = "eager"
    cfg = tf.PaliGemmaConfig(text_config=text, vision_config=_siglip(16, 4), image_token_index=IMAGE,
                             projection_dim=32, hidden_size=32, pad_token_id=PAD)
    return tiny.instantiate(tf.PaliGemmaForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def paligemma_processor():
    import transformers as tf
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    images = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    images.image_seq_length = 16
    tok = tiny.word_tokenizer({"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<image>": IMAGE}, pad="<pad>",
                              bos_token="<bos>", eos_token="<eos>", image_token="<image>")
    return tf.PaliGemmaProcessor(image_processor=images, tokenizer=tok)


def paligemma_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """The processor writes each row's images (16 tokens each) before ``<bos>`` and the text; it
    returns ``token_type_ids`` (0: the bidirectional prefix) and ``labels`` (all ignored)."""
    rows = tiny.per_row(prompts, "image")
    images = [[tiny.image(*it[1], seed) for it in row] for row in rows] if any(rows) else None
    text = [tiny.render([it for it in p if isinstance(it, int)], str) for p in prompts]
    proc = paligemma_processor()
    if images is None:  # the processor insists on images; a text-only prompt is its tokenizer's
        return dict(proc.tokenizer(text, padding=True, padding_side=padding_side, return_tensors="pt"))
    return dict(proc(text=text, images=images, padding=True, padding_side=padding_side, return_tensors="pt"))


# -- Gemma 3: SigLIP 896 / 14 = 64 x 64 patches pooled to 16 x 16 -> 8 x 8 pooled to 2 x 2 here ---------
def build_gemma3(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    text = tf.Gemma3TextConfig(**dict(tiny.TEXT, head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                                      layer_types=["sliding_attention", "full_attention"]))
    cfg = tf.Gemma3Config(text_config=text, vision_config=_siglip(32, 4), mm_tokens_per_image=4,
                          image_token_index=IMAGE, boi_token_index=BOI, eoi_token_index=EOI, pad_token_id=PAD)
    return tiny.instantiate(tf.Gemma3ForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def gemma3_processor():
    import transformers as tf
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    tok = tiny.word_tokenizer({"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<image_soft_token>": IMAGE,
                               "<start_of_image>": BOI, "<end_of_image>": EOI}, pad="<pad>", bos_token="<bos>",
                              eos_token="<eos>", image_token="<image_soft_token>", boi_token="<start_of_image>",
                              eoi_token="<end_of_image>")
    return tf.Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=4)


def gemma3_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """An image is ``<start_of_image>`` in the text; the processor expands it to 4 tokens."""
    rows = tiny.per_row(prompts, "image")
    images = [[tiny.image(*it[1], seed) for it in row] for row in rows] if any(rows) else None
    text = [tiny.render(p, lambda it: "<start_of_image>") for p in prompts]
    out = gemma3_processor()(text=text, images=images, padding=True, padding_side=padding_side, return_tensors="pt")
    return dict(out)


def cases() -> list[tiny.TinyCase]:
    common = dict(text_id=tiny.text_id, processor="the family's processor (PIL image processor)")
    pg = dict(several_images=False, generated_token_type=1)
    return [
        tiny.TinyCase("paligemma", PALIGEMMA, build_paligemma, paligemma_inputs, ((16, 16), (20, 24)),
                      lambda spec, what="image": 16, (IMAGE,), keeps="SigLIP without head, images before <bos>, "
                      "bidirectional prefix from the processor's token_type_ids (and its labels), Gemma LM with "
                      "one key-value head", **common, **pg),
        tiny.TinyCase("paligemma2", PALIGEMMA2, lambda **kw: build_paligemma(version=2, **kw), paligemma_inputs,
                      ((16, 16), (20, 24)), lambda spec, what="image": 16, (IMAGE,),
                      keeps="as PaliGemma, with the Gemma 2 LM: sliding-window + full layers (mask dict), "
                      "attention and final logit soft-capping, query_pre_attn_scalar", **common, **pg),
        tiny.TinyCase("gemma3", GEMMA3, build_gemma3, gemma3_inputs, ((32, 32), (40, 24)), lambda spec, what="image": 4,
                      (IMAGE,), keeps="SigLIP without head, patch grid average-pooled to mm_tokens_per_image "
                      "(kernel 4), <start_of_image> / <end_of_image>, sliding + full layers, token_type_ids "
                      "from the processor", **common),
    ]
