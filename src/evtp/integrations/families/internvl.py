"""InternVL (``InternVLModel``, HF-native InternVL 2.5 / 3): runs of 448-px tiles after pixel shuffle."""
from __future__ import annotations


from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality


def internvl_side(vision_config, downsample_ratio: float) -> int:
    """Tokens per tile side after pixel shuffle: image_size / patch_size * downsample_ratio."""
    size = vision_config.image_size if isinstance(vision_config.image_size, int) else vision_config.image_size[0]
    patch = vision_config.patch_size if isinstance(vision_config.patch_size, int) else vision_config.patch_size[0]
    return int(round(int(size) // int(patch) * float(downsample_ratio)))


class InternVL(Family):
    """Visual tokens: ``image_token_id``; every run of them is one image (or video frame), cut
    into tiles of ``side²`` tokens; grid (tile, row, col), one budget per image."""

    name = "InternVL"
    core_names = ("InternVLModel",)

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        side = internvl_side(core.config.vision_config, core.config.downsample_ratio)
        grid, run = tiled_runs(m, side, what="image")
        return [Modality(m, grid, run)]
