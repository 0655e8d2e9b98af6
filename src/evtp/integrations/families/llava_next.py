"""LLaVA-NeXT and LLaVA-OneVision (``LlavaNextModel``, ``LlavaOnevisionModel``): any-resolution images.

An image's features are packed by the model as: the base image (``side²`` tokens, ``side =
image_size / patch_size``), then the un-padded high-resolution grid row by row, each row closed by
the learned ``image_newline`` vector (OneVision may first shrink that grid by bilinear
interpolation). Everything sits at the image placeholder id. The grid is read back from the
packed sequence itself: the newline rows are the positions whose embedding equals
``model.image_newline`` exactly (always kept); a high-resolution token's row is the number of
newlines before it in its image, its column the count since the last one (with either
``vision_feature_select_strategy``: every tile is ``side²`` tokens). Grid (part, row, col):
part 0 = base image, 1 = high resolution; one budget per image. Every run of placeholders is one
image (transformers' processors put text between images).

OneVision videos (``video_token_id``): every frame pooled to ``ceil(side / 2)²`` tokens, one
newline after the last frame; grid (frame, row, col), one budget per video.
"""
from __future__ import annotations

import math

import torch

from evtp.integrations.grids import runs
from evtp.integrations.protocol import Family, Modality


def _newlines(core, mask: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    newline = getattr(core, "image_newline", None)
    if newline is None:
        return torch.zeros_like(mask)
    return mask & (embeds == newline.to(embeds.dtype).to(embeds.device)).all(-1)


def anyres_grid(mask: torch.Tensor, newline: torch.Tensor, side: int):
    """(part, row, col) of packed any-resolution image tokens (see the module docstring).

    Args:
        mask: (B, L) bool image tokens (newline positions included); newline: (B, L) bool.
        side: base image side in tokens.
    Returns:
        selectable mask (B, L) (newlines left out), grid (B, L, 3) long, groups (B, L) long.
    Raises:
        ValueError when an image run is shorter than its base image.
    """
    run, local, lengths = runs(mask)
    per = side * side
    if bool((lengths < per).any()):
        raise ValueError(f"an image-token run of {int(lengths[lengths < per][0])} tokens is shorter than the "
                         f"{side}x{side} = {per}-token base image; the prompt's placeholders do not match the grid")
    L = mask.shape[1]
    ar = torch.arange(L, device=mask.device).expand_as(mask)
    base = mask & (local < per)
    hi = mask & ~base & ~newline
    start = mask & (local == 0)
    c = torch.cumsum(newline.long(), 1)
    c_start = torch.cummax(torch.where(start, c - newline.long(), torch.zeros_like(c)), 1).values
    row_hi = c - c_start
    breaks = newline | (mask & (local == per - 1))  # the base image's last token, then every newline
    last = torch.cummax(torch.where(breaks, ar, torch.full_like(ar, -1)), 1).values
    col_hi = ar - last - 1
    part = hi.long()
    row = torch.where(base, local // side, row_hi)
    col = torch.where(base, local % side, col_hi)
    sel = base | hi
    grid = torch.stack([part, row, col], -1) * sel.unsqueeze(-1)
    return sel, grid, torch.where(sel, run, torch.full_like(run, -1))


class AnyResFamily(Family):
    placeholders = {"image": "image_token_id"}

    def side(self, core) -> int:
        vc = core.config.vision_config
        return int(vc.image_size) // int(vc.patch_size)

    def grid(self, core, masks, stash, embeds):
        """Both select strategies give ``side²`` tokens per tile: "default" drops a CLIP tower's CLS
        token, "full" keeps every token of a tower without one (SigLIP, every released OneVision);
        the model's own packing views each tile as ``side x side``."""
        out = []
        m = masks.get("image")
        if m is not None and bool(m.any()):
            sel, grid, groups = anyres_grid(m, _newlines(core, m, embeds), self.side(core))
            out.append(Modality(sel, grid, groups, "image"))
        v = masks.get("video")
        if v is not None and bool(v.any()):
            out.append(self.video_grid(core, v, embeds))
        return out

    def video_grid(self, core, v, embeds):
        raise ValueError(f"{self.name}: video tokens are not supported")


class LlavaNext(AnyResFamily):
    name = "LLaVA-NeXT"
    core_names = ("LlavaNextModel",)


class LlavaOnevision(AnyResFamily):
    name = "LLaVA-OneVision"
    core_names = ("LlavaOnevisionModel",)
    placeholders = {"image": "image_token_id", "video": "video_token_id"}

    def video_grid(self, core, v, embeds):
        side = math.ceil(self.side(core) / 2)
        per = side * side
        nl = _newlines(core, v, embeds)
        run, local, lengths = runs(v)
        body = lengths - 1  # the newline after the last frame
        if bool((body % per != 0).any()):
            raise ValueError(f"a video-token run of {int(lengths[body % per != 0][0])} tokens is not whole "
                             f"{side}x{side}-token frames plus one newline")
        sel = v & ~nl
        rem = local % per
        grid = torch.stack([local // per, rem // side, rem % side], -1) * sel.unsqueeze(-1)
        return Modality(sel, grid, torch.where(sel, run, torch.full_like(run, -1)), "video")
