"""Tiny random-weight builds of the supported transformers VLMs, and matching inputs.

For tests and the tiny IVS model only: everything is built from configs (no download), in well
under a second, with a fixed seed. The outputs are meaningless; shapes and flow are real.
"""
from __future__ import annotations

import torch

VOCAB = 128
IMAGE, VIDEO, VSTART, VEND = 100, 101, 102, 103  # placeholder token ids
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
KINDS = ("llava", "qwen2_vl", "qwen2_5_vl", "internvl")


def build(kind: str, *, seed: int = 0, attn_implementation: str = "sdpa"):
    """A tiny ``*ForConditionalGeneration`` of ``kind`` (one of `KINDS`), eval mode, float32."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "llava":
        cfg = tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, image_size=32, patch_size=8),
            text_config=tf.LlamaConfig(**TEXT), image_token_id=IMAGE, projector_hidden_act="gelu",
            vision_feature_layer=-1)
        cls = tf.LlavaForConditionalGeneration
    elif kind in ("qwen2_vl", "qwen2_5_vl"):
        common = dict(text_config=dict(TEXT, rope_parameters=MROPE), image_token_id=IMAGE,
                      video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)
        if kind == "qwen2_vl":
            cfg = tf.Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4,
                                                      patch_size=4, spatial_merge_size=2,
                                                      temporal_patch_size=2, in_channels=3), **common)
            cls = tf.Qwen2VLForConditionalGeneration
        else:
            cfg = tf.Qwen2_5_VLConfig(vision_config=dict(depth=1, hidden_size=32, intermediate_size=64,
                                                         num_heads=4, patch_size=4, spatial_merge_size=2,
                                                         temporal_patch_size=2, in_channels=3,
                                                         out_hidden_size=32, window_size=16,
                                                         fullatt_block_indexes=[0]), **common)
            cls = tf.Qwen2_5_VLForConditionalGeneration
    elif kind == "internvl":
        cfg = tf.InternVLConfig(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=4, image_size=[32, 32], patch_size=[8, 8]),
            text_config=dict(model_type="qwen2", **TEXT), image_token_id=IMAGE, downsample_ratio=0.5,
            projector_hidden_act="gelu")
        cls = tf.InternVLForConditionalGeneration
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {KINDS}")
    cfg._attn_implementation = attn_implementation
    return cls(cfg).eval()


def tokens_per_image(kind: str, image=(1, 4, 4)) -> int:
    """Visual tokens of one image: LLaVA 16 (4x4 patches), InternVL 4 per tile, Qwen t*h*w/4."""
    if kind == "llava":
        return 16
    if kind == "internvl":
        return 4 * image[0]  # image = (tiles, ., .)
    t, h, w = image
    return t * h * w // 4


def make_inputs(kind: str, prompts: list[list], *, seed: int = 0, padding_side: str = "left") -> dict:
    """Model inputs for a batch of prompts.

    Each prompt is a list of items: an int (a text token id 3..99), or ("image", spec) /
    ("video", spec). spec: LLaVA ignored (32 px image, 16 tokens); InternVL: number of tiles;
    Qwen: (t, h, w) grid in patches (h, w even; images t = 1).
    Returns the keyword arguments of the model's forward (padded batch, attention_mask).
    """
    g = torch.Generator().manual_seed(seed)
    seqs, pix, pix_v, thw, thw_v, tiles = [], [], [], [], [], []
    for prompt in prompts:
        seq = []
        for it in prompt:
            if isinstance(it, int):
                seq.append(it)
                continue
            what, spec = it
            if kind == "llava":
                seq += [IMAGE] * 16
                pix.append(torch.randn(1, 3, 32, 32, generator=g))
            elif kind == "internvl":
                seq += [VSTART] + [IMAGE] * (4 * spec) + [VEND]
                tiles.append(spec)
                pix.append(torch.randn(spec, 3, 32, 32, generator=g))
            else:
                t, h, w = spec
                n = t * h * w
                tok = IMAGE if what == "image" else VIDEO
                seq += [VSTART] + [tok] * (n // 4) + [VEND]
                (thw if what == "image" else thw_v).append([t, h, w])
                (pix if what == "image" else pix_v).append(torch.randn(n, 3 * 2 * 4 * 4, generator=g))
        seqs.append(seq)
    L = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    for b, s in enumerate(seqs):
        sl = slice(L - len(s), L) if padding_side == "left" else slice(0, len(s))
        ids[b, sl] = torch.tensor(s)
        mask[b, sl] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if pix:
        out["pixel_values"] = torch.cat(pix)
    if kind in ("qwen2_vl", "qwen2_5_vl"):
        out["mm_token_type_ids"] = ((ids == IMAGE).long() + 2 * (ids == VIDEO).long())
        if thw:
            out["image_grid_thw"] = torch.tensor(thw)
        if thw_v:
            out["pixel_values_videos"] = torch.cat(pix_v)
            out["video_grid_thw"] = torch.tensor(thw_v)
    return out
