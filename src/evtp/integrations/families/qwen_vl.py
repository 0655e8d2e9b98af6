"""Qwen2-VL and Qwen2.5-VL (``Qwen2VLModel``, ``Qwen2_5_VLModel``), and the shared Qwen-VL grid.

Images and videos are (t, h, w) patch grids merged ``spatial_merge_size``² to one token; their
grids come from ``image_grid_thw`` / ``video_grid_thw`` — or, inside ``generate`` (which drops
those once the vision tower has run), from the M-RoPE (t, h, w) ids the model computed from them.
UniPixel (``PixelQwen2_5_VLForConditionalGeneration``), Seg-Zero and VisionReasoner are Qwen2.5-VL
and are found through the class hierarchy.
"""
from __future__ import annotations

import torch

from evtp.integrations.grids import grid_from_mrope, runs, scatter_rows, thw_layout
from evtp.integrations.protocol import Family, Modality


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


class Qwen2VL(QwenVLFamily):
    name = "Qwen2-VL"
    core_names = ("Qwen2VLModel",)


class Qwen2_5_VL(QwenVLFamily):
    name = "Qwen2.5-VL (UniPixel, Seg-Zero, VisionReasoner, Sa2VA-Qwen2.5)"
    core_names = ("Qwen2_5_VLModel",)
