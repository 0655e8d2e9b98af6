"""Importance scores for the score-based selection methods on the reference model (``score_source``).

`evtp.select_tokens`' score-based methods (``attention``, and ``dpp``, ``dart`` or
``evtp[saliency_weight]`` where their options ask for scores) rank visual tokens by a per-token
importance. Three sources:

* ``"vit"``: the attention each token receives in the ViT's last block (VisionZip-style; computed
  with the ViT pass). On the synthetic scenes this is close to an object oracle: the ViT is
  trained to tell objects from the plain background, which is ~90 % of the tokens.
* ``"lm"`` (FastV-style, `lm_attention_scores`): what a real MLLM offers before generating. A first
  pass of the language model over the full, unpruned prefill ``[PAD]* [BOS] words <visual
  tokens>`` through its first K layers (``score_layer``; FastV's K = 2) with eager attention; the
  score of visual token i is layer K's attention from the query position to i, averaged over
  heads. The query is the **last instruction word**: the last text token of the prompt, which has
  read the whole instruction, as FastV's "last token" in LLaVA is the last prompt token after the
  image. ``[SEG]`` is not available at that point: it is the first *generated* token, and its
  attention exists only after a full-token prefill and one decode step (the cost pruning is
  meant to save). The instruction precedes the visual tokens here, and the prefix-LM mask lets it
  attend to them. Weights are the softmax's own (the visual tokens' share of the query's
  attention; they sum to <= 1 over a row). The pruned forward then runs from the LM's input as for
  every method, so the pass is an extra cost: `ReferenceIVS.run` times it as ``score_pass`` and
  counts it in ``selection``.
* ``"noisy"`` (a control, `noisy_scores`): the ViT scores plus seeded Gaussian noise,
  ``s + sigma * std(s) * z`` per sample (``score_noise`` = sigma; 0 gives the ViT scores exactly),
  so that the ranking is degraded by a stated amount.

Shapes: visual (B, N, Dl) -> scores (B, N) float32.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

SCORE_SOURCES = ("vit", "lm", "noisy")


def eager_decoder_layers(lm: nn.Module, n_layers: int) -> list[nn.Module]:
    """The first ``n_layers`` decoder layers of the transformers decoder ``lm``
    (``Qwen2VLTextModel``) with eager attention, the implementation that returns the attention
    weights. Attention modules pick their implementation from their ``config`` only (no per-call
    choice), so each layer comes as a shallow copy that shares every parameter, buffer, submodule
    and hook with the live layer but whose attention module reads a copy of ``lm.config`` set to
    eager. The live model (its layers, its config) is never changed: other calls may run it at the
    same time, and an exception leaves nothing to restore."""
    if not 1 <= n_layers <= len(lm.layers):
        raise ValueError(f"score_layer must be in 1 .. {len(lm.layers)} (the LM's layers), got {n_layers}")
    config = copy.deepcopy(lm.config)
    config._attn_implementation = "eager"
    views = []
    for layer in list(lm.layers)[:n_layers]:
        attention = copy.copy(layer.self_attn)
        attention.config = config
        view = copy.copy(layer)
        view._modules = {**layer._modules, "self_attn": attention}
        views.append(view)
    return views


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask (True = may attend) as eager attention takes it: added to the
    scores, 0 where allowed and the dtype's minimum elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


@torch.no_grad()
def lm_attention_scores(model, visual: torch.Tensor, text_ids: list[list[int]], layer: int) -> torch.Tensor:
    """FastV-style scores from the reference model's own LM (see the module docstring).

    Args:
        model: a `ReferenceIVS`.
        visual: (B, N, Dl) all projected visual tokens.
        text_ids: B instruction token-id lists (padded by `ReferenceIVS.build_inputs`).
        layer: K >= 1, the LM layers the pass runs; the scores are layer K's attention.
    Returns:
        (B, N) float32: the head-averaged attention from the query to each visual token.
    """
    inputs = model.build_inputs(visual, None, text_ids, append_seg=False)
    # the last instruction word: the same index in every row (the instruction is left-padded)
    vs, n = inputs.visual_start, visual.shape[1]
    query = vs - 1
    layers = eager_decoder_layers(model.lm, layer)
    # what Qwen2VLTextModel.forward does for a prepared 4-D mask and (3, B, L) M-RoPE positions,
    # over the first K layers: the rotary embeddings once, then each layer with the same mask
    hidden = inputs.embeds
    mask = additive_mask(model.lm_mask(inputs.attention_mask, hidden.shape[1]), hidden.dtype)
    rotary = model.lm.rotary_emb(hidden, inputs.position_ids)
    for decoder_layer in layers[:-1]:
        hidden = decoder_layer(hidden, attention_mask=mask, position_embeddings=rotary)
    # layer K's attention (on its pre-norm input, the layer's first step) returns (output, weights)
    last = layers[-1]
    _, weights = last.self_attn(hidden_states=last.input_layernorm(hidden), attention_mask=mask,
                                position_embeddings=rotary)
    return weights[:, :, query, vs:vs + n].mean(1).float()  # weights (B, heads, L, L)


def noisy_scores(scores: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """scores (B, N) -> ``scores + sigma * std(scores) * z``, z ~ N(0, 1) drawn from a generator
    seeded with ``seed`` (the same seed gives the same noise); std per row over its N tokens."""
    z = torch.randn(scores.shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)
    spread = scores.float().std(dim=-1, keepdim=True, correction=0)
    return scores.float() + sigma * spread * z.to(scores.device)
