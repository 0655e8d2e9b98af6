"""Mistral 3 / Pixtral (``Mistral3Model``): every image is rows of placeholders, each row closed by
``[IMG_BREAK]`` and the image by ``[IMG_END]`` (text tokens, never pruned); so every row is a run.

The runs are grouped into images by the per-image token counts — ``image_sizes // (patch_size *
spatial_merge_size)`` on a forward call, the per-image features of ``mm_encoder_outputs`` inside
``generate`` (which drops ``image_sizes``). Grid (row, col) = (run index inside the image, index
inside the run); one budget per image.
"""
from __future__ import annotations

import torch

from evtp.integrations import tiny
from evtp.integrations.grids import runs, scatter_rows
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family

BREAK, END = 105, 106  # [IMG_BREAK], [IMG_END] in the tiny vocabulary


@register_family("Mistral3Model")
class Mistral3(Family):
    name = "Mistral3 (Pixtral)"
    placeholders = {"image": "image_token_id"}
    stash_keys = ("image_sizes", "mm_encoder_outputs")

    def image_counts(self, core, stash, device) -> torch.Tensor:
        sizes = stash.get("image_sizes")
        if sizes is not None:
            step = int(core.vision_tower.patch_size) * int(core.config.spatial_merge_size)
            return (torch.as_tensor(sizes, device=device) // step).prod(-1).long()
        enc = (stash.get("mm_encoder_outputs") or {}).get("image")
        per_image = getattr(enc, "pooler_output", None)
        if isinstance(per_image, (list, tuple)):
            return torch.tensor([int(x.shape[0]) for x in per_image], device=device)
        raise ValueError("the prompt holds Mistral3 image tokens but neither image_sizes nor per-image "
                         "mm_encoder_outputs were passed; pass the image_sizes returned by the processor")

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        counts = self.image_counts(core, stash, m.device)
        run, local, lengths = runs(m)
        if int(counts.sum()) != int(lengths.sum()):
            raise ValueError(f"image_sizes describe {int(counts.sum())} image tokens but the prompt holds "
                             f"{int(lengths.sum())} image placeholders")
        run_first = torch.cumsum(lengths, 0) - lengths
        image = torch.searchsorted(torch.cumsum(counts, 0), run_first, right=True)  # (R,)
        first_run = torch.full_like(counts, lengths.numel()).scatter_reduce(
            0, image, torch.arange(lengths.numel(), device=m.device), reduce="amin")
        row_of_run = torch.arange(lengths.numel(), device=m.device) - first_run[image]
        sel = run[m]
        coords = torch.stack([row_of_run[sel], local[m]], -1)
        return [Modality(m, scatter_rows(m, coords), scatter_rows(m, image[sel], -1))]

    def tiny_cases(self):
        return [TinyCase("mistral3", build_tiny, tiny_inputs, ((32, 32), (32, 64)),
                         selectable=lambda hw: (hw[0] // 8) * (hw[1] // 8), placeholder_ids=(tiny.IMAGE,))]


def build_tiny(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    vision = tf.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                    image_size=64, patch_size=4, head_dim=8)
    text = tf.MistralConfig(**dict(tiny.TEXT, head_dim=8))
    cfg = tf.Mistral3Config(vision_config=vision, text_config=text, image_token_index=tiny.IMAGE,
                            spatial_merge_size=2)
    return tiny.instantiate(tf.Mistral3ForConditionalGeneration, cfg, seed=seed, attn_implementation=attn_implementation)


def tiny_inputs(prompts, *, seed: int = 0, padding_side: str = "left"):
    """spec (H, W) px (multiples of 8; 4-px patches merged 2 x 2): H/8 rows of W/8 tokens, each row
    closed by [IMG_BREAK], the last by [IMG_END]; images padded to the largest size."""
    g = torch.Generator().manual_seed(seed)
    pix, sizes = [], []

    def expand(item):
        h, w = item[1]
        pix.append(torch.randn(3, h, w, generator=g))
        sizes.append([h, w])
        seq = []
        for r in range(h // 8):
            seq += [tiny.IMAGE] * (w // 8) + [END if r == h // 8 - 1 else BREAK]
        return seq

    ids, mask = tiny.expand_prompts(prompts, expand, padding_side)
    out = {"input_ids": ids, "attention_mask": mask}
    if pix:
        H, W = max(p.shape[1] for p in pix), max(p.shape[2] for p in pix)
        batch = torch.zeros(len(pix), 3, H, W)
        for i, p in enumerate(pix):
            batch[i, :, :p.shape[1], :p.shape[2]] = p
        out["pixel_values"] = batch
        out["image_sizes"] = torch.tensor(sizes)
    return out
