"""`TokenPruner`: prune visual tokens inside a transformers VLM instance, in forward and generate.

    pruner = evtp.TokenPruner(method="evtp", keep=0.2)     # validated here, before any model call
    with pruner(model):                                     # hooks on this instance only
        out = model.generate(**inputs, max_new_tokens=20)   # visual tokens pruned before layer 0
    pruner.apply(model); ...; pruner.remove(model)          # the same without a with-block

How it works (ToMe's pattern: instance state, nothing global). ``apply`` finds the model's family
adapter (`evtp.integrations.protocol`) and registers forward pre-hooks on this instance's modules,
which ``remove`` deletes again:

* on the family's *entry* module (the multimodal core: ``LlavaModel``, ``Qwen2VLModel`` ...): a
  fresh call records ``input_ids`` (or, for an ``inputs_embeds``-only call, the rows equal to a
  placeholder's embedding — found before the visual features are scattered in), the padding mask
  and the family's grid inputs; a call that continues the KV cache of a pruned prefill
  (``generate``'s decode steps, your own loop) gets its full-length attention mask and position
  ids translated to the pruned cache;
* on its language model — after the projector wrote the visual features into ``inputs_embeds``
  and before the first decoder layer: select visual tokens per image / video with
  `evtp.select_tokens`, drop the rest and re-pad the batch (`evtp.integrations.generic.pack`);
  the family adapter shrinks every other sequence-aligned input with them (M-RoPE ids, Gemma3's
  mask dict, Qwen3-VL's deepstack features ...);
* on the top-level model: refuse ``labels`` (the sequence no longer matches them).

Score-free methods (``evtp``, ``kcenter``, ``random`` ...) need no attention weights, so SDPA /
flash attention stay on. Score-based ones (``attention``; ``evtp`` with ``saliency_weight > 0``)
get FastV-style scores from an extra eager pass over the first ``score_layer`` decoder layers.
"""
from __future__ import annotations

import contextlib
import inspect
import numbers
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from evtp.integrations.generic import PrunedInputs, pack, select_visual
from evtp.integrations.protocol import Family
from evtp.integrations.registry import find_family
from evtp.pruning import PruningSettings

SCORE_QUERIES = ("last", "mean")
_ATTR = "_evtp_pruning"
_MULTIMODAL_INPUTS = ("pixel_values", "pixel_values_videos", "pixel_values_images")


class TokenPruner:
    """What to prune and how; validated on construction, applied to any supported VLM instance.

    Args:
        method: a key of `evtp.METHODS` ("evtp", "kcenter", "random", "attention", ...).
        keep: ratio in (0, 1] or int count, applied to every image / video separately; or a
            `CoverageTarget` for adaptive methods. ``0`` (drop every visual token) only with
            ``allow_no_visual=True``.
        position_mode: "original" (default): kept tokens keep the position ids they had in the
            full sequence (Qwen M-RoPE: their full-grid (t, h, w) ids) and text after an image
            keeps its ids; "contiguous": the pruned sequence is renumbered first, first + 1, ...
        score_layer, score_query: score-based methods only: the head-mean attention of decoder
            layer ``score_layer - 1`` (eager, full sequence; FastV's K) from the last real token
            ("last") or averaged over all real query tokens ("mean").
        seed: seed of the generator handed to random methods (None: torch's global RNG).
        allow_no_visual: allow ``keep=0``, which leaves every image with no visual token.
        **options: options of the selection method (``evtp.METHODS[method].options_type``); every
            value is checked here, so a wrong name, type or range fails on construction.

    ``settings`` holds the first five as one `evtp.PruningSettings` (`from_settings` builds a
    pruner from one).

    Outputs under the pruner cover the *pruned* sequence: ``model(**inputs).logits`` (and
    ``hidden_states``, ``attentions``) have one position per kept token (text and kept visual
    tokens), not one per input token. ``pruner.last_pruning(model).kept_indices`` (B, L') maps
    each output position to its input position (-1 = padding), and
    ``last_pruning(model).to_input_positions(logits)`` scatters per-position outputs back onto
    the input sequence.

    Example::

        pruner = TokenPruner("evtp", keep=0.2)
        with pruner(model):
            ids = model.generate(**inputs, max_new_tokens=32)
        pruner.last_pruning(model)   # only while applied; see `apply`
    """

    def __init__(self, method: str = "evtp", keep=0.2, *, position_mode: str = "original",
                 score_layer: int = 2, score_query: str = "last", seed: int | None = 0,
                 allow_no_visual: bool = False, **options):
        if not isinstance(allow_no_visual, bool):
            raise TypeError(f"allow_no_visual must be a bool, got {type(allow_no_visual).__name__}")
        settings = PruningSettings(method, keep, position_mode=position_mode, seed=seed, options=options)
        if settings.budget.keeps_none and not allow_no_visual:
            raise ValueError(f"keep={keep!r} would leave every image with no visual token (a pruner "
                             f"keeps at least 1 per image); pass allow_no_visual=True to drop them all")
        if isinstance(score_layer, bool) or not isinstance(score_layer, numbers.Integral) or score_layer < 1:
            raise ValueError(f"score_layer={score_layer!r}: must be an int >= 1 (the attention of decoder "
                             f"layer score_layer - 1 scores the tokens, FastV's K)")
        if score_query not in SCORE_QUERIES:
            raise ValueError(f"score_query={score_query!r}; expected one of {SCORE_QUERIES}")
        self.settings = settings
        self.score_layer = int(score_layer)
        self.score_query = score_query
        self.allow_no_visual = allow_no_visual

    @classmethod
    def from_settings(cls, settings: PruningSettings, **kwargs) -> "TokenPruner":
        """A pruner for ``settings``; ``kwargs``: score_layer, score_query, allow_no_visual."""
        if not isinstance(settings, PruningSettings):
            raise TypeError(f"settings must be an evtp.PruningSettings, got {type(settings).__name__}")
        return cls(settings.method, settings.keep, position_mode=settings.position_mode, seed=settings.seed,
                   **kwargs, **settings.options)

    method = property(lambda self: self.settings.method)
    keep = property(lambda self: self.settings.keep)
    position_mode = property(lambda self: self.settings.position_mode)
    seed = property(lambda self: self.settings.seed)
    options = property(lambda self: dict(self.settings.options))

    def __eq__(self, other):
        if not isinstance(other, TokenPruner):
            return NotImplemented
        return (self.settings, self.score_layer, self.score_query, self.allow_no_visual) == \
            (other.settings, other.score_layer, other.score_query, other.allow_no_visual)

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in self.settings.options.items())
        return (f"TokenPruner(method={self.method!r}, keep={self.keep!r}, position_mode={self.position_mode!r}, "
                f"score_layer={self.score_layer}, score_query={self.score_query!r}, seed={self.seed!r}, "
                f"allow_no_visual={self.allow_no_visual}{opts})")

    @property
    def drops_all(self) -> bool:
        """keep = 0: every visual token is dropped."""
        return self.settings.budget.keeps_none

    @property
    def wants_scores(self) -> bool:
        return self.settings.wants_scores

    # -- use -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def __call__(self, model):
        """``with pruner(model): ...`` — applied inside the block, removed in ``finally``.

        Blocks nest: leaving an inner ``with other(model)`` puts back the pruner that was applied
        before it (the outer block stays pruned with its own settings)."""
        before = getattr(model, _ATTR, None)
        self.apply(model)
        try:
            yield model
        finally:
            if is_applied(model):
                remove(model)
            if before is not None:
                before.pruner.apply(model)

    def apply(self, model):
        """Patch ``model`` (this instance only); returns it. Applying again replaces the settings.

        Raises:
            TypeError for a model no family adapter covers (the message lists the supported ones);
            ValueError for a ``score_layer`` beyond the model's decoder layers.
        """
        core, family = find_family(model)
        lm = family.language_model(core)
        layers = family.decoder_layers(lm) if lm is not None else None
        if layers is None:
            raise TypeError(f"{type(core).__name__} has no language model with decoder layers")
        if self.wants_scores and self.score_layer > len(layers):
            raise ValueError(f"score_layer={self.score_layer} but {type(lm).__name__} has {len(layers)} decoder "
                             f"layers: must be an int in [1, {len(layers)}]")
        if is_applied(model):
            remove(model)
        state = _State(self, core, family, lm, family.entry_module(core))
        if state.entry is lm:
            state.handles.append(lm.register_forward_pre_hook(_combined_hook(state), with_kwargs=True))
        else:
            state.handles.append(state.entry.register_forward_pre_hook(_entry_hook(state), with_kwargs=True))
            state.handles.append(lm.register_forward_pre_hook(_lm_hook(state), with_kwargs=True))
        state.handles += family.install(core, state)
        if model is not lm:  # labels are refused on the top-level model (Llama 4: the core itself)
            state.handles.append(model.register_forward_pre_hook(_top_hook(state), with_kwargs=True))
        setattr(model, _ATTR, state)
        return model

    @staticmethod
    def remove(model):
        """Undo `apply`: remove the hooks and the state; ``model`` behaves exactly as before."""
        return remove(model)

    @staticmethod
    def last_pruning(model) -> PrunedInputs | None:
        return last_pruning(model)


def remove(model):
    """Undo `TokenPruner.apply`: remove the hooks and the state; returns ``model``."""
    state = getattr(model, _ATTR, None)
    if state is None:
        raise ValueError("model is not patched by evtp (TokenPruner.apply / "
                         "evtp.integrations.transformers.apply)")
    for h in state.handles:
        h.remove()
    delattr(model, _ATTR)
    return model


def is_applied(model) -> bool:
    return hasattr(model, _ATTR)


def last_pruning(model) -> PrunedInputs | None:
    """The `PrunedInputs` of the prefill whose KV cache the latest call used (kept indices,
    counts, selection time); None when the latest fresh call had no visual tokens."""
    state = getattr(model, _ATTR, None)
    if state is None:
        raise ValueError("model is not patched by evtp (TokenPruner.apply / "
                         "evtp.integrations.transformers.apply)")
    return state.last


def timings_ms(model) -> dict:
    """Milliseconds of the latest prefill's steps: scores, selection, pack."""
    return dict(getattr(model, _ATTR).timings_ms)


# --------------------------------------------------------------------------------------------
# per-instance state and hooks
# --------------------------------------------------------------------------------------------
@dataclass
class _Prefill:
    cache: Any  # weakref to the KV cache that holds the pruned prompt
    full_len: int
    pruned_len: int
    mask: torch.Tensor  # (B, L') attention mask of the pruned prompt
    next_position: torch.Tensor  # (B,)


@dataclass
class _State:
    pruner: TokenPruner
    core: Any
    family: Family
    lm: Any
    entry: Any
    handles: list = field(default_factory=list)
    stash: dict | None = None
    embedding_ids: torch.Tensor | None = None  # set by families that hook the embedding table
    busy: bool = False
    prefill: _Prefill | None = None
    last: PrunedInputs | None = None
    timings_ms: dict = field(default_factory=dict)


def _bind(module, args, kwargs) -> dict:
    if not args:
        return dict(kwargs)
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    out = dict(bound.arguments)
    out.update(out.pop("kwargs", {}) or {})
    return out


def _top_hook(state: _State):
    def hook(module, args, kwargs):
        labels = _bind(module, args, kwargs).get("labels")
        if labels is None:
            return None
        if "labels" in kwargs and isinstance(labels, torch.Tensor) and bool((labels == -100).all()):
            # no target at all: what PaliGemma's processor returns for a prompt without a suffix
            # (every label the ignore index). The unpatched model's loss over them is NaN; dropped.
            return args, {**kwargs, "labels": None}
        raise ValueError("labels are not supported while evtp pruning is applied (the sequence the "
                         "language model sees is shorter than the labels); remove the pruner "
                         "(pruner.remove(model)) before training")

    return hook


def _rewrite_hook(state: _State, *steps):
    """A forward pre-hook that binds the call's arguments to ``kw`` and tries ``steps`` in turn
    (each ``step(module, kw) -> new kwargs | None``): the first new kwargs replace the call's; none
    leaves the call as it is, and so does ``state.busy``."""

    def hook(module, args, kwargs):
        if state.busy:
            return None
        kw = _bind(module, args, kwargs)
        for step in steps:
            new = step(module, kw)
            if new is not None:
                return (), new
        return None

    return hook


def _entry_hook(state: _State):
    return _rewrite_hook(state, lambda module, kw: _entry(state, kw))


def _lm_hook(state: _State):
    return _rewrite_hook(state, lambda module, kw: _lm(state, module, kw))


def _combined_hook(state: _State):
    """Entry and language model are one module (a decoder called with ``inputs_embeds``)."""
    return _rewrite_hook(state, lambda module, kw: _entry(state, kw), lambda module, kw: _lm(state, module, kw))


def _continues_prefill(state: _State, kw: dict) -> bool:
    pf = state.prefill
    past = kw.get("past_key_values")
    return pf is not None and past is not None and past is pf.cache()


def _carries_pixels(kw: dict) -> bool:
    """Whether a core call brings visual inputs (``pixel_values``, ``pixel_values_videos``, ...,
    or the tower's output as ``mm_encoder_outputs``)."""
    return any(key.startswith(("pixel_values", "mm_encoder_outputs")) and value is not None
               for key, value in kw.items())


def _entry(state: _State, kw: dict) -> dict | None:
    """A fresh call: stash what the grid needs (returns None). A continuation: translate it."""
    if _continues_prefill(state, kw):
        ids = kw.get("input_ids")
        # a placeholder id without pixels is a generated token, embedded like any text token
        if ids is not None and _carries_pixels(kw):
            for name, tok in state.family.placeholder_ids(state.core).items():
                if tok is not None and bool((ids == tok).any()):
                    raise ValueError(f"this call continues a pruned KV cache but holds {name} placeholder "
                                     f"tokens; evtp cannot add visual tokens to a pruned cache — start the "
                                     f"multimodal prompt with a fresh cache")
        return _decode(state, kw)
    state.prefill = None
    state.last = None
    state.stash = _stash(state, kw)
    return None


def _stash(state: _State, kw: dict) -> dict:
    fam, core = state.family, state.core
    stash = {key: kw.get(key) for key in fam.stash_keys}
    stash["attention_mask"] = kw.get("attention_mask")
    ids = kw.get("input_ids")
    embeds = kw.get("inputs_embeds")
    if ids is None and embeds is not None and state.embedding_ids is not None \
            and tuple(state.embedding_ids.shape) == tuple(embeds.shape[:2]):
        ids = state.embedding_ids  # the ids the model's own code embedded a moment ago
    state.embedding_ids = None
    stash["input_ids"] = ids
    tokens = fam.placeholder_ids(core)
    if ids is not None:
        stash["masks"] = {name: (ids == tok) if tok is not None else torch.zeros_like(ids, dtype=torch.bool)
                          for name, tok in tokens.items()}
        return stash
    if embeds is None:
        stash["masks"] = None
        return stash
    # inputs_embeds only: the placeholders are the rows equal to their embedding (before scattering)
    masks = {}
    for name, tok in tokens.items():
        if tok is None:
            masks[name] = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
            continue
        ref = fam.embed_placeholders(core, torch.tensor([tok], device=embeds.device))[0].to(embeds.dtype)
        masks[name] = (embeds == ref).all(-1)
    multimodal = any(kw.get(k) is not None for k in _MULTIMODAL_INPUTS) or bool(kw.get("mm_encoder_outputs"))
    if multimodal and not any(bool(m.any()) for m in masks.values()):
        raise ValueError(f"{type(core).__name__} was called with inputs_embeds and visual inputs, but no row of "
                         f"inputs_embeds equals the embedding of a placeholder token ({tokens}), so evtp cannot "
                         f"find the visual tokens to prune. Pass input_ids, or build inputs_embeds with "
                         f"model.get_input_embeddings()(input_ids), or prune yourself with "
                         f"evtp.prune_inputs_embeds")
    stash["masks"] = masks
    return stash


def _lm(state: _State, lm, kw: dict) -> dict | None:
    stash, state.stash = state.stash, None
    embeds = kw.get("inputs_embeds")
    if stash is None or embeds is None or stash.get("masks") is None:
        return None
    masks = stash["masks"]
    shape = tuple(embeds.shape[:2])
    for name, m in masks.items():
        if tuple(m.shape) != shape:
            raise ValueError(f"the language model received a sequence of shape {shape} but the {name} "
                             f"placeholders were found in one of shape {tuple(m.shape)}; evtp cannot align them")
    masks = {name: m.to(embeds.device) for name, m in masks.items()}
    if not any(bool(m.any()) for m in masks.values()):
        return None
    return _prefill(state, lm, kw, embeds, masks, stash)


def _prefill(state: _State, lm, kw: dict, embeds: torch.Tensor, masks: dict, stash: dict) -> dict:
    cfg = state.pruner
    past = kw.get("past_key_values")
    if past is not None and past.get_seq_length() > 0:
        raise ValueError("evtp pruning cannot add visual tokens to a non-empty KV cache; start the "
                         "multimodal prompt with a fresh cache")
    mask = stash.get("attention_mask")
    if mask is None and isinstance(kw.get("attention_mask"), torch.Tensor):
        mask = kw["attention_mask"]
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
        raise ValueError(f"evtp pruning needs a 2-D padding attention_mask (or None), got "
                         f"{type(mask).__name__} {tuple(getattr(mask, 'shape', ()))}; 4-D / prepared masks "
                         f"(e.g. static caches in generate) are not supported")
    B, L, _ = embeds.shape
    mask = None if mask is None else mask.to(embeds.device)
    real = torch.ones(B, L, dtype=torch.bool, device=embeds.device) if mask is None else mask.bool()
    mods = state.family.grid(state.core, masks, stash, embeds)
    visual = torch.zeros(B, L, dtype=torch.bool, device=embeds.device)
    for mod in mods:
        visual |= mod.mask
    scores = None
    t0 = time.perf_counter()
    if cfg.wants_scores:
        scores = _attention_scores(state, lm, kw, real)
    t1 = time.perf_counter()
    gen = cfg.settings.generator(embeds.device)
    budget = cfg.settings.budget
    keep = torch.ones_like(visual) if budget.keeps_all else ~visual  # keep 1.0 / 0: no selection call
    if not budget.trivial:
        for mod in mods:
            vis = mod.mask & real
            if not bool(vis.any()):
                continue
            km = select_visual(embeds.detach(), vis, mod.grid, method=cfg.method, keep=cfg.keep,
                               groups=mod.groups, scores=scores, generator=gen, **cfg.options)
            keep |= km & vis
    t2 = time.perf_counter()
    out = pack(keep, embeds, mask, kw.get("position_ids"), visual_mask=visual,
               position_mode=cfg.position_mode)
    out.selection_ms = (t2 - t0) * 1e3
    kw = state.family.lm_inputs(state.core, kw, out, stash)
    state.timings_ms = {"scores": (t1 - t0) * 1e3, "selection": (t2 - t1) * 1e3,
                        "pack": (time.perf_counter() - t2) * 1e3}
    state.last = out
    use_cache = kw.get("use_cache")
    if use_cache is None:
        use_cache = getattr(lm.config, "use_cache", True)
    if use_cache and past is None:
        from transformers import DynamicCache

        past = DynamicCache(config=lm.config)
        kw["past_key_values"] = past
    state.prefill = None
    if use_cache and past is not None:
        state.prefill = _Prefill(weakref.ref(past), L, out.inputs_embeds.shape[1], out.attention_mask,
                                 out.next_position)
    return kw


def _decode(state: _State, kw: dict) -> dict:
    """Translate a call that continues the pruned prompt's cache (full-length mask / positions)."""
    pf = state.prefill
    past = kw["past_key_values"]
    x = kw.get("input_ids") if kw.get("input_ids") is not None else kw.get("inputs_embeds")
    if x is None:
        return kw
    B, n = x.shape[0], x.shape[1]
    device = x.device
    done = past.get_seq_length() - pf.pruned_len  # tokens appended after the pruned prompt
    if B != pf.mask.shape[0] or done < 0:
        raise ValueError(f"this call (batch {B}) does not continue the pruned prompt held in "
                         f"past_key_values (batch {pf.mask.shape[0]}, {pf.pruned_len} tokens)")
    mask = kw.get("attention_mask")
    if mask is None:
        tail = torch.ones(B, done + n, dtype=pf.mask.dtype, device=device)
    elif isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == pf.full_len + done + n:
        tail = mask[:, pf.full_len:].to(pf.mask.dtype)
    elif isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == pf.pruned_len + done + n:
        tail = mask[:, pf.pruned_len:].to(pf.mask.dtype)  # already in pruned coordinates
    else:
        raise ValueError(f"attention_mask of shape {tuple(mask.shape) if hasattr(mask, 'shape') else mask} "
                         f"does not continue the pruned prompt (full length {pf.full_len}, "
                         f"pruned {pf.pruned_len}, {done} tokens since); pass a 2-D padding mask")
    kw["attention_mask"] = torch.cat([pf.mask.to(device), tail.to(device)], 1)
    pos = kw.get("position_ids")
    if state.pruner.position_mode == "contiguous" or pos is None:
        new = pf.next_position.to(device).unsqueeze(1) + done + torch.arange(n, device=device)
        rows = pos.shape[0] if pos is not None and pos.dim() == 3 else state.family.rope_rows
        if rows > 1:
            new = new.unsqueeze(0).expand(rows, B, n)
        kw["position_ids"] = new.to(pos.dtype if pos is not None else torch.long)
    return kw


class _Stop(Exception):
    pass


def _attention_scores(state: _State, lm, kw: dict, real: torch.Tensor) -> torch.Tensor:
    """FastV-style importance: head-mean attention of layer ``score_layer - 1`` on the full sequence.

    Returns:
        (B, L) float scores (attention received from the last real token, or the mean over real
        query tokens).
    """
    cfg = state.pruner
    layer = state.family.decoder_layers(lm)[cfg.score_layer - 1]
    attn = getattr(layer, "self_attn", None)
    if attn is None:
        raise TypeError(f"decoder layer {cfg.score_layer - 1} ({type(layer).__name__}) has no self_attn; pick "
                        f"an attention layer with score_layer, or a score-free method")
    captured = {}

    def grab(module, args, output):
        captured["w"] = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        raise _Stop

    handle = attn.register_forward_hook(grab)
    conf = lm.config
    old = conf._attn_implementation
    state.busy = True
    call = {k: v for k, v in kw.items() if k not in ("past_key_values", "use_cache")}
    try:
        conf._attn_implementation = "eager"
        lm(**call, use_cache=False)
    except _Stop:
        pass
    finally:
        conf._attn_implementation = old
        state.busy = False
        handle.remove()
    w = captured.get("w")
    if w is None:
        raise RuntimeError("could not capture attention weights of the scoring layer")
    w = w.float().mean(1)  # (B, L, L)
    if cfg.score_query == "last":
        last = (real.long() * torch.arange(real.shape[1], device=real.device)).argmax(1)  # (B,)
        return w[torch.arange(w.shape[0], device=w.device), last]
    q = real.float().unsqueeze(-1)
    return (w * q).sum(1) / q.sum(1).clamp(min=1)
