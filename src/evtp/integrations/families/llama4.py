"""Llama 4 (``Llama4ForConditionalGeneration``: Scout, Maverick): tiles plus a global view per image.

Llama 4 has no multimodal core module: the top-level class holds the vision tower, the projector
and ``language_model`` (a ``Llama4ForCausalLM``), so it is the adapter's core and entry module and
its decoder is ``language_model.model``. Its processor writes an image as

    <|image_start|> (<|patch|> * n <|tile_x_separator|>) ... <|patch|> * n <|tile_y_separator|> ...
                    <|image|> <|patch|> * n <|image_end|>

— one run of ``n = ((image_size / patch_size) * pixel_shuffle_ratio)²`` ``<|patch|>`` placeholders
(``image_token_id``) per tile, row by row, then the global view after ``<|image|>`` (just the global
view when the image is one tile). Separators, ``<|image|>`` and the start / end tokens are text and
always stay. Grid (tile, row, col) with the global view as the last tile; the runs between two
``<|image_start|>`` tokens form one image, **one budget per image** (``pixel_values`` is a flat list
of tiles and ``aspect_ratios`` never reaches the model, so the image boundaries are read from the
sequence: the ``<|image_start|>`` ids, or their embedding rows in an ``inputs_embeds``-only call).

Attention under pruning (transformers 5.23, ``Llama4TextModel`` / ``Llama4TextAttention``): the
RoPE layers are ``chunked_attention`` layers whose mask (``create_chunked_causal_mask``) numbers
chunks of ``attention_chunk_size`` by a token's slot among the real tokens of the KV cache, not by
its position id; the NoPE layers scale queries (``attn_temperature_tuning``) by
``log1p(floor((slot + 1) / floor_scale))`` of the slot index ``arange(L) + past_seen``, again not
the position id. Both therefore see the pruned prompt as a shorter sequence. Below
``attention_chunk_size`` / ``floor_scale`` tokens (8192 each in the released configs) every token
is in chunk 0 with scale 1 either way, so pruning changes nothing there; beyond, a chunk of the
pruned prompt spans more of the original prompt and the NoPE scale steps later. RoPE positions
follow ``position_mode`` as for every family. The tiny config uses chunks of 16 tokens, so the
chunked mask is active in the tests.
"""
from __future__ import annotations

import torch

from evtp.integrations.grids import runs, tiled_runs
from evtp.integrations.protocol import Family, Modality

TILE_X, TILE_Y, GLOBAL = 104, 105, 106  # <|tile_x_separator|>, <|tile_y_separator|>, <|image|>


class Llama4(Family):
    """Visual tokens: ``image_token_id`` (``<|patch|>``); grid (tile, row, col), one budget per image."""

    name = "Llama 4"
    core_names = ("Llama4ForConditionalGeneration",)
    placeholders = {"image": "image_token_id"}

    def language_model(self, core):
        return core.language_model.model

    def tile_side(self, core) -> int:
        vision = core.config.vision_config
        return int(int(vision.image_size) // int(vision.patch_size) * float(vision.pixel_shuffle_ratio))

    def image_starts(self, core, stash, embeds) -> torch.Tensor:
        """(B, L) bool ``<|image_start|>`` positions, from the ids or (embeds only) their embedding rows."""
        boi = int(core.config.boi_token_id)
        ids = stash.get("input_ids")
        if ids is not None:
            return ids.to(embeds.device) == boi
        ref = self.embed_placeholders(core, torch.tensor([boi], device=embeds.device))[0].to(embeds.dtype)
        return (embeds == ref).all(-1)

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        if not bool(m.any()):
            return []
        side = self.tile_side(core)
        grid, run = tiled_runs(m, side, what="image")  # (tile inside its run, row, col), run ids
        _, _, lengths = runs(m)
        R = lengths.numel()
        B, L = m.shape
        # image of every run: its row and the number of <|image_start|> tokens before it
        seen = self.image_starts(core, stash, embeds).long().cumsum(1)
        key = torch.arange(B, device=m.device).unsqueeze(1) * (L + 1) + seen
        run_key = torch.zeros(R, dtype=torch.long, device=m.device).scatter_(0, run[m], key[m])
        _, image = torch.unique(run_key, return_inverse=True)  # (R,) batch-major image ids
        # tiles of the image's earlier runs come first
        tiles = lengths // (side * side)
        before = torch.cumsum(tiles, 0) - tiles
        first_run = torch.full((int(image.max()) + 1,), R, dtype=torch.long, device=m.device).scatter_reduce(
            0, image, torch.arange(R, device=m.device), reduce="amin")
        offset = before - before[first_run[image]]
        grid = grid.clone()
        grid[..., 0][m] += offset[run[m]]
        groups = torch.full_like(run, -1)
        groups[m] = image[run[m]]
        return [Modality(m, grid, groups)]
