"""The family-adapter protocol: what `evtp.TokenPruner` needs to know about one model family.

A family adapter is a `Family` subclass in its own file under ``evtp/integrations/families/``,
registered with `register_family` under the names of the multimodal *core* classes it adapts
(``LlavaModel``, ``Qwen2VLModel``, a remote-code ``Sa2VAChatModel`` ...). `find_family` walks the
class hierarchy of a model (and of its ``.model`` chain), so a subclass — UniPixel's
``PixelQwen2_5_VLForConditionalGeneration``, your fine-tune — is found as its base family.
Classes are keyed by name, so nothing imports a transformers model module until a model of that
family is patched, and a family whose class the installed transformers lacks simply never matches.

An adapter answers, for one call of the model:

* where the visual tokens are (`Family.placeholders`: modality -> config attribute of the
  placeholder token id) and which of them must always stay (they are left out of
  `Modality.mask`: CLS, newline, image-break, tile separators);
* their grid: (row, col) or (frame / tile, row, col) per token and an image / video id
  (`Family.grid`, from the inputs stashed on the core's call, `Family.stash_keys`);
* the language-model module (`Family.language_model`) and how every LM input aligned with the
  sequence shrinks with it (`Family.lm_inputs`: embeddings, padding masks, 1-D / M-RoPE
  positions, and family extras such as Gemma3's mask dict or Qwen3-VL's deepstack features);
* a tiny random test configuration (`TinyCase`), so one parametrised suite covers every family.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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


@dataclass
class TinyCase:
    """A tiny random build of one family and inputs for it (tests; built in well under a second).

    Attributes:
        kind: short name ("llava", "qwen3_vl_moe", ...), the test id.
        build: ``build(seed=0, attn_implementation="sdpa") -> model`` (eval mode, float32).
        inputs: ``inputs(prompts, seed=0, padding_side="left") -> dict`` of forward kwargs. A prompt
            is a list of ints (text ids 3..99) and ("image", spec) / ("video", spec) items.
        image_specs: (small, large) image specs, so that batches mix token counts.
        video_spec: a video spec, or None when the family has no video input.
        selectable: ``selectable(spec) -> int``, the prunable visual tokens of one image / video of
            that spec (one selection group).
        placeholder_ids: the ids whose positions are visual tokens (for counting in tests).
        always_kept: ids inside the visual span that are never pruned (newline, CLS ...), or ().
        rope_rows: 1 for 1-D positions, 3 for M-RoPE.
        several_images: whether a prompt may hold more than one image (each its own budget).
        generated_token_type: ``token_type_ids`` value of generated tokens (PaliGemma: 1, suffix).
        video_with_images: whether one call may hold images and videos together (GLM-4.1V: no,
            transformers scatters image features into every image-id placeholder, frames included).
        embeds_with_pixels: whether the model takes ``pixel_values`` with ``inputs_embeds`` (Llama 4:
            no; such a call passes the tower's output as ``mm_encoder_outputs``).
        notes: what the tiny build leaves out, for the docs' coverage table.
    """

    kind: str
    build: Callable[..., Any]
    inputs: Callable[..., dict]
    image_specs: tuple
    video_spec: Any = None
    selectable: Callable[[Any], int] | None = None
    placeholder_ids: tuple = ()
    always_kept: tuple = ()
    rope_rows: int = 1
    several_images: bool = True
    generated_token_type: int = 0
    video_with_images: bool = True
    embeds_with_pixels: bool = True
    notes: str = ""


class Family:
    """Base adapter. Subclasses set the class attributes and override what differs.

    Class attributes:
        name: the family's name in messages and docs.
        placeholders: modality -> name of the config attribute holding its placeholder token id.
        stash_keys: core forward arguments that describe the grid (recorded on every fresh call).
        rope_rows: 1 (1-D RoPE) or 3 (M-RoPE (t, h, w)); the layout of positions built for decoding.
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

    def tiny_cases(self) -> list[TinyCase]:
        return []


FAMILIES: dict[str, Family] = {}


def register_family(*core_names: str):
    """Class decorator: register a `Family` subclass for the core classes named ``core_names``."""

    def deco(cls):
        inst = cls()
        inst.core_names = tuple(core_names)
        for name in core_names:
            if name in FAMILIES:
                raise ValueError(f"core class {name} is already registered by {type(FAMILIES[name]).__name__}")
            FAMILIES[name] = inst
        return cls

    return deco


def load_families() -> dict[str, Family]:
    """Import every family module (registration happens on import); returns `FAMILIES`."""
    import evtp.integrations.families  # noqa: F401

    return FAMILIES


def family_of(module) -> Family | None:
    """The family registered for the first class of ``type(module).__mro__`` that has one."""
    for cls in type(module).__mro__:
        fam = FAMILIES.get(cls.__name__)
        if fam is not None:
            return fam
    return None


def supported_names() -> list[str]:
    load_families()
    return sorted({fam.name for fam in FAMILIES.values()})


def find_family(model) -> tuple[Any, Family]:
    """(core module, family) of ``model``: the model itself or along its ``.model`` chain.

    Raises:
        TypeError naming the supported families and pointing to `prune_inputs_embeds`.
    """
    load_families()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers model instance), got "
                        f"{type(model).__name__}")
    mod = model
    for _ in range(4):
        fam = family_of(mod)
        if fam is not None:
            return mod, fam
        mod = getattr(mod, "model", None)
        if not isinstance(mod, torch.nn.Module):
            break
    raise TypeError(f"evtp does not support {type(model).__name__}: no family adapter is registered for it "
                    f"or its .model chain. Supported families: {', '.join(supported_names())}. For other "
                    f"models call evtp.prune_inputs_embeds from the model's code (docs/recipes.md), or "
                    f"register a family (docs/integrations.md)")


def tiny_cases() -> dict[str, TinyCase]:
    """kind -> `TinyCase` of every registered family (each family brings its own)."""
    out = {}
    seen = set()
    for fam in load_families().values():
        if id(fam) in seen:
            continue
        seen.add(id(fam))
        for case in fam.tiny_cases():
            out[case.kind] = case
    return out
