"""Qwen2-VL and Qwen2.5-VL (``Qwen2VLModel``, ``Qwen2_5_VLModel``), and the shared Qwen-VL grid.

Images and videos are (t, h, w) patch grids merged ``spatial_merge_size``² to one token; their
grids come from ``image_grid_thw`` / ``video_grid_thw`` — or, inside ``generate`` (which drops
those once the vision tower has run), from the M-RoPE (t, h, w) ids the model computed from them.
UniPixel (``PixelQwen2_5_VLForConditionalGeneration``), Seg-Zero and VisionReasoner are Qwen2.5-VL
and are found through the class hierarchy.
"""
from __future__ import annotations

import torch

from evtp.integrations import tiny
from evtp.integrations.grids import grid_from_mrope, runs, scatter_rows, thw_layout
from evtp.integrations.protocol import Family, Modality, TinyCase, register_family


class QwenVLFamily(Family):
    """Shared Qwen-VL logic: image grid (row, col), video grid (frame, row, col), one group per
    image / video; 3-D M-RoPE positions."""

    placeholders = {"image": "image_token_id", "video": "video_token_id"}
    stash_keys = ("image_grid_thw", "video_grid_thw", "position_ids", "mm_encoder_outputs")
    rope_rows = 3

    def merge_size(self, core) -> int:
        return int(core.config.vision_config.spatial_merge_size)

    def items_of_runs(self, mask: torch.Tensor, name: str, stash: dict) -> torch.Tensor | None:
        """(R,) item id of every run of ``mask``; None when every run is one item (Qwen2/2.5-VL)."""
        return None

    def grid(self, core, masks, stash, embeds):
        merge = self.merge_size(core)
        pos = stash.get("position_ids")
        out = []
        for name, key, P in (("image", "image_grid_thw", 2), ("video", "video_grid_thw", 3)):
            m = masks.get(name)
            if m is None or not bool(m.any()):
                continue
            thw = stash.get(key)
            if thw is not None:
                item, frame, row, col = thw_layout(torch.as_tensor(thw, device=m.device), merge)
                if item.numel() != int(m.sum()):
                    raise ValueError(f"{key} describes {item.numel()} {name} tokens but the prompt holds "
                                     f"{int(m.sum())} {name} placeholders")
                coords = torch.stack([frame, row, col], -1)[:, 3 - P:]
                out.append(Modality(m, scatter_rows(m, coords), scatter_rows(m, item, -1), name))
            elif isinstance(pos, torch.Tensor) and pos.dim() == 3 and pos.shape[0] in (3, 4):
                grid, groups = grid_from_mrope(m, pos[-3:].to(m.device), P, self.items_of_runs(m, name, stash))
                out.append(Modality(m, grid, groups, name))
            else:
                raise ValueError(f"the prompt holds {name} tokens but neither {key} nor 3-D M-RoPE "
                                 f"position_ids were passed; pass the {key} returned by the processor "
                                 f"(and mm_token_type_ids)")
        return out


def items_from_encoder_outputs(mask: torch.Tensor, name: str, stash: dict) -> torch.Tensor | None:
    """(R,) item of every run of ``mask`` from the per-item feature counts of ``mm_encoder_outputs``
    (what ``generate`` passes once the vision tower has run); None if they are not there."""
    enc = (stash.get("mm_encoder_outputs") or {}).get(name)
    per_item = getattr(enc, "pooler_output", None)
    if not isinstance(per_item, (list, tuple)):
        return None
    counts = torch.tensor([int(x.shape[0]) for x in per_item], device=mask.device)
    _, _, lengths = runs(mask)
    if int(counts.sum()) != int(lengths.sum()):
        raise ValueError(f"mm_encoder_outputs holds {int(counts.sum())} {name} features but the prompt "
                         f"{int(lengths.sum())} {name} placeholders")
    run_first = torch.cumsum(lengths, 0) - lengths  # index of each run's first token among all
    return torch.searchsorted(torch.cumsum(counts, 0), run_first, right=True)


@register_family("Qwen2VLModel")
class Qwen2VL(QwenVLFamily):
    name = "Qwen2-VL"

    def tiny_cases(self):
        return [qwen_case("qwen2_vl", build_qwen2_vl)]


@register_family("Qwen2_5_VLModel")
class Qwen2_5_VL(QwenVLFamily):
    name = "Qwen2.5-VL (UniPixel, Seg-Zero, VisionReasoner, Sa2VA-Qwen2.5)"

    def tiny_cases(self):
        return [qwen_case("qwen2_5_vl", build_qwen2_5_vl)]


def qwen_case(kind, build, *, frames_split: bool = False, notes: str = "") -> TinyCase:
    return TinyCase(kind, build, lambda prompts, **kw: qwen_inputs(prompts, frames_split=frames_split, **kw),
                    ((1, 4, 4), (1, 4, 6)), video_spec=(2, 4, 4),
                    selectable=lambda thw: thw[0] * thw[1] * thw[2] // 4, placeholder_ids=(tiny.IMAGE, tiny.VIDEO),
                    rope_rows=3, notes=notes)


def _common(**extra):
    return dict(text_config=dict(tiny.TEXT, rope_parameters=tiny.MROPE, **extra), image_token_id=tiny.IMAGE,
                video_token_id=tiny.VIDEO, vision_start_token_id=tiny.VSTART, vision_end_token_id=tiny.VEND)


def build_qwen2_vl(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    cfg = tf.Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4, patch_size=4,
                                              spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
                           **_common())
    return tiny.instantiate(tf.Qwen2VLForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def build_qwen2_5_vl(*, seed: int = 0, attn_implementation: str = "sdpa", cls=None):
    import transformers as tf

    cfg = tf.Qwen2_5_VLConfig(vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4,
                                                 patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                                                 in_channels=3, out_hidden_size=32, window_size=16,
                                                 fullatt_block_indexes=[0]), **_common())
    return tiny.instantiate(cls or tf.Qwen2_5_VLForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


TIMESTAMP = 50  # a text token standing for Qwen3-VL's "<t seconds>" before every video frame


def qwen_inputs(prompts, *, seed: int = 0, padding_side: str = "left", frames_split: bool = False):
    """spec = (t, h, w) grid in 4-px patches (h, w even; images t = 1); t*h*w/4 tokens.

    ``frames_split`` (Qwen3-VL, Qwen3.5): every temporal patch of a video is its own run of
    tokens after a timestamp token, as Qwen3-VL's processor lays videos out.
    """

    def layout(what, t, h, w):
        if what == "image":
            return [tiny.VSTART] + [tiny.IMAGE] * (t * h * w // 4) + [tiny.VEND]
        if frames_split:
            return ([TIMESTAMP, tiny.VSTART] + [tiny.VIDEO] * (h * w // 4) + [tiny.VEND]) * t
        return [tiny.VSTART] + [tiny.VIDEO] * (t * h * w // 4) + [tiny.VEND]

    (ids, mask), media = thw_inputs(prompts, layout, seed=seed, padding_side=padding_side)
    return {"input_ids": ids, "attention_mask": mask,
            "mm_token_type_ids": (ids == tiny.IMAGE).long() + 2 * (ids == tiny.VIDEO).long(), **media}


def thw_inputs(prompts, layout, *, seed: int = 0, padding_side: str = "left", extra=None):
    """(`tiny.expand_prompts` of the batch, media inputs) for specs that are (t, h, w) grids in
    4-px patches: ``layout(what, t, h, w)`` ("image" / "video") gives an item's token ids; its
    pixels are (t*h*w, 3*2*4*4) random patches, drawn in prompt order. The media inputs are
    ``pixel_values`` + ``image_grid_thw`` (G, 3) and ``pixel_values_videos`` + ``video_grid_thw``,
    each pair present when the batch holds that modality; ``extra`` as in `tiny.expand_prompts`."""
    g = torch.Generator().manual_seed(seed)
    thw, pix = {"image": [], "video": []}, {"image": [], "video": []}

    def expand(item):
        what, (t, h, w) = item
        what = "image" if what == "image" else "video"
        thw[what].append([t, h, w])
        pix[what].append(torch.randn(t * h * w, 3 * 2 * 4 * 4, generator=g))
        return layout(what, t, h, w)

    padded = tiny.expand_prompts(prompts, expand, padding_side, extra)
    media = {}
    for what, pixels, grid in (("image", "pixel_values", "image_grid_thw"),
                               ("video", "pixel_values_videos", "video_grid_thw")):
        if thw[what]:
            media[pixels] = torch.cat(pix[what])
            media[grid] = torch.tensor(thw[what])
    return padded, media
