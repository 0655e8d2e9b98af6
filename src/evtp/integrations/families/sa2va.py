"""Sa2VA's InternVL models (remote code ``Sa2VAChatModel``, ``trust_remote_code=True``).

Sa2VA builds its multimodal sequence in its own ``generate``: ``vit_embeds = extract_feature(
pixel_values)`` (InternViT -> pixel shuffle 0.5 -> ``mlp1``: 256 tokens per 448-px tile or video
frame), ``input_embeds = language_model.get_input_embeddings()(input_ids)``, the
``img_context_token_id`` positions overwritten with ``vit_embeds``, then
``language_model.generate(inputs_embeds=..., attention_mask=..., output_hidden_states=True,
return_dict_in_generate=True)``. The documented insertion point — after the features are
scattered in, before the first decoder layer — is the decoder (``language_model.model``); the
placeholders are read from the ``input_ids`` Sa2VA's code embedded a moment before (a pre-hook on
the embedding table). Its ``[SEG]`` states are counted back from the end of the *generated*
hidden states, so a shorter prompt does not disturb them.

Written from the public structure of ``projects/sa2va/hf/models/modeling_sa2va_chat.py``; tested
on a stand-in of that structure (tests/test_sa2va.py), **not run against the released code**.
Sa2VA's Qwen variants (``Sa2VAChatModelQwen``) hold the HF Qwen2.5-VL / Qwen3-VL model as
``self.model`` and are pruned by those families.
"""
from __future__ import annotations

import math

from evtp.integrations.grids import tiled_runs
from evtp.integrations.protocol import Family, Modality


class Sa2VAInternVL(Family):
    """Visual tokens: ``model.img_context_token_id``; every run between ``<img>`` and ``</img>``
    is one image (its tiles, ``num_image_token`` tokens each) or one video frame; grid
    (tile, row, col), one budget per image / frame."""

    name = "Sa2VA-InternVL (remote-code Sa2VAChatModel)"
    core_names = ("Sa2VAChatModel",)

    def placeholder_ids(self, core):
        return {"image": getattr(core, "img_context_token_id", None)}

    def language_model(self, core):
        return core.language_model.model  # the decoder stack

    def entry_module(self, core):
        return self.language_model(core)

    def embed_placeholders(self, core, ids):
        return core.language_model.get_input_embeddings()(ids)

    def install(self, core, state):
        def remember_ids(module, args, kwargs):
            ids = args[0] if args else kwargs.get("input")
            state.embedding_ids = ids if getattr(ids, "dim", lambda: 0)() == 2 else None

        table = core.language_model.get_input_embeddings()
        return [table.register_forward_pre_hook(remember_ids, with_kwargs=True)]

    def grid(self, core, masks, stash, embeds):
        m = masks["image"]
        per = int(getattr(core, "num_image_token", 256))
        side = math.isqrt(per)
        if side * side != per:
            raise ValueError(f"num_image_token={per} is not a square; cannot lay the tokens out on a grid")
        grid, run = tiled_runs(m, side, what="IMG_CONTEXT")
        return [Modality(m, grid, run)]
