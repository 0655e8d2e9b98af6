"""Idefics3 and SmolVLM (``Idefics3Model``, ``SmolVLMModel``): the language model is ``text_model``.

Every image is cut into tiles plus a global view; each tile's ``image_seq_len`` tokens
(``(image_size / patch_size)² / scale_factor²`` after pixel shuffle) form one run of placeholders
between ``<fake_token_around_image>`` and ``<row_r_col_c>`` / ``<global-img>`` text tokens, which
are never pruned. Grid (row, col) inside the tile; **one budget per tile** (every tile and the
global view keep ``keep`` of their tokens), since which tiles form one image is only in the text
tokens between them.
"""
from __future__ import annotations

import math


from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality


class TiledTextModelFamily(Family):
    def language_model(self, core):
        return core.text_model

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        side = math.isqrt(int(core.image_seq_len))
        grid, run = tiled_runs(m, side, what="image")
        return [Modality(m, grid[..., 1:], run)]


class Idefics3(TiledTextModelFamily):
    name = "Idefics3"
    core_names = ("Idefics3Model",)


class SmolVLM(TiledTextModelFamily):
    name = "SmolVLM"
    core_names = ("SmolVLMModel",)
