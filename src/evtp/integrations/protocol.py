"""The family-adapter protocol: what `evtp.TokenPruner` needs to know about one model family.

A family adapter is a `Family` subclass in its own file under ``evtp/integrations/families/``;
``Family.core_names`` names the multimodal *core* classes it adapts (``LlavaModel``,
``Qwen2VLModel``, a remote-code ``Sa2VAChatModel`` ...). The registry above the families
(`evtp.integrations.registry`) maps those names to adapters and finds a model's family through its
class hierarchy. Imports go one way: protocol <- families <- registry <- pruner.

An adapter answers, for one call of the model:

* where the visual tokens are (`Family.placeholders`: modality -> config attribute of the
  placeholder token id) and which of them must always stay (they are left out of
  `Modality.mask`: CLS, newline, image-break, tile separators);
* their grid: (row, col) or (frame / tile, row, col) per token and an image / video id
  (`Family.grid`, from the inputs stashed on the core's call, `Family.stash_keys`);
* the language-model module (`Family.language_model`) and how every LM input aligned with the
  sequence shrinks with it (`Family.lm_inputs`: embeddings, padding masks, 1-D / M-RoPE
  positions, and family extras such as Gemma3's mask dict or Qwen3-VL's deepstack features).

Tiny test builds of every family live in the test-support package (`evtp.testing.families`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Modality:
    """Visual tokens of one kind in a batch: where they are, their grid and their image ids.

    Attributes:
        mask: (B, L) bool, the *selectable* visual tokens (always-kept ones are left out).
        grid: (B, L, P) long (row, col) or (frame/tile, row, col), zero outside ``mask``.
        groups: (B, L) long image / video id (selected on its own), -1 outside ``mask``.
        name: "image" or "video".
    """

    mask: torch.Tensor
    grid: torch.Tensor
    groups: torch.Tensor
    name: str = "image"


class Family:
    """Base adapter. Subclasses set the class attributes and override what differs.

    Class attributes:
        name: the family's name in messages and docs.
        placeholders: modality -> name of the config attribute holding its placeholder token id.
        stash_keys: core forward arguments that describe the grid (recorded on every fresh call).
        rope_rows: 1 (1-D RoPE) or 3 (M-RoPE (t, h, w)); the layout of positions built for decoding.
        core_names: names of the core classes the adapter covers (`evtp.integrations.registry`).
    """

    name: str = "?"
    placeholders: dict = {"image": "image_token_id"}
    stash_keys: tuple = ()
    rope_rows: int = 1
    core_names: tuple = ()

    # -- modules ---------------------------------------------------------------------------
    def language_model(self, core) -> torch.nn.Module:
        """The decoder stack whose first layer must see the pruned sequence."""
        return core.language_model

    def entry_module(self, core) -> torch.nn.Module:
        """The module whose call starts a step: grid inputs are stashed, decode steps translated."""
        return core

    def decoder_layers(self, lm):
        return lm.layers

    def config(self, core):
        return core.config

    def install(self, core, state) -> list:
        """Extra hooks a family needs (returns their handles); none by default."""
        return []

    # -- tokens ----------------------------------------------------------------------------
    def placeholder_ids(self, core) -> dict:
        """modality -> placeholder token id (None when the config has none)."""
        cfg = self.config(core)
        return {name: getattr(cfg, attr, None) for name, attr in self.placeholders.items()}

    def embed_placeholders(self, core, ids: torch.Tensor) -> torch.Tensor:
        """Embedding rows of placeholder ids, as the core embeds them (for inputs_embeds-only calls)."""
        return core.get_input_embeddings()(ids)

    def grid(self, core, masks: dict, stash: dict, embeds: torch.Tensor) -> list[Modality]:
        """The selectable visual tokens of every modality with their grids (see `Modality`).

        ``masks`` holds ``input_ids == id`` per entry of `placeholders`; a family whose modalities
        share one placeholder id splits them here from a stashed per-token type (GLM-4.1V's
        ``mm_token_type_ids``: `evtp.integrations.grids.split_by_token_type`)."""
        raise NotImplementedError

    # -- inputs ----------------------------------------------------------------------------
    def lm_inputs(self, core, kw: dict, out, stash: dict) -> dict:
        """Replace every sequence-aligned LM input by its pruned version (``out``: `PrunedInputs`)."""
        kw["inputs_embeds"] = out.inputs_embeds
        kw["attention_mask"] = out.attention_mask
        kw["position_ids"] = out.position_ids
        return kw
