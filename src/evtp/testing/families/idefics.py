"""Tiny Idefics3 and SmolVLM, from HuggingFaceM4/Idefics3-8B-Llama3 and HuggingFaceTB/SmolVLM-256M-Instruct.

Kept: the pixel-shuffle ``scale_factor`` (Idefics3 2, SmolVLM 4), image splitting into tiles of
``max_image_size`` plus a global view, each tile ``image_seq_len`` tokens between
``<fake_token_around_image>`` and ``<row_r_col_c>`` / ``<global-img>`` text tokens, the Llama LM.
Shrunk: widths, depths, tile size (364 / 512 px -> 16 px, so 169 / 64 -> 4 tokens per tile),
vocabulary. Images go through the family's processor with its PIL image processor (SmolVLM's
video processor, which needs torchvision, left out).
"""
from __future__ import annotations

from evtp.testing import tiny

IDEFICS3 = "HuggingFaceM4/Idefics3-8B-Llama3"
SMOLVLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
PAD, BOS, IMAGE, FAKE, GLOBAL, EOU = 0, 1, 200, 201, 202, 203
ROW_COL = {f"<row_{r}_col_{c}>": 210 + 4 * (r - 1) + (c - 1) for r in range(1, 5) for c in range(1, 5)}
TILE = 16


def build(kind: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    patch, scale = (4, 2) if kind == "idefics3" else (2, 4)  # released: 364 / 14 = 26 -> 13; 512 / 16 = 32 -> 8
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=TILE,
                  patch_size=patch)
    text = tf.LlamaConfig(**dict(tiny.TEXT, pad_token_id=PAD)).to_dict()
    config, cls = ((tf.Idefics3Config, tf.Idefics3ForConditionalGeneration) if kind == "idefics3"
                   else (tf.SmolVLMConfig, tf.SmolVLMForConditionalGeneration))
    cfg = config(vision_config=vision, text_config=text, image_token_id=IMAGE, scale_factor=scale, pad_token_id=PAD)
    return tiny.instantiate(cls, cfg, seed=seed, attn_implementation=attn_implementation)


def processor(kind: str):
    import transformers as tf

    if kind == "idefics3":
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as Images
        proc_cls = tf.Idefics3Processor
    else:
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil as Images
        proc_cls = tiny.image_only(tf.SmolVLMProcessor)
    images = Images(size={"longest_edge": 4 * TILE}, max_image_size={"longest_edge": TILE}, do_image_splitting=True)
    tok = tiny.word_tokenizer({"<pad>": PAD, "<bos>": BOS, "<image>": IMAGE, "<fake_token_around_image>": FAKE,
                               "<global-img>": GLOBAL, "<end_of_utterance>": EOU, **ROW_COL}, pad="<pad>",
                              bos_token="<bos>", image_token="<image>")
    return proc_cls(image_processor=images, tokenizer=tok, image_seq_len=4)


def inputs(prompts, *, seed: int = 0, padding_side: str = "left", kind: str = "idefics3"):
    """spec (H, W) px: resized to a longest edge of 64 px, split into 16-px tiles (row by row) plus
    the global view, 4 tokens each."""
    rows = tiny.per_row(prompts, "image")
    images = [[tiny.image(*it[1], seed) for it in row] for row in rows] if any(rows) else None
    text = [tiny.render(p, lambda it: "<image>") for p in prompts]
    proc = processor(kind)
    if images is None:
        return dict(proc.tokenizer(text, padding=True, padding_side=padding_side, return_tensors="pt"))
    return dict(proc(text=text, images=images, padding=True, padding_side=padding_side, return_tensors="pt"))


def tiles(spec) -> int:
    """Tiles of an (H, W) image: resized so its longest edge is 4 tiles (the released 4 x 364 px),
    cut into whole tiles, plus the global view when there is more than one."""
    h, w = spec
    scale = 4 * TILE / max(h, w)
    n = -(-round(h * scale) // TILE) * -(-round(w * scale) // TILE)
    return n + 1 if n > 1 else 1


def cases() -> list[tiny.TinyCase]:
    out = []
    for kind, released, scale in (("idefics3", IDEFICS3, "2"), ("smolvlm", SMOLVLM, "4")):
        out.append(tiny.TinyCase(
            kind, released, lambda kind=kind, **kw: build(kind, **kw),
            lambda p, kind=kind, **kw: inputs(p, kind=kind, **kw), ((16, 32), (16, 16)),
            lambda spec, what="image": 4 * tiles(spec), (IMAGE,), tiny.text_id,
            "the family's processor (PIL image processor" + ("; its video processor, which needs torchvision, left "
                                                             "out)" if kind == "smolvlm" else ")"),
            keeps=f"pixel shuffle scale_factor {scale}, image splitting into tiles + global view, "
            "<fake_token_around_image> / <row_r_col_c> / <global-img> around every tile, Llama LM",
            notes="spec = image size; each tile its own budget (the test counts per image: tiles x keep)"))
    return out
