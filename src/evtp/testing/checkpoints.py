"""Tiny random checkpoints written in the released layouts, for the IVS pipelines' tests.

Each writer saves a folder a user would download — ``config.json``, ``model.safetensors``,
``generation_config.json``, tokenizer files (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) and processor files — so `evtp.models.sa2va` / `evtp.models.seg_zero`
load it through the same ``from_pretrained`` calls as a hub download.

* `write_sa2va_internvl`: Sa2VA-InternVL (remote code: ``configuration_sa2va_chat.py`` and
  ``modeling_sa2va_chat.py`` are the stand-in of `evtp.testing.sa2va_standin`, named in the
  config's ``auto_map`` like the released ``ByteDance/Sa2VA-*``), Qwen2 language model, the
  released values that change the code path kept (pixel shuffle 0.5, ``qwen_chat`` template,
  dynamic tiles 1-12 + thumbnail, ``<img>`` / ``<IMG_CONTEXT>`` / ``</img>`` / ``[SEG]`` tokens).
* `write_qwen2_5_vl`: a Qwen2.5-VL (14-px patches, 2x2 merge, M-RoPE) with a chat template and a
  Qwen2-VL image processor, as Seg-Zero / VisionReasoner checkpoints are.
* `write_sam2`: a transformers SAM2 checkpoint (``model_type`` ``sam2_video``, as
  ``facebook/sam2.1-hiera-*`` are), loadable as ``Sam2Model`` and ``Sam2VideoModel``.

Random weights answer random text; ``answer=`` writes a ``sequence_bias`` into
``generation_config.json`` that makes greedy decoding emit that answer (whitespace-separated
words of the tiny vocabulary) and stop — a test device, so the answer parsers and the mask paths
run on every sample. ``answer=None`` leaves decoding to the random weights.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
SA2VA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "[SEG]",
                  "<p>", "</p>", "<vp>", "</vp>"]
WORDS = ["please", "segment", "find", "the", "a", "in", "this", "image", "with", "bbox", "and", "points",
         "sure", "it", "is", "red", "box", "object", "<think>", "</think>", "<answer>", "</answer>", "."]
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

SEG_ZERO_ANSWER = ('<think> the red box </think> <answer> {"bbox": [20,30,60,70], "points_1": [35,45], '
                   '"points_2": [45,55]} </answer>')
VISIONREASONER_ANSWER = ('<think> the red box </think> <answer> [{"bbox_2d": [20,30,60,70], "point_2d": [40,50]}] '
                         '</answer>')
SA2VA_ANSWER = "sure it is [SEG] ."


def word_tokenizer(specials: list[str], words: list[str], *, chat_template: str | None = None):
    """A fast word-level tokenizer (whitespace split; unknown words -> "a"), specials as added tokens,
    ``<|im_end|>`` as end of sequence, ``<|endoftext|>`` as padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {}
    for w in specials + words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in ("<|im_end|>",
                                                                                          "<|endoftext|>")]})
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def steering_bias(token_ids: list[int], eos_id: int, step: float = 50.0) -> list:
    """``sequence_bias`` (generation_config.json form) under which greedy decoding emits
    ``token_ids`` then ``eos_id``: the bias of the i-th token, given the i-1 before it, is i * step."""
    seq = list(token_ids) + [eos_id]
    return [[seq[: i + 1], step * (i + 1)] for i in range(len(seq))]


def _save_generation_config(out: Path, tok, answer: str | None, **base) -> None:
    from transformers import GenerationConfig

    if answer is not None:
        ids = tok.convert_tokens_to_ids(answer.split())
        base["sequence_bias"] = steering_bias(ids, tok.eos_token_id)
    GenerationConfig(bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     **base).save_pretrained(out)


def steer(checkpoint: str | Path, answer: str | None) -> Path:
    """Rewrite a written checkpoint's ``generation_config.json`` so greedy decoding answers
    ``answer`` (words of its vocabulary; None: the random weights decide)."""
    from transformers import AutoTokenizer

    checkpoint = Path(checkpoint)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    unknown = [w for w in (answer or "").split() if w not in tok.get_vocab()]
    if unknown:
        raise ValueError(f"answer words {unknown} are not in the vocabulary of {checkpoint}")
    _save_generation_config(checkpoint, tok, answer)
    return checkpoint


def _answer_words(*answers) -> list[str]:
    return [w for a in answers if a for w in a.split()]


def sam2_config(image_size: int = 128) -> dict:
    """A tiny Sam2VideoConfig as a dict (hidden 128; constraints in environment.md §4.2)."""
    S, D = image_size, 128
    return dict(
        image_size=S,
        vision_config=dict(
            backbone_config=dict(model_type="sam2_hiera_det_model", image_size=[S, S], hidden_size=16,
                                 blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                 num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 2],
                                 global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4]),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[S // 4, S // 4], [S // 8, S // 8], [S // 16, S // 16]], fpn_hidden_size=D),
        prompt_encoder_config=dict(hidden_size=D, image_size=S, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=D, mlp_dim=256, num_attention_heads=2, iou_head_hidden_dim=64),
        memory_attention_hidden_size=D, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=256,
        memory_attention_rope_feat_sizes=[S // 16, S // 16], memory_encoder_hidden_size=D,
        memory_encoder_output_channels=64, mask_downsampler_embed_dim=D, memory_fuser_embed_dim=D,
        memory_fuser_intermediate_dim=256, memory_fuser_num_layers=1)


def write_sam2(out: str | Path, *, seed: int = 0, image_size: int = 128) -> Path:
    """A tiny random SAM2 in transformers' layout (``Sam2VideoModel``, like ``facebook/sam2.1-hiera-*``)."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel
    from transformers.models.sam2_video.configuration_sam2_video import (Sam2VideoMaskDecoderConfig,
                                                                         Sam2VideoPromptEncoderConfig)

    out = Path(out)
    cfg = sam2_config(image_size)
    # config objects, not dicts: transformers 5.19 (vLLM 0.32's) builds a dict mask_decoder_config as
    # a prompt-encoder config
    cfg["mask_decoder_config"] = Sam2VideoMaskDecoderConfig(**cfg["mask_decoder_config"])
    cfg["prompt_encoder_config"] = Sam2VideoPromptEncoderConfig(**cfg["prompt_encoder_config"])
    torch.manual_seed(seed)
    Sam2VideoModel(Sam2VideoConfig(**cfg)).eval().save_pretrained(out)
    return out


def write_sa2va_internvl(out: str | Path, *, answer: str | None = SA2VA_ANSWER, seed: int = 0,
                         image_size: int = 56, patch_size: int = 7, sam_image_size: int = 128) -> Path:
    """A tiny Sa2VA-InternVL checkpoint (remote code, the stand-in): InternViT 1 layer at ``image_size``
    px (``(image_size / patch_size / 2)^2`` tokens per tile), Qwen2 LM of 2 layers, SAM2 stand-in."""
    import torch

    from evtp.testing.sa2va_standin import configuration_sa2va_chat as conf_mod
    from evtp.testing.sa2va_standin import modeling_sa2va_chat as model_mod

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = word_tokenizer(SA2VA_SPECIALS, WORDS + _answer_words(answer))
    n = len(tok)
    config = conf_mod.Sa2VAChatConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=[image_size, image_size], patch_size=[patch_size, patch_size]),
        llm_config=dict(architectures=["Qwen2ForCausalLM"], vocab_size=n, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=4096, tie_word_embeddings=False,
                        bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        grounding_config=sam2_config(sam_image_size), downsample_ratio=0.5, template="qwen_chat",
        force_image_size=image_size, max_dynamic_patch=12, use_thumbnail=True,
        architectures=["Sa2VAChatModel"],
        auto_map={"AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
                  "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
                  "AutoModelForCausalLM": "modeling_sa2va_chat.Sa2VAChatModel"})
    torch.manual_seed(seed)
    model = model_mod.Sa2VAChatModel(config).eval()
    model.save_pretrained(out)
    for mod in (conf_mod, model_mod):
        shutil.copy(mod.__file__, out / Path(mod.__file__).name)
    tok.save_pretrained(out)
    _save_generation_config(out, tok, answer)
    return out


def write_qwen2_5_vl(out: str | Path, *, answer: str | None = VISIONREASONER_ANSWER, seed: int = 0,
                     hidden: int = 64, layers: int = 2) -> Path:
    """A tiny random Qwen2.5-VL in the released layout (config, safetensors, tokenizer with chat
    template, ``preprocessor_config.json`` of a Qwen2-VL image processor, generation config)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = word_tokenizer(QWEN_SPECIALS, WORDS + _answer_words(SEG_ZERO_ANSWER, VISIONREASONER_ANSWER, answer),
                         chat_template=QWEN_CHAT_TEMPLATE)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    heads = hidden // 32  # head_dim 32: a size vLLM's CPU attention supports
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), vocab_size=len(tok),
                         max_position_embeddings=8192, rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                                                        "rope_theta": 1000000.0}, **special),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1],
                           window_size=112, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False, **special)
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(cfg).eval().save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=448 * 448).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)
    _save_generation_config(out, tok, answer)
    return out


def write_not_a_checkpoint(out: str | Path) -> Path:
    """A folder with weights but a config.json of an unsupported architecture (bad-input tests)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    return out
