"""Tiny random Qwen2.5-VL / Qwen3-VL checkpoints saved like real ones (config, safetensors,
tokenizer, image processor), for vLLM to load offline.

"Sharp" weights (init std 0.1, rope_theta 100) make greedy outputs depend on positions and on
which visual tokens are present; with transformers' default std 0.02 a 2-layer random model emits
the same tokens whatever the image, and the equality tests could not fail.
"""
from __future__ import annotations

import json
import os

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
WORDS = ["user", "assistant", "system", "segment", "the", "red", "circle", "describe", "image", "a",
         "of", "what", "is", "in", "this", "picture", "video", "and"] + \
        [chr(c) for c in range(97, 123)] + [f"w{i}" for i in range(60)]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

VOCAB_SIZE = 128
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def prompt(*parts: str) -> str:
    """A chat prompt in the tiny tokenizer's words, media placeholders where asked."""
    return "<|im_start|>user " + " ".join(parts) + " <|im_end|> <|im_start|>assistant "


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    fast.chat_template = CHAT_TEMPLATE
    return fast, vocab


def save_qwen2_5_vl(out: str, hidden: int = 128, layers: int = 2, vision_depth: int = 2,
                    vision_hidden: int = 64, seed: int = 0, init_std: float = 0.1,
                    rope_theta: float = 100.0) -> str:
    """A random Qwen2.5-VL (14-px patches, 2x2 merge, tokens_per_second 2) saved to ``out``."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    os.makedirs(out, exist_ok=True)
    tok, vocab = make_tokenizer()
    ids = {s: vocab[s] for s in SPECIALS}
    heads = hidden // 32
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                   pad_token_id=ids["<|endoftext|>"])
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         vocab_size=VOCAB_SIZE, max_position_embeddings=8192, initializer_range=init_std,
                         rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                          "rope_theta": rope_theta}, **special),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                           num_heads=max(1, vision_hidden // 32), out_hidden_size=hidden, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[vision_depth - 1],
                           window_size=112, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **special)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=448 * 448).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def save_qwen3_vl(out: str, seed: int = 0, init_std: float = 0.1, rope_theta: float = 100.0) -> str:
    """A random Qwen3-VL (16-px patches, 2x2 merge, one deepstack level, interleaved M-RoPE)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    os.makedirs(out, exist_ok=True)
    tok, vocab = make_tokenizer()
    ids = {s: vocab[s] for s in SPECIALS}
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                   pad_token_id=ids["<|endoftext|>"])
    cfg = Qwen3VLConfig(
        text_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=32, vocab_size=VOCAB_SIZE, max_position_embeddings=8192,
                         initializer_range=init_std,
                         rope_parameters={"rope_type": "default", "mrope_section": [6, 5, 5],
                                          "mrope_interleaved": True, "rope_theta": rope_theta}, **special),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=64, deepstack_visual_indexes=[0],
                           initializer_range=init_std),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(cfg)
    model.save_pretrained(out)
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                             image_std=[0.5] * 3, min_pixels=64 * 64, max_pixels=512 * 512).save_pretrained(out)
    tok.save_pretrained(out)
    with open(os.path.join(out, "processor_config.json"), "w") as f:
        json.dump({"processor_class": "Qwen3VLProcessor"}, f)
    return out


def image(seed: int, width: int = 224, height: int = 224):
    """A random RGB PIL image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


def video(seed: int, frames: int = 8, width: int = 112, height: int = 112, fps: float = 2.0):
    """A random (T, H, W, 3) uint8 clip with slowly changing frames, and its vLLM metadata."""
    rng = np.random.default_rng(seed)
    base = rng.random((height, width, 3))
    clip = np.stack([np.clip(base + 0.1 * k * rng.random((height, width, 3)), 0, 1) for k in range(frames)])
    clip = (clip * 255).astype("uint8")
    meta = {"fps": fps, "duration": frames / fps, "total_num_frames": frames,
            "frames_indices": list(range(frames)), "video_backend": "opencv", "do_sample_frames": False}
    return clip, meta
