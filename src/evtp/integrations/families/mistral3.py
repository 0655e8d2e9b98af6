"""Mistral 3 / Pixtral (``Mistral3Model``): every image is rows of placeholders, each row closed by
``[IMG_BREAK]`` and the image by ``[IMG_END]`` (text tokens, never pruned); so every row is a run.

The runs are grouped into images by the per-image token counts — ``image_sizes // (patch_size *
spatial_merge_size)`` on a forward call, the per-image features of ``mm_encoder_outputs`` inside
``generate`` (which drops ``image_sizes``). Grid (row, col) = (run index inside the image, index
inside the run); one budget per image.
"""
from __future__ import annotations

import torch

from evtp.integrations.grids import runs, scatter_rows
from evtp.integrations.protocol import Family, Modality


class Mistral3(Family):
    name = "Mistral3 (Pixtral)"
    core_names = ("Mistral3Model",)
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
