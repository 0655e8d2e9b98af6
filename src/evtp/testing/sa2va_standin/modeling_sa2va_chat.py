"""Stand-in of Sa2VA's remote-code ``Sa2VAChatModel`` (``modeling_sa2va_chat.py`` of the released
``ByteDance/Sa2VA-*`` InternVL checkpoints), written from its public structure; test support only.

Same attribute names, call order and user API as the released class:

* ``vision_model`` -> ``pixel_shuffle`` (0.5) -> ``mlp1``: ``num_image_token`` tokens per tile;
  ``language_model`` (``Qwen2ForCausalLM``); ``text_hidden_fcs`` (Linear-ReLU-Linear-Dropout);
  ``grounding_encoder`` (SAM2);
* ``preparing_for_generation(tokenizer, max_new_tokens, torch_dtype)`` reads ``<IMG_CONTEXT>`` and
  ``[SEG]`` from the tokenizer; ``predict_forward(image=PIL | video=[PIL], text="<image>...",
  tokenizer=...)`` -> ``{"prediction": str, "prediction_masks": [(T, H, W) bool array per [SEG]]}``;
* images: dynamic 1-``max_dynamic_patch`` tiles + thumbnail; videos: the first 5 frames to the LLM,
  every frame to SAM2; ``<img>`` + ``<IMG_CONTEXT>`` x tokens + ``</img>`` per image / frame inside the
  chat template; ``generate`` scatters the visual features over the ``<IMG_CONTEXT>`` embeddings and
  calls ``language_model.generate(inputs_embeds=..., output_hidden_states=True,
  return_dict_in_generate=True)``; ``[SEG]`` states are counted back from the end of the generated
  hidden states, projected, and prompt SAM2 on the LLM's frames; SAM2 propagates to the rest.

Where it differs (said so in docs/evaluation.md): transformers' InternViT (``InternVLVisionModel``)
and SAM2 (``Sam2VideoModel``, language embedding joined to the sparse prompts by
`evtp.models.segmentation.sam2_video_decode`) instead of Sa2VA's own ports; PIL preprocessing
instead of torchvision; the device of the weights instead of ``.cuda()``; the generation config
starts from the checkpoint's ``generation_config.json`` (so a test checkpoint can steer greedy
decoding) where the released code builds a fresh one.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from transformers import (GenerationConfig, InternVLVisionModel, PreTrainedModel, Qwen2ForCausalLM,
                          Sam2VideoModel)

from .configuration_sa2va_chat import Sa2VAChatConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEMPLATES = {"qwen_chat": {"INSTRUCTION": "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
                           "STOP_WORDS": ["<|im_end|>", "<|endoftext|>"]}}
LLM_FRAMES = 5


def _normalised(images, size: int) -> torch.Tensor:
    """(N, 3, size, size) ImageNet-normalised float32 from PIL images (bicubic square resize)."""
    from PIL import Image

    rows = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _tiles(image, size: int, min_num: int, max_num: int, thumbnail: bool):
    """InternVL's dynamic tiling: the (cols, rows) grid with cols * rows in [min_num, max_num] whose
    aspect ratio is closest to the image's (ties: the larger grid when the image has the pixels),
    the resized image cut into size x size tiles, plus a thumbnail when there is more than one."""
    w, h = image.size
    grids = sorted({(c, r) for n in range(min_num, max_num + 1) for c in range(1, n + 1) for r in range(1, n + 1)
                    if min_num <= c * r <= max_num}, key=lambda g: g[0] * g[1])
    best, best_diff = (1, 1), float("inf")
    for c, r in grids:
        diff = abs(w / h - c / r)
        if diff < best_diff:
            best, best_diff = (c, r), diff
        elif diff == best_diff and w * h > 0.5 * size * size * c * r:
            best = (c, r)
    cols, rows = best
    resized = image.resize((size * cols, size * rows))
    tiles = [resized.crop((i % cols * size, i // cols * size, (i % cols + 1) * size, (i // cols + 1) * size))
             for i in range(cols * rows)]
    if thumbnail and len(tiles) > 1:
        tiles.append(image.resize((size, size)))
    return tiles


class Sa2VAChatModel(PreTrainedModel):
    config_class = Sa2VAChatConfig
    main_input_name = "pixel_values"
    base_model_prefix = "language_model"
    _no_split_modules = ["InternVLVisionLayer", "Qwen2DecoderLayer"]
    _supports_sdpa = True

    def __init__(self, config: Sa2VAChatConfig):
        super().__init__(config)
        vc = config.vision_config
        image_size = config.force_image_size or vc.image_size[0]
        self.patch_size = vc.patch_size[0]
        self.downsample_ratio = config.downsample_ratio
        self.num_image_token = int((image_size // self.patch_size) ** 2 * config.downsample_ratio ** 2)
        self.template = TEMPLATES[config.template.replace("-", "_")]
        self.vision_model = InternVLVisionModel(vc)
        self.language_model = Qwen2ForCausalLM(config.llm_config)
        c = vc.hidden_size * int(1 / config.downsample_ratio) ** 2
        d = config.llm_config.hidden_size
        self.mlp1 = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, d), nn.GELU(), nn.Linear(d, d))
        self.grounding_encoder = Sam2VideoModel(config.grounding_config)
        sam_dim = config.grounding_config.mask_decoder_config.hidden_size
        self.text_hidden_fcs = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, sam_dim),
                                             nn.Dropout(0.0))
        self.img_context_token_id = None
        self.init_prediction_config = False
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def pixel_shuffle(self, x, scale_factor: float = 0.5):
        n, w, h, c = x.shape
        x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
        x = x.permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
        return x.permute(0, 2, 1, 3).contiguous()

    def extract_feature(self, pixel_values):
        vit = self.vision_model(pixel_values=pixel_values).last_hidden_state[:, 1:]  # drop CLS
        side = int(vit.shape[1] ** 0.5)
        vit = self.pixel_shuffle(vit.reshape(vit.shape[0], side, side, -1), self.downsample_ratio)
        return self.mlp1(vit.reshape(vit.shape[0], -1, vit.shape[-1]))

    @torch.no_grad()
    def generate(self, pixel_values=None, input_ids=None, attention_mask=None, **generate_kwargs):
        input_embeds = self.language_model.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            vit_embeds = self.extract_feature(pixel_values.to(self.dtype))
            B, N, C = input_embeds.shape
            input_embeds = input_embeds.reshape(B * N, C)
            selected = input_ids.reshape(B * N) == self.img_context_token_id
            input_embeds[selected] = vit_embeds.reshape(-1, C).to(input_embeds.dtype)
            input_embeds = input_embeds.reshape(B, N, C)
        return self.language_model.generate(inputs_embeds=input_embeds, attention_mask=attention_mask,
                                            **generate_kwargs)

    def preparing_for_generation(self, tokenizer, max_new_tokens: int = 2048, torch_dtype=torch.bfloat16):
        self.tokenizer = tokenizer
        base = getattr(self, "generation_config", None)
        if base is None:  # transformers attaches generation_config.json only to classes it deems generative
            base = GenerationConfig.from_pretrained(self.config._name_or_path)
        self.gen_config = copy.deepcopy(base)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.gen_config.update(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=pad)
        self.torch_dtype = torch_dtype
        self.image_size = self.config.force_image_size or self.config.vision_config.image_size[0]
        self.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        self.seg_token_idx = tokenizer.convert_tokens_to_ids("[SEG]")
        self.init_prediction_config = True

    def _grounding_pixels(self, frames) -> torch.Tensor:
        size = self.config.grounding_config.image_size
        return _normalised(frames, size).to(device=self.device, dtype=self.torch_dtype)

    @torch.no_grad()
    def predict_forward(self, image=None, video=None, text=None, past_text="", mask_prompts=None,
                        tokenizer=None, processor=None):
        if not self.init_prediction_config:
            self.preparing_for_generation(tokenizer=tokenizer)
        cfg = self.config
        if video is not None:
            frames = list(video)
            pixel_values = _normalised(frames[:LLM_FRAMES], self.image_size)
            tokens_per_image, num_images = self.num_image_token, len(pixel_values)
        else:
            frames = [image]
            tiles = _tiles(image, self.image_size, cfg.min_dynamic_patch, cfg.max_dynamic_patch, cfg.use_thumbnail)
            pixel_values = _normalised(tiles, self.image_size)
            tokens_per_image, num_images = len(tiles) * self.num_image_token, 1
        image_str = ("<img>" + "<IMG_CONTEXT>" * tokens_per_image + "</img>\n") * num_images
        prompt = past_text + self.template["INSTRUCTION"].format(input=text.replace("<image>", image_str.strip()))
        ids = torch.tensor([self.tokenizer.encode(prompt)], device=self.device)
        out = self.generate(pixel_values=pixel_values.to(device=self.device, dtype=self.torch_dtype), input_ids=ids,
                            attention_mask=torch.ones_like(ids, dtype=torch.bool), generation_config=self.gen_config,
                            output_hidden_states=True, return_dict_in_generate=True)
        prediction = self.tokenizer.decode(out.sequences[0], skip_special_tokens=False).strip()
        hidden = torch.cat([step[-1][0] for step in out.hidden_states], 0)
        seg = get_seg_hidden_states(hidden, out.sequences[0][:-1], self.seg_token_idx)
        masks = []
        if len(seg):
            from evtp.models.segmentation import sam2_video_decode

            w, h = frames[0].size
            g_pixels = self._grounding_pixels(frames)
            for state in self.text_hidden_fcs(seg):
                logits = sam2_video_decode(self.grounding_encoder, g_pixels, state, range(num_images), (h, w))
                masks.append((logits > 0).cpu().numpy())
        return {"prediction": prediction, "prediction_masks": masks}


def get_seg_hidden_states(hidden_states, output_ids, seg_id):
    """Hidden states of the ``[SEG]`` tokens among the last ``len(output_ids)`` positions."""
    seg_mask = output_ids == seg_id
    if len(seg_mask) == 0:
        return hidden_states[0:0]
    return hidden_states[-len(seg_mask):][seg_mask]
