"""Prune visual tokens inside a Hugging Face transformers VLM instance, in forward and generate.

    import evtp.integrations.transformers as evtp_hf
    evtp_hf.apply(model, method="evtp", keep=0.2)      # patches this instance only
    out = model.generate(**inputs, max_new_tokens=20)  # image tokens pruned before layer 0
    evtp_hf.remove(model)                              # exactly the original behaviour again

How it works (ToMe's pattern: instance state, nothing global). ``apply`` registers three forward
pre-hooks on the given instance's modules, which ``remove`` deletes again:

* on the multimodal core (``LlavaModel``, ``Qwen2VLModel`` ...): remember ``input_ids`` and the
  model's own grid description (``image_grid_thw`` / ``video_grid_thw``, patch grid, tiles);
* on its ``language_model`` — i.e. after the projector wrote the visual features into
  ``inputs_embeds`` and before the first decoder layer: select visual tokens per image / video
  with `evtp.select_tokens`, drop the rest and re-pad the batch (`evtp.integrations.generic.pack`),
  so that embeddings, padding mask and position ids (1-D or Qwen M-RoPE) shrink together. Later
  calls that continue this KV cache (``generate``'s decode steps, or your own loop) get their
  full-length attention mask and position ids translated to the pruned cache;
* on the top-level model: refuse ``labels`` (the sequence no longer matches them).

`evtp` (and every method that needs no scores) needs no attention weights, so SDPA / flash
attention stay on. Score-based methods (``method="attention"``) get FastV-style scores from an
extra eager pass over the first ``score_layer`` decoder layers on the full sequence, which makes
them slower than ``evtp``.
"""
from __future__ import annotations

import inspect
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from evtp.integrations.generic import POSITION_MODES, PrunedInputs, pack, select_visual
from evtp.selection import METHODS
from evtp.selection.api import check_request

SCORE_QUERIES = ("last", "mean")
_ATTR = "_evtp_pruning"


# --------------------------------------------------------------------------------------------
# grids: every visual token's (frame/tile, row, col) from the model's own description
# --------------------------------------------------------------------------------------------
@dataclass
class Modality:
    """Visual tokens of one kind in a batch: where they are, their grid and their image ids."""

    mask: torch.Tensor  # (B, L) bool
    grid: torch.Tensor  # (B, L, P) long, zero outside mask
    groups: torch.Tensor  # (B, L) long image/video id, -1 outside mask
    name: str = "image"


def _scatter(mask: torch.Tensor, values: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """Write per-visual-token rows (V, ...) into a (B, L, ...) tensor at ``mask`` (batch-major order)."""
    out = values.new_full((*mask.shape, *values.shape[1:]), fill)
    out[mask] = values
    return out


def _thw_layout(thw: torch.Tensor, merge: int):
    """Per-token (item, frame, row, col) of Qwen-VL items listed as (t, h, w) patch grids.

    Args:
        thw: (n, 3) long grids in patches, h and w divisible by ``merge``.
    Returns:
        item, frame, row, col: (V,) long each, V = sum(t * h/merge * w/merge), in token order.
    """
    t, h, w = thw[:, 0].long(), thw[:, 1].long() // merge, thw[:, 2].long() // merge
    counts = t * h * w
    item = torch.repeat_interleave(torch.arange(thw.shape[0], device=thw.device), counts)
    local = torch.arange(item.numel(), device=thw.device) - (torch.cumsum(counts, 0) - counts)[item]
    hw = (h * w)[item]
    rem = local % hw
    return item, local // hw, rem // w[item], rem % w[item]


def _llava_grid(core, masks: dict, stash: dict) -> list[Modality]:
    m = masks["image"]
    if stash.get("image_sizes") is not None:
        raise ValueError("image_sizes (variable-resolution LLaVA towers) is not supported by the evtp "
                         "integration; use fixed-size images")
    vc = core.config.vision_config
    side = int(vc.image_size) // int(vc.patch_size)
    strategy = getattr(core.config, "vision_feature_select_strategy", "default")
    per = side * side + (1 if strategy == "full" else 0)
    total = int(m.sum())
    if total % per:
        raise ValueError(f"found {total} image tokens, not a multiple of the {per} tokens per image of "
                         f"this LLaVA ({side}x{side} patches, strategy {strategy!r})")
    rank = (torch.cumsum(m.flatten().long(), 0) - 1).view(m.shape)
    img, local = rank // per, rank % per
    if strategy == "full":  # the CLS token has no grid cell: it is always kept
        m = m & (local != 0)
        local = local - 1
    grid = torch.stack([local // side, local % side], -1).clamp(min=0) * m.unsqueeze(-1)
    return [Modality(m, grid, torch.where(m, img, torch.full_like(img, -1)))]


def _runs(m: torch.Tensor):
    """Contiguous runs of True in every row of ``m`` (B, L) bool.

    Returns:
        run: (B, L) long run id (batch-major, 0..R-1) at run positions, -1 elsewhere.
        local: (B, L) long index of the position inside its run, 0 elsewhere.
        lengths: (R,) long run lengths.
    """
    prev = torch.cat([torch.zeros_like(m[:, :1]), m[:, :-1]], 1)
    start = (m & ~prev).flatten()
    flat = m.flatten()
    run = torch.cumsum(start.long(), 0) - 1
    rank = torch.cumsum(flat.long(), 0) - 1
    run_start = torch.zeros(int(start.sum()), dtype=torch.long, device=m.device)
    run_start[run[start]] = rank[start]
    local = torch.zeros_like(rank)
    local[flat] = rank[flat] - run_start[run[flat]]
    lengths = torch.bincount(run[flat], minlength=run_start.numel())
    run = torch.where(flat, run, torch.full_like(run, -1))
    return run.view(m.shape), local.view(m.shape), lengths


def _grid_from_mrope(m: torch.Tensor, pos: torch.Tensor, P: int):
    """(frame, row, col) of Qwen-VL visual tokens from their M-RoPE ids (used inside `generate`).

    Each run of visual tokens is one image / video; its ids are (t0 + f * step, h0 + row, w0 + col).
    Args:
        m: (B, L) bool visual tokens of one modality; pos: (3, B, L) M-RoPE ids.
    Returns:
        grid (B, L, P) long, groups (B, L) long (run ids, -1 elsewhere).
    """
    run, _, lengths = _runs(m)
    R = lengths.numel()
    sel = run[m]  # (V,)
    p = pos[:, m].long()  # (3, V)
    lo = torch.full((3, R), torch.iinfo(torch.long).max, dtype=torch.long, device=m.device)
    lo = lo.scatter_reduce(1, sel.unsqueeze(0).expand(3, -1), p, reduce="amin")
    local = p - lo[:, sel]
    # frame = dense rank of the temporal id inside its run (Qwen2.5-VL spaces frames by an interval)
    key = sel * (int(local[0].max()) + 1) + local[0]
    _, inv = torch.unique(key, return_inverse=True)
    first = torch.full((R,), torch.iinfo(torch.long).max, dtype=torch.long, device=m.device)
    first = first.scatter_reduce(0, sel, inv, reduce="amin")
    coords = torch.stack([inv - first[sel], local[1], local[2]], -1)[:, 3 - P:]
    return _scatter(m, coords), run


def _qwen_grid(core, masks: dict, stash: dict) -> list[Modality]:
    merge = int(core.config.vision_config.spatial_merge_size)
    pos = stash.get("position_ids")
    out = []
    for name, key, P in (("image", "image_grid_thw", 2), ("video", "video_grid_thw", 3)):
        m = masks[name]
        if not bool(m.any()):
            continue
        thw = stash.get(key)
        if thw is not None:
            item, frame, row, col = _thw_layout(torch.as_tensor(thw, device=m.device), merge)
            if item.numel() != int(m.sum()):
                raise ValueError(f"{key} describes {item.numel()} {name} tokens but the prompt holds "
                                 f"{int(m.sum())}")
            coords = torch.stack([frame, row, col], -1)[:, 3 - P:]
            out.append(Modality(m, _scatter(m, coords), _scatter(m, item, -1), name))
        elif isinstance(pos, torch.Tensor) and pos.dim() == 3 and pos.shape[0] in (3, 4):
            grid, groups = _grid_from_mrope(m, pos[-3:].to(m.device), P)
            out.append(Modality(m, grid, groups, name))
        else:
            raise ValueError(f"the prompt holds {name} tokens but neither {key} nor 3-D M-RoPE "
                             f"position_ids were passed; pass the {key} returned by the processor "
                             f"(and mm_token_type_ids)")
    return out


def _internvl_grid(core, masks: dict, stash: dict) -> list[Modality]:
    m = masks["image"]
    vc = core.config.vision_config
    size = vc.image_size if isinstance(vc.image_size, int) else vc.image_size[0]
    patch = vc.patch_size if isinstance(vc.patch_size, int) else vc.patch_size[0]
    side = int(round(int(size) // int(patch) * float(core.config.downsample_ratio)))
    per = side * side
    run, local, lengths = _runs(m)
    if bool((lengths % per != 0).any()):
        raise ValueError(f"an image-token run of length {int(lengths[lengths % per != 0][0])} is not a "
                         f"multiple of the {per} tokens per InternVL tile")
    rem = local % per
    grid = torch.stack([local // per, rem // side, rem % side], -1) * m.unsqueeze(-1)
    return [Modality(m, grid, run)]


@dataclass(frozen=True)
class Adapter:
    """Plain data: how to find the visual tokens and their grid in one model family."""

    token_ids: dict  # modality name -> config attribute holding its placeholder token id
    grid: Callable
    stash_keys: tuple = ()


ADAPTERS: dict[str, Adapter] = {
    "LlavaModel": Adapter({"image": "image_token_id"}, _llava_grid, ("image_sizes",)),
    "Qwen2VLModel": Adapter({"image": "image_token_id", "video": "video_token_id"}, _qwen_grid,
                            ("image_grid_thw", "video_grid_thw", "position_ids")),
    "Qwen2_5_VLModel": Adapter({"image": "image_token_id", "video": "video_token_id"}, _qwen_grid,
                               ("image_grid_thw", "video_grid_thw", "position_ids")),
    "InternVLModel": Adapter({"image": "image_token_id"}, _internvl_grid),
}
SUPPORTED = ("LlavaForConditionalGeneration", "Qwen2VLForConditionalGeneration",
             "Qwen2_5_VLForConditionalGeneration", "InternVLForConditionalGeneration",
             *ADAPTERS)


# --------------------------------------------------------------------------------------------
# per-instance state
# --------------------------------------------------------------------------------------------
@dataclass
class PruningConfig:
    """Plain data: what `apply` was asked for."""

    method: str = "evtp"
    keep: Any = 0.2
    position_mode: str = "original"
    score_layer: int = 2
    score_query: str = "last"
    seed: int | None = 0
    options: dict = field(default_factory=dict)


@dataclass
class _Prefill:
    cache: Any  # weakref to the KV cache that holds the pruned prompt
    full_len: int
    pruned_len: int
    mask: torch.Tensor  # (B, L') attention mask of the pruned prompt
    next_position: torch.Tensor  # (B,)


@dataclass
class _State:
    config: PruningConfig
    core: Any
    lm: Any
    adapter: Adapter
    handles: list = field(default_factory=list)
    stash: dict | None = None
    busy: bool = False
    prefill: _Prefill | None = None
    last: PrunedInputs | None = None
    timings_ms: dict = field(default_factory=dict)


def _find_core(model):
    def match(mod):
        for cls in type(mod).__mro__:
            if cls.__name__ in ADAPTERS:
                return ADAPTERS[cls.__name__]
        return None

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a transformers model instance, got {type(model).__name__}")
    ad = match(model)
    if ad is not None:
        return model, ad
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.nn.Module) and (ad := match(inner)) is not None:
        return inner, ad
    raise TypeError(f"evtp.integrations.transformers does not support {type(model).__name__}; supported: "
                    f"{', '.join(SUPPORTED)}. For other models call "
                    f"evtp.integrations.generic.prune_inputs_embeds from the model's code "
                    f"(see docs/recipes.md)")


def _check_config(cfg: PruningConfig, n_layers: int):
    check_request(cfg.method, cfg.keep, cfg.options)
    if cfg.position_mode not in POSITION_MODES:
        raise ValueError(f"position_mode={cfg.position_mode!r}; expected one of {POSITION_MODES}")
    if isinstance(cfg.score_layer, bool) or not isinstance(cfg.score_layer, int) \
            or not 1 <= cfg.score_layer <= n_layers:
        raise ValueError(f"score_layer={cfg.score_layer!r}: must be an int in [1, {n_layers}] (the "
                         f"attention of decoder layer score_layer - 1 scores the tokens, FastV's K)")
    if cfg.score_query not in SCORE_QUERIES:
        raise ValueError(f"score_query={cfg.score_query!r}; expected one of {SCORE_QUERIES}")
    if cfg.seed is not None and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(cfg.seed).__name__}")


def apply(model, method: str = "evtp", keep=0.2, *, position_mode: str = "original",
          score_layer: int = 2, score_query: str = "last", seed: int | None = 0, **options):
    """Patch ``model`` (this instance only) to prune visual tokens before its language model.

    Args:
        model: a supported transformers instance (``LlavaForConditionalGeneration``,
            ``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``,
            ``InternVLForConditionalGeneration`` or their inner ``*Model``).
        method: a key of `evtp.METHODS`.
        keep: ratio in (0, 1] or int count, applied to every image / video separately; or a
            `CoverageTarget` for adaptive methods.
        position_mode: "original" (default): kept tokens keep the position ids they had in the
            full sequence (Qwen M-RoPE: their full-grid (t, h, w) positions), text after an image
            keeps its position; "contiguous": the pruned sequence is renumbered 0, 1, 2, ...
        score_layer, score_query: for score-based methods only: scores are the head-mean
            attention of decoder layer ``score_layer - 1`` (eager, full sequence, FastV's K) from
            the last real token ("last") or averaged over all real query tokens ("mean").
        seed: seed of the generator handed to random methods (None: torch's global RNG).
        **options: options of the selection method (see ``evtp.METHODS[method].options``).
    Returns:
        the same ``model``. Calling `apply` again replaces the settings.
    """
    core, adapter = _find_core(model)
    lm = getattr(core, "language_model", None)
    if lm is None or not hasattr(lm, "layers"):
        raise TypeError(f"{type(core).__name__} has no language_model with decoder layers")
    cfg = PruningConfig(method, keep, position_mode, score_layer, score_query, seed, dict(options))
    _check_config(cfg, len(lm.layers))
    if hasattr(model, _ATTR):
        remove(model)
    state = _State(cfg, core, lm, adapter)
    state.handles.append(core.register_forward_pre_hook(_core_hook(state), with_kwargs=True))
    state.handles.append(lm.register_forward_pre_hook(_lm_hook(state), with_kwargs=True))
    if model is not core:
        state.handles.append(model.register_forward_pre_hook(_top_hook(state), with_kwargs=True))
    setattr(model, _ATTR, state)
    return model


def remove(model):
    """Undo `apply`: remove the hooks and the state; ``model`` behaves exactly as before."""
    state = getattr(model, _ATTR, None)
    if state is None:
        raise ValueError("model is not patched by evtp.integrations.transformers.apply")
    for h in state.handles:
        h.remove()
    delattr(model, _ATTR)
    return model


def is_applied(model) -> bool:
    return hasattr(model, _ATTR)


def last_pruning(model) -> PrunedInputs | None:
    """The `PrunedInputs` of the latest pruned prefill (kept indices, counts, selection time)."""
    state = getattr(model, _ATTR, None)
    if state is None:
        raise ValueError("model is not patched by evtp.integrations.transformers.apply")
    return state.last


# --------------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------------
def _bind(module, args, kwargs) -> dict:
    if not args:
        return dict(kwargs)
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    out = dict(bound.arguments)
    out.update(out.pop("kwargs", {}) or {})
    return out


def _top_hook(state: _State):
    def hook(module, args, kwargs):
        if _bind(module, args, kwargs).get("labels") is not None:
            raise ValueError("labels are not supported while evtp pruning is applied (the sequence the "
                             "language model sees is shorter than the labels); call "
                             "evtp.integrations.transformers.remove(model) before training")
        return None

    return hook


def _core_hook(state: _State):
    def hook(module, args, kwargs):
        if state.busy:
            return None
        kw = _bind(module, args, kwargs)
        state.stash = {"input_ids": kw.get("input_ids")}
        for key in state.adapter.stash_keys:
            state.stash[key] = kw.get(key)
        return None

    return hook


def _visual_masks(state: _State, stash: dict | None, embeds: torch.Tensor) -> dict:
    ids = stash.get("input_ids") if stash else None
    cfg = state.core.config
    masks = {}
    for name, attr in state.adapter.token_ids.items():
        tok = getattr(cfg, attr, None)
        if tok is None:
            masks[name] = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        elif ids is not None and tuple(ids.shape) == tuple(embeds.shape[:2]):
            masks[name] = (ids == tok).to(embeds.device)
        else:  # inputs_embeds given instead of input_ids: compare with the placeholder embedding
            ref = state.core.get_input_embeddings()(torch.tensor(tok, device=embeds.device))
            masks[name] = (embeds == ref.to(embeds.dtype)).all(-1)
    return masks


def _lm_hook(state: _State):
    def hook(module, args, kwargs):
        if state.busy:
            return None
        kw = _bind(module, args, kwargs)
        embeds = kw.get("inputs_embeds")
        stash, state.stash = state.stash, None
        if embeds is None:
            return None
        masks = _visual_masks(state, stash, embeds)
        if any(bool(m.any()) for m in masks.values()):
            return (), _prefill(state, module, kw, embeds, masks, stash or {})
        if state.prefill is not None and kw.get("past_key_values") is not None \
                and kw["past_key_values"] is state.prefill.cache():
            return (), _decode(state, kw, embeds)
        return None

    return hook


def _prefill(state: _State, lm, kw: dict, embeds: torch.Tensor, masks: dict, stash: dict) -> dict:
    cfg = state.config
    past = kw.get("past_key_values")
    if past is not None and past.get_seq_length() > 0:
        raise ValueError("evtp pruning cannot add visual tokens to a non-empty KV cache; start the "
                         "multimodal prompt with a fresh cache")
    mask = kw.get("attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
        raise ValueError("evtp pruning needs a 2-D padding attention_mask (or None); 4-D / prepared "
                         "masks (e.g. static caches in generate) are not supported")
    B, L, _ = embeds.shape
    real = torch.ones(B, L, dtype=torch.bool, device=embeds.device) if mask is None else mask.bool()
    mods = state.adapter.grid(state.core, masks, stash)
    visual = torch.zeros(B, L, dtype=torch.bool, device=embeds.device)
    for mod in mods:
        visual |= mod.mask
    scores = None
    t0 = time.perf_counter()
    if METHODS[cfg.method].wants_scores(cfg.options):
        scores = _attention_scores(state, lm, kw, embeds, real)
    t1 = time.perf_counter()
    gen = None
    if cfg.seed is not None:
        gen = torch.Generator(device=embeds.device).manual_seed(cfg.seed)
    keep = ~visual
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
    state.timings_ms = {"scores": (t1 - t0) * 1e3, "selection": (t2 - t1) * 1e3,
                        "pack": (time.perf_counter() - t2) * 1e3}
    state.last = out
    kw["inputs_embeds"] = out.inputs_embeds
    kw["attention_mask"] = out.attention_mask
    kw["position_ids"] = out.position_ids
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


def _decode(state: _State, kw: dict, embeds: torch.Tensor) -> dict:
    pf = state.prefill
    past = kw["past_key_values"]
    B, n, _ = embeds.shape
    done = past.get_seq_length() - pf.pruned_len  # tokens appended after the pruned prompt
    if B != pf.mask.shape[0] or done < 0:
        raise ValueError("this call does not continue the pruned prompt held in past_key_values")
    mask = kw.get("attention_mask")
    if mask is None:
        tail = torch.ones(B, done + n, dtype=pf.mask.dtype, device=embeds.device)
    elif isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == pf.full_len + done + n:
        tail = mask[:, pf.full_len:].to(pf.mask.dtype)
    elif isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == pf.pruned_len + done + n:
        tail = mask[:, pf.pruned_len:].to(pf.mask.dtype)  # already in pruned coordinates
    else:
        raise ValueError(f"attention_mask of shape {tuple(mask.shape) if hasattr(mask, 'shape') else mask} "
                         f"does not continue the pruned prompt (full length {pf.full_len}, "
                         f"pruned {pf.pruned_len}, {done} tokens since)")
    kw["attention_mask"] = torch.cat([pf.mask.to(embeds.device), tail.to(embeds.device)], 1)
    pos = kw.get("position_ids")
    if state.config.position_mode == "contiguous" or pos is None:
        new = pf.next_position.to(embeds.device).unsqueeze(1) + done + torch.arange(n, device=embeds.device)
        if pos is not None and pos.dim() == 3:
            new = new.unsqueeze(0).expand(pos.shape[0], B, n)
        kw["position_ids"] = new.to(pos.dtype if pos is not None else torch.long)
    return kw


class _Stop(Exception):
    pass


def _attention_scores(state: _State, lm, kw: dict, embeds: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """FastV-style importance: head-mean attention of layer ``score_layer - 1`` on the full sequence.

    Returns:
        (B, L) float scores (attention received from the last real token, or the mean over real
        query tokens).
    """
    cfg = state.config
    layer = lm.layers[cfg.score_layer - 1]
    attn = getattr(layer, "self_attn", None)
    if attn is None:
        raise TypeError(f"{type(layer).__name__} has no self_attn; score-based methods are not supported here")
    captured = {}

    def grab(module, args, output):
        captured["w"] = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        raise _Stop

    handle = attn.register_forward_hook(grab)
    conf = lm.config
    old = conf._attn_implementation
    state.busy = True
    try:
        conf._attn_implementation = "eager"
        lm(inputs_embeds=embeds, attention_mask=kw.get("attention_mask"),
           position_ids=kw.get("position_ids"), use_cache=False)
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
