"""The reference IVS model: ViT -> projector -> [pruning hook] -> decoder-only LM -> [SEG] -> mask decoder.

The architecture follows real instructed-segmentation MLLMs (LISA, Sa2VA) at a size that trains on
a CPU (see docs/reference_model.md):

* **Vision encoder**: a ViT over 16 x 16 patches (a 16 x 16 token grid per frame) with a
  convolutional stem, run on every frame.
* **Projector**: a 2-layer MLP from ViT width to LM width (the visual tokens the LM reads).
* **Pruning hook** (`select_visual_tokens`): between projector and LM, any `evtp.select_tokens`
  method. Kept tokens keep their original position ids (default) or are re-indexed contiguously.
* **Language model**: a decoder-only LM, transformers' ``Qwen2VLTextModel`` (Qwen2-VL's multimodal
  RoPE: a visual token at (frame, row, column), text at (i, i, i)), that reads
  ``[BOS] instruction visual tokens`` and emits ``[SEG]``; the ``[SEG]`` hidden state is the prompt.
  The prefix attends to itself bidirectionally (PaliGemma's prefix-LM mask), so every visual token
  can compare itself with all the others; ``[SEG]`` and the tokens after it attend causally.
* **Mask decoder** (promptable, SAM style): from the ``[SEG]`` hidden state it makes a point prompt
  (a heat map over the first frame's 16 x 16 grid: a position term read from ``[SEG]`` plus a
  pointer, ``[SEG]``'s query against the kept visual tokens' LM input and output states, spread to
  the nearest kept token) and
  segments, at 1/4 resolution, full-resolution features that do not depend on pruning (the ViT
  features of every frame plus a convolutional pixel stem). Later video frames are prompted by the
  previous frame's mask (a memory, as SAM2 propagates). It has no access to the instruction other
  than through ``[SEG]``, and it cannot compare objects globally, so deciding *which* object is the
  language model's job.

Shapes (B batch, T frames, F LM frames, G = 16 grid side, N = F * G * G visual tokens):

    frames (B, T, 3, S, S) float in [0, 1]   ->  vit (B, T, G*G, Dv)
    visual (B, N, Dl), positions (N, 3) or (N, 2)
    kept (B, K) long (-1 padding)             ->  LM input (B, 1 + K + L, Dl)
    h_seg (B, Dl)                             ->  heat (B, G*G), mask logits (B, T, S/4, S/4)
"""
from __future__ import annotations

import math
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evtp.data.types import Sample
from evtp.models.base import Prediction, PredictOptions
from evtp.models.reference.config import (N_COLOR_CLASSES, N_SHAPE_CLASSES, READOUTS, ReferenceConfig,
                                          WordTokenizer)
from evtp.models.reference.modules import ViT, MaskDecoder, language_model, memory_map, token_heat
from evtp.models.reference.scores import SCORE_SOURCES, additive_mask, lm_attention_scores, noisy_scores
from evtp.selection.options import option
from evtp.pruning import renumber_positions, resolve_budget


@dataclass
class LMInputs:
    """The LM's input sequence ``[PAD]* [BOS] instruction <kept visual tokens> [SEG]``.

    Attributes:
        embeds: (B, L, Dl) input embeddings.
        position_ids: (3, B, L) M-RoPE positions (t, h, w).
        attention_mask: (B, L) long, 1 = real token.
        visual_start: index of the first visual token (the same in every row).
        last: (B,) long, index of the final token (``[SEG]`` if appended, else the last visual token
            or, with none, the last instruction word).
    """

    embeds: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    visual_start: int
    last: torch.Tensor

    def without_last(self) -> "LMInputs":
        """The same sequence without its final token (the prefill before decoding ``[SEG]``)."""
        return LMInputs(self.embeds[:, :-1], self.position_ids[..., :-1], self.attention_mask[:, :-1],
                        self.visual_start, self.last - 1)


@dataclass
class Prompt:
    """The mask decoder's prompt read from the LM.

    Attributes:
        heat: (B, G*G) heat logits over the first frame's grid (position term + the per-token
            logits spread by `token_heat`).
        token_logits: (B, K) per kept visual token: its own target logit + the ``[SEG]`` pointer.
    """

    heat: torch.Tensor
    token_logits: torch.Tensor


@dataclass
class TrainOutputs:
    """`ReferenceIVS.forward_train`'s outputs (full visual tokens, teacher forcing).

    Attributes:
        masks: (B, T, S/4, S/4) mask logits.
        heat: (B, G*G) heat logits.
        seg_logits: (B, V) the LM's next-token logits before ``[SEG]``.
        vit_aux: (B, T, G*G, C) the ViT head's per-patch attribute logits / size.
        token_logits: (B, N) per visual token (on the target?).
        role_logits: (B, N, 2) member of the reference set / anchor, from ``cfg.role_layer``
            (None without a role head).
        align_logits: (A, B, N, V) word logits of the visual tokens at the A depths of
            ``cfg.align_layers`` (None without alignment).
        point_logits: (B, 2, bins) the LM's logits over the location tokens ``<x*>`` (read at
            ``[SEG]``) and ``<y*>`` (read at the teacher-forced ``<x*>``), or None without "point".
        token_location_logits: (A + 1, B, N, 2, bins) training-only: every visual token's state at
            the depths of ``cfg.align_layers`` and after the last layer, read through ``lm_head``
            over the ``<x*>`` and ``<y*>`` tokens (trained toward the token's own cell, so that
            location words are what visual states carry from the LM's input on, where ``[SEG]``
            can attend to them), or None.
        seg_attention: (B, N) training-only: ``[SEG]``'s attention over the visual tokens in the
            first head of the last LM layer (``forward_train(..., seg_attention=True)``), or None.
        seg_prompt: (B, d) the "seg" readout's prompt, ``[SEG]``'s state through ``seg_proj``, or
            None without "seg".
        seg_masks: (B, T, S/4, S/4) the "seg" readout's mask logits from that prompt (frame t > 0
            also prompted by frame t-1's ground truth), or None without "seg".
    """

    masks: torch.Tensor
    heat: torch.Tensor
    seg_logits: torch.Tensor
    vit_aux: torch.Tensor
    token_logits: torch.Tensor
    role_logits: torch.Tensor | None = None
    align_logits: torch.Tensor | None = None
    point_logits: torch.Tensor | None = None
    token_location_logits: torch.Tensor | None = None
    seg_attention: torch.Tensor | None = None
    seg_prompt: torch.Tensor | None = None
    seg_masks: torch.Tensor | None = None


@dataclass(frozen=True)
class ReferencePredictOptions(PredictOptions):
    """`ReferenceIVS.predict`'s own keywords, checked by `evtp eval` before the model is built:
    ``readout`` (None: the first readout the weights were trained for) and ``position_mode`` of
    the kept visual tokens ("shuffled" permutes their position ids: the leak control).
    ``score_source``: where score-based methods get their scores (`evtp.models.reference.scores`:
    "vit", "lm" with ``score_layer`` K, "noisy" with ``score_noise`` sigma); ``score_layer`` and
    ``score_noise`` are refused with another source (they would be ignored)."""

    readout: Literal[READOUTS] | None = None
    position_mode: Literal["original", "contiguous", "shuffled"] = "original"
    score_source: Literal[SCORE_SOURCES] = "vit"
    score_layer: int = option(2, low=1)
    score_noise: float = option(1.0, low=0)

    def check(self) -> None:
        defaults = self.defaults()
        for name, source in (("score_layer", "lm"), ("score_noise", "noisy")):
            if getattr(self, name) != defaults[name] and self.score_source != source:
                raise ValueError(f"predict option {name}={getattr(self, name)!r} is read by score_source="
                                 f"{source!r} only, and score_source is {self.score_source!r}")


# the one home of the score options' defaults: `run` / `predict`, `evtp bench reference`'s config
# and flags read them from here
SCORE_DEFAULTS = {name: ReferencePredictOptions.defaults()[name]
                  for name in ("score_source", "score_layer", "score_noise")}


class ReferenceIVS(nn.Module):
    """The reference model (an `evtp.models.IVSModel`): see the module docstring."""

    name = "reference"
    predict_options: ClassVar[type] = ReferencePredictOptions

    def __init__(self, cfg: ReferenceConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ReferenceConfig()
        self.tok = WordTokenizer(cfg.token_vocab)
        self.vit = ViT(cfg)
        # the projector ends in a LayerNorm and the word embeddings start at unit scale, so that
        # visual and text tokens enter the LM's residual stream at comparable magnitudes
        self.projector = nn.Sequential(nn.Linear(cfg.vit_dim * cfg.temporal_patch, cfg.lm_dim), nn.GELU(),
                                       nn.Linear(cfg.lm_dim, cfg.lm_dim), nn.LayerNorm(cfg.lm_dim))
        self.frame_embed = nn.Parameter(torch.zeros(max(len(cfg.lm_frames), 1), cfg.lm_dim))
        self.lm = language_model(cfg, self.tok)
        nn.init.normal_(self.lm.get_input_embeddings().weight, std=1.0)
        self.lm_head = nn.Linear(cfg.lm_dim, len(cfg.token_vocab), bias=False)
        self.decoder = MaskDecoder(cfg)
        # the "seg" readout: LISA's text_hidden_fcs and a promptable decoder whose only prompt it is
        self.seg_proj = self.seg_decoder = None
        if "seg" in cfg.readouts:
            from evtp.models.reference.prompt_decoder import PromptableMaskDecoder, seg_projection

            self.seg_proj, self.seg_decoder = seg_projection(cfg), PromptableMaskDecoder(cfg)
        # training-only dense head on the ViT: per-patch colour, shape and size of the object under
        # the patch (stands in for the pretraining of real MLLMs' vision encoders)
        self.vit_aux = nn.Linear(cfg.vit_dim, N_COLOR_CLASSES + N_SHAPE_CLASSES + 1)
        # training-only head on the LM's visual-token states: "is this token on the target?"
        self.token_aux = nn.Linear(cfg.lm_dim, 1)
        # training-only head on an intermediate layer: (member of the reference set, anchor)
        self.role_aux = nn.Linear(cfg.lm_dim, 2) if cfg.role_layer else None
        self._memo: dict | None = None  # `reuse_encodings`
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    # -- pieces ---------------------------------------------------------------------------------
    def lm_frame_ids(self, T: int) -> list[int]:
        """Frames the LM reads for a clip of T frames (all of ``cfg.lm_frames`` below T; T = 1: [0])."""
        if T == 1:
            return [0]
        ids = [f for f in self.cfg.lm_frames if f < T]
        if not ids:
            raise ValueError(f"a video of {T} frames has none of the LM frames {self.cfg.lm_frames}")
        return ids

    def token_positions(self, n_frames: int, device=None) -> torch.Tensor:
        """Grid coordinates of the LM's visual tokens: (N, 2) (row, col) for one frame, else
        (N, 3) (frame, row, col) with frame = index among the LM frames."""
        g = self.cfg.grid
        r, c = torch.meshgrid(torch.arange(g, device=device), torch.arange(g, device=device), indexing="ij")
        rc = torch.stack([r.reshape(-1), c.reshape(-1)], -1)
        if n_frames == 1:
            return rc
        f = torch.arange(n_frames, device=device).repeat_interleave(g * g)[:, None]
        return torch.cat([f, rc.repeat(n_frames, 1)], -1)

    @contextmanager
    def reuse_encodings(self):
        """Within this context, `predict` and `run` compute the pruning-independent work (the ViT
        features and scores, the mask decoder's image features) once per frames and reuse it for
        every further call on the same frames: `predict` on the same ``sample.frames`` array, `run`
        on the same tensor. Outputs are identical; the timings of a reusing call leave that work
        out, so `evtp bench reference` reuses only on its untimed samples."""
        self._memo = {}
        try:
            yield self
        finally:
            self._memo = None

    def _memoized(self, frames: torch.Tensor, key: tuple, compute):
        """``compute()``, remembered under ``key`` for ``frames`` inside `reuse_encodings`."""
        memo = self._memo
        if memo is None:
            return compute()
        if memo.get("frames") is not frames:
            memo.clear()
            memo["frames"] = frames
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def encode_frames(self, frames: torch.Tensor, want_scores: bool = False):
        """frames (B, T, 3, S, S) in [0, 1] -> vit features (B, T, G*G, Dv), scores (B, T, G*G) or None."""
        B, T = frames.shape[:2]
        x = ((frames.flatten(0, 1) - self.pixel_mean) / self.pixel_std).to(self.pixel_mean.dtype)
        feats, rec = self.vit(x, want_scores)
        return feats.view(B, T, *feats.shape[1:]), None if rec is None else rec.view(B, T, -1)

    def visual_tokens(self, vit: torch.Tensor) -> torch.Tensor:
        """vit (B, T, G*G, Dv) -> projected LM-frame tokens (B, N, Dl) (see ``cfg.temporal_patch``)."""
        T = vit.shape[1]
        ids = self.lm_frame_ids(T)
        x = vit[:, ids]
        if self.cfg.temporal_patch == 2:
            a = [max(min(f, T - 2), 0) for f in ids]
            b = [min(i + 1, T - 1) for i in a]
            x = torch.cat([x, vit[:, b] - vit[:, a]], -1)  # zero for T = 1
        return self.projector(x.flatten(1, 2))

    def build_inputs(self, visual: torch.Tensor, kept: torch.Tensor | None, text_ids: list[list[int]],
                     *, position_mode: str = "original", append_seg: bool = True,
                     extra_ids: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """Assemble the LM input: ``[PAD]* [BOS] instruction <kept visual tokens> [SEG]``.

        The instruction comes first (left-padded to the batch's longest), so that every visual token
        can attend to it; the visual tokens and ``[SEG]`` then sit at the same indices in every row.

        Args:
            visual: (B, N, Dl) projected visual tokens (all of them).
            kept: (B, K) long kept indices (-1 padding), None = all tokens, or a (B, 0) tensor for
                no visual tokens at all.
            text_ids: B lists of instruction token ids.
            position_mode: "original": kept tokens keep their M-RoPE positions
                ``s + 1 + (frame, row, column)`` (s = the instruction's last position);
                "contiguous": re-indexed ``s+1 .. s+K``, every kept token at ``(s+i, s+i, s+i)``,
                as text; "shuffled": the original positions permuted among the kept tokens of
                each row (a control: the LM loses where each token is).
            append_seg: append the ``[SEG]`` token (training / single-pass inference).
            extra_ids: (B, E) long tokens after ``[SEG]`` (the location tokens, teacher-forced),
                at the positions after ``[SEG]``'s.
            generator: the permutation's random generator for "shuffled".
        Returns:
            `LMInputs`.
        """
        B, N, D = visual.shape
        dev = visual.device
        if kept is None:
            kept = torch.arange(N, device=dev).expand(B, N)
        K = kept.shape[1]
        valid = kept >= 0
        idx = kept.clamp_min(0)
        vis = visual.gather(1, idx[..., None].expand(-1, -1, D))
        per_frame = self.cfg.grid * self.cfg.grid
        vis = vis + self.frame_embed[(idx // per_frame).clamp_max(self.frame_embed.shape[0] - 1)]
        heads = [[self.tok.bos] + list(t) for t in text_ids]
        L = max(len(h) for h in heads)
        tid = torch.full((B, L), self.tok.pad, dtype=torch.long, device=dev)
        tmask = torch.zeros((B, L), dtype=torch.long, device=dev)
        tpos = torch.zeros((B, L), dtype=torch.long, device=dev)
        for b, h in enumerate(heads):
            tid[b, L - len(h):] = torch.tensor(h, dtype=torch.long, device=dev)
            tmask[b, L - len(h):] = 1
            tpos[b, L - len(h):] = torch.arange(len(h), device=dev)
        text_end = tpos[:, -1:]  # (B, 1) position of the last instruction word
        tpos = tpos.expand(3, B, L)  # text at (i, i, i)
        if position_mode not in ("original", "contiguous", "shuffled"):
            raise ValueError(f"position_mode must be 'original', 'contiguous' or 'shuffled', got {position_mode!r}")
        if position_mode == "shuffled":
            idx = _shuffle_valid(idx, valid, generator)
        if position_mode == "contiguous":
            vpos = renumber_positions(idx.unsqueeze(0), valid, "contiguous", start=text_end[:, 0] + 1)[0]
            vpos, seg_pos = vpos.expand(3, B, K), (text_end + valid.sum(1, keepdim=True) + 1).expand(3, B, 1)
        else:
            g = self.cfg.grid
            vpos = text_end + 1 + torch.stack([idx // per_frame, idx % per_frame // g, idx % g])
            seg_pos = (text_end + 1 + max(g, N // per_frame)).expand(3, B, 1)
        emb_layer = self.lm.get_input_embeddings()
        parts, pos, attn = [emb_layer(tid), vis.to(emb_layer.weight.dtype)], [tpos, vpos], [tmask, valid.long()]
        if append_seg:
            parts.append(emb_layer(torch.full((B, 1), self.tok.seg, dtype=torch.long, device=dev)))
            pos.append(seg_pos)
            attn.append(torch.ones((B, 1), dtype=torch.long, device=dev))
            if extra_ids is not None:
                E = extra_ids.shape[1]
                parts.append(emb_layer(extra_ids))
                pos.append(seg_pos + torch.arange(1, E + 1, device=dev))
                attn.append(torch.ones((B, E), dtype=torch.long, device=dev))
        embeds, pos, attn = torch.cat(parts, 1), torch.cat(pos, -1), torch.cat(attn, 1)
        last = torch.full((B,), embeds.shape[1] - 1, dtype=torch.long, device=dev)
        return LMInputs(embeds, pos, attn, L, last)

    def lm_mask(self, attn: torch.Tensor, prefix_len: int) -> torch.Tensor:
        """Attention mask for a full (prefill or training) pass.

        attn (B, L) long (1 = real token) -> a 4-D boolean mask (B, 1, L, L) (True = may attend),
        PaliGemma's prefix-LM mask: positions < ``prefix_len`` attend to every real prefix token,
        later ones (``[SEG]``) causally to everything before them. Padding rows attend to
        themselves only, so that no row is empty.
        """
        L = attn.shape[1]
        ar = torch.arange(L, device=attn.device)
        allowed = (ar[None, :] < prefix_len) | (ar[None, :] <= ar[:, None])  # (L, L) query x key
        m = allowed[None] & attn.bool()[:, None, :]
        return (m | torch.eye(L, dtype=torch.bool, device=attn.device)[None])[:, None]

    def lm_forward(self, inputs: LMInputs, prefix_len: int | None = None, **kw):
        """The LM over `LMInputs` with `lm_mask`'s attention (``prefix_len``: the bidirectional
        prefix's length; default the whole sequence); ``kw`` go to the transformers model."""
        # always pass a mask: without one, transformers infers "packed sequences" from any jump in
        # position_ids (which pruning with original positions creates) and masks across them
        L = inputs.embeds.shape[1]
        mask = self.lm_mask(inputs.attention_mask, L if prefix_len is None else prefix_len)
        if self.lm.config._attn_implementation == "eager":  # eager adds the mask to the scores
            mask = additive_mask(mask, inputs.embeds.dtype)
        return self.lm(inputs_embeds=inputs.embeds, position_ids=inputs.position_ids, attention_mask=mask, **kw)

    def prompt(self, h_seg: torch.Tensor, h_vis: torch.Tensor, visual: torch.Tensor, kept: torch.Tensor,
               positions: torch.Tensor) -> Prompt:
        """The decoder's prompt from the LM's outputs.

        Args:
            h_seg: (B, Dl) ``[SEG]`` state; h_vis: (B, K, Dl) the LM's final states of the kept
                visual tokens; visual: (B, N, Dl) all projected visual tokens; kept: (B, K) long
                (-1 padding); positions: (N, P) grid coordinates of all visual tokens.
        Returns:
            `Prompt`.
        """
        v_in = visual.gather(1, kept.clamp_min(0)[..., None].expand(-1, -1, visual.shape[-1]))
        token_logits = self.token_aux(h_vis).squeeze(-1) + self.decoder.pointer(h_seg, h_vis, v_in)
        heat = self.decoder.prompt(h_seg)
        return Prompt(heat + token_heat(token_logits.float(), kept, positions, self.cfg.grid), token_logits)

    # -- training forward -------------------------------------------------------------------------
    def location_ids(self, axis: str) -> slice:
        """The token-id range of the location tokens of ``axis`` ("x" or "y")."""
        first = self.tok.ids[f"<{axis}0>"]
        return slice(first, first + self.cfg.point_bins)

    def forward_train(self, frames: torch.Tensor, text_ids: list[list[int]], prev_masks: torch.Tensor | None,
                      point_bins: torch.Tensor | None = None, seg_attention: bool = False):
        """Full-token teacher-forced forward.

        Args:
            frames: (B, T, 3, S, S) float in [0, 1].
            text_ids: B instruction token-id lists.
            prev_masks: (B, T, S/4, S/4) float ground-truth masks of the previous frame for frames
                t >= 1 (index t holds frame t-1's mask), or None for images.
            point_bins: (B, 2) long, the target's location (x bin, y bin) to teacher-force (needs
                the "point" readout), or None.
            seg_attention: also return ``[SEG]``'s last-layer attention (runs the LM with eager
                attention, which returns the weights; same outputs).
        Returns:
            `TrainOutputs`.
        """
        B, T = frames.shape[:2]
        vit, _ = self.encode_frames(frames)
        visual = self.visual_tokens(vit)
        n = visual.shape[1]
        extra = None if point_bins is None else point_bins[:, :1] + self.location_ids("x").start
        inp = self.build_inputs(visual, None, text_ids, extra_ids=extra)
        E = 0 if extra is None else 1
        vs = inp.visual_start
        mid = self.role_aux is not None or any(self.cfg.align_layers)
        impl = self.lm.config._attn_implementation
        if seg_attention:
            self.lm.config._attn_implementation = "eager"
        try:
            lm_out = self.lm_forward(inp, prefix_len=inp.embeds.shape[1] - 1 - E, output_hidden_states=mid,
                                     output_attentions=seg_attention)
        finally:
            self.lm.config._attn_implementation = impl
        h = lm_out.last_hidden_state
        ar = torch.arange(B, device=h.device)
        h_seg = h[ar, inp.last - E]
        seg_logits = self.lm_head(h[ar, inp.last - E - 1])
        point_logits = token_location = None
        if extra is not None:
            xs, ys = self.location_ids("x"), self.location_ids("y")
            point_logits = torch.stack([self.lm_head(h_seg)[:, xs], self.lm_head(h[ar, inp.last])[:, ys]], 1)
            depths = [visual if layer == 0 else
                      F.layer_norm(lm_out.hidden_states[layer][:, vs:vs + n], visual.shape[-1:])
                      for layer in self.cfg.align_layers] + [h[:, vs:vs + n]]
            words = [self.lm_head(d) for d in depths]
            token_location = torch.stack([torch.stack([w[..., xs], w[..., ys]], 2) for w in words])
        all_kept = torch.arange(n, device=h.device).expand(B, -1)
        prompt = self.prompt(h_seg, h[:, vs:vs + n], visual, all_kept,
                             self.token_positions(len(self.lm_frame_ids(T)), h.device))
        feats = self.decoder.image_features(vit.flatten(0, 1), frames.flatten(0, 1))
        hw = feats.shape[-1]
        loc = self.decoder.heat_map(prompt.heat, hw)  # (B, 1, h, w)
        if T > 1:
            mem = memory_map(prev_masks[:, 1:].flatten(0, 1)).view(B, T - 1, 1, hw, hw)
            loc = torch.cat([loc[:, None], mem], 1).flatten(0, 1)
        logits = self.decoder.decode(feats, loc).view(B, T, hw, hw)
        out = TrainOutputs(masks=logits, heat=prompt.heat, seg_logits=seg_logits, vit_aux=self.vit_aux(vit),
                           token_logits=prompt.token_logits, point_logits=point_logits,
                           token_location_logits=token_location)
        if seg_attention:
            out.seg_attention = lm_out.attentions[-1][ar, 0, inp.last - E, vs:vs + n]
        if self.seg_decoder is not None:
            out.seg_prompt = self.seg_proj(h_seg)
            out.seg_masks = self.seg_decoder.teacher_forced(vit, frames, out.seg_prompt,
                                                            prev_masks if T > 1 else None)
        if self.role_aux is not None:
            h_mid = lm_out.hidden_states[self.cfg.role_layer][:, vs:vs + n]
            out.role_logits = self.role_aux(F.layer_norm(h_mid, h_mid.shape[-1:]))
        if self.cfg.align_layers:
            states = [visual if layer == 0 else
                      F.layer_norm(lm_out.hidden_states[layer][:, vs:vs + n], visual.shape[-1:])
                      for layer in self.cfg.align_layers]
            out.align_logits = torch.stack([self.word_logits(h) for h in states])
        return out

    def word_logits(self, h: torch.Tensor, fixed_words: bool = False) -> torch.Tensor:
        """Read states through the LM's input word embeddings: h (..., Dl) -> (..., V) logits
        ``h @ E^T / sqrt(Dl)`` (word embeddings are N(0, 1) and states unit-scale, so the raw
        products have a standard deviation of about sqrt(Dl)). ``fixed_words``: no gradient
        reaches E (projector alignment trains the projector alone)."""
        E = self.lm.get_input_embeddings().weight
        if fixed_words:
            E = E.detach()
        return h @ E.T.to(h.dtype) / math.sqrt(E.shape[1])

    # -- inference ------------------------------------------------------------------------------
    def select_visual_tokens(self, visual: torch.Tensor, positions: torch.Tensor, *, method: str,
                             keep, scores: torch.Tensor | None = None, generator=None,
                             **options) -> torch.Tensor:
        """The pruning hook: (B, N, Dl) visual tokens -> (B, K) kept indices (sorted, -1 padded).

        ``keep`` = 1.0 keeps everything (no selection call), ``keep`` = 0 keeps nothing (the
        ablation in which the LM sees no visual tokens), otherwise `evtp.select_tokens`.
        """
        from evtp.selection import METHODS, select_tokens

        B, N, _ = visual.shape
        budget = resolve_budget(keep)
        if budget.keeps_none:
            return torch.empty((B, 0), dtype=torch.long, device=visual.device)
        if budget.keeps_all_of(N):
            return torch.arange(N, device=visual.device).expand(B, N)
        if method not in METHODS:
            raise ValueError(f"unknown selection method {method!r}; known: {', '.join(sorted(METHODS))}")
        if not METHODS[method].wants_scores(options):
            scores = None
        pos = positions.expand(B, *positions.shape)
        return select_tokens(visual.float(), pos, keep=keep, method=method, scores=scores,
                             generator=generator, **options)

    def check_readout(self, readout: str | None) -> str:
        """The readout to use (None: the weights' first); a readout the weights were not trained for
        raises, naming both."""
        from evtp.models.reference.config import READOUTS

        if readout is None:
            return self.cfg.readouts[0]
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        if readout not in self.cfg.readouts:
            raise ValueError(f"these weights were trained for the {' and '.join(map(repr, self.cfg.readouts))} "
                             f"readout(s), not {readout!r}; pass weights trained for {readout!r} or use "
                             f"--readout {self.cfg.readouts[0]}")
        return readout

    @torch.no_grad()
    def run(self, frames: torch.Tensor, text_ids: list[list[int]], *, method: str = "evtp", keep=0.2,
            readout: str | None = None, position_mode: str = "original",
            score_source: str = SCORE_DEFAULTS["score_source"], score_layer: int = SCORE_DEFAULTS["score_layer"],
            score_noise: float = SCORE_DEFAULTS["score_noise"], score_seed: int = 0, generator=None,
            timings: dict | None = None, **options):
        """Inference on a batch: prefill, decode ``[SEG]`` (and the location tokens), then the masks.

        frames (B, T, 3, S, S) in [0, 1] -> dict(masks=(B, T, S, S) bool, kept=(B, K), seg=(B,) bool
        whether the LM's greedy next token was ``[SEG]``, readout, and per readout: "point" ->
        point=(B, 2) float (x, y) in pixels of frame 0, the centre of the cell the LM's location
        tokens name; "seg" -> seg_prompt=(B, d), the projected ``[SEG]`` state that is the
        promptable decoder's only prompt; "dense" -> heat=(B, G*G) and token_logits=(B, K), the
        per-kept-token target logits its prompt is made of).
        ``score_source`` / ``score_layer`` / ``score_noise``: `ReferencePredictOptions`
        (``score_seed`` seeds the "noisy" source's noise); the "lm" source's pass is timed as
        ``score_pass`` and counted in ``selection``.
        """
        readout = self.check_readout(readout)
        self.check_score_options(score_source, score_layer, score_noise)
        tm = timings if timings is not None else {}
        t0 = time.perf_counter()
        B, T = frames.shape[:2]
        from evtp.selection import METHODS

        spec = METHODS.get(method)
        want_scores = spec is not None and spec.wants_scores(options) and not resolve_budget(keep).trivial
        want_vit = want_scores and score_source != "lm"
        vit, rec = self._memoized(frames, ("vit", want_vit), lambda: self.encode_frames(frames, want_scores=want_vit))
        visual = self._memoized(frames, ("visual", want_vit), lambda: self.visual_tokens(vit))
        t1 = time.perf_counter()
        ids = self.lm_frame_ids(T)
        positions = self.token_positions(len(ids), visual.device)
        scores = None
        if want_scores:
            scores = self.selection_scores(frames, rec, visual, text_ids, ids, source=score_source,
                                           layer=score_layer, noise=score_noise, seed=score_seed)
        if want_scores and score_source == "lm":
            tm["score_pass"] = tm.get("score_pass", 0.0) + 1000 * (time.perf_counter() - t1)
        kept = self.select_visual_tokens(visual, positions, method=method, keep=keep, scores=scores,
                                         generator=generator, **options)
        t2 = time.perf_counter()
        full = self.build_inputs(visual, kept, text_ids, position_mode=position_mode, generator=generator)
        vs = full.visual_start
        out = self.lm_forward(full.without_last(), use_cache=True)
        h_last = out.last_hidden_state[:, -1]
        h_vis = out.last_hidden_state[:, vs:vs + kept.shape[1]]
        t3 = time.perf_counter()
        seg_pred = self.lm_head(h_last).argmax(-1) == self.tok.seg
        # decode: feed [SEG] (always: the benchmark asks for a mask) at its position
        step = self.lm(inputs_embeds=full.embeds[:, -1:], position_ids=full.position_ids[..., -1:],
                       attention_mask=full.attention_mask, past_key_values=out.past_key_values, use_cache=True)
        h_seg = step.last_hidden_state[:, -1]
        result = {"kept": kept, "seg": seg_pred, "visual": visual, "positions": positions, "readout": readout}
        if readout == "point":
            result["point"] = self.decode_point(h_seg, step.past_key_values, full)
            t4 = time.perf_counter()
            result["masks"] = self.segment_points(frames, result["point"])
        elif readout == "seg":  # the [SEG] state is the decoder's only prompt: no per-token logit
            t4 = time.perf_counter()
            result["seg_prompt"] = self.seg_proj(h_seg)
            result["masks"] = self.decode_seg_masks(vit, frames, result["seg_prompt"])
        else:
            t4 = time.perf_counter()
            prompt = self.prompt(h_seg, h_vis, visual, kept, positions)
            result.update(masks=self.decode_masks(vit, frames, prompt.heat), heat=prompt.heat,
                          token_logits=prompt.token_logits)
        t5 = time.perf_counter()
        for k, v in (("vision", t1 - t0), ("selection", t2 - t1), ("lm_prefill", t3 - t2),
                     ("decode", t4 - t3), ("mask_decoder", t5 - t4), ("total", t5 - t0)):
            tm[k] = tm.get(k, 0.0) + 1000 * v
        return result

    def check_score_options(self, source: str, layer: int, noise: float) -> None:
        """Refuse score options `ReferencePredictOptions` refuses, and with the "lm" source a
        ``score_layer`` beyond this LM's depth (ValueError naming the choices / the range)."""
        ReferencePredictOptions(score_source=source, score_layer=layer, score_noise=noise)
        if source == "lm" and layer > self.cfg.lm_layers:
            raise ValueError(f"score_layer={layer}: this LM has {self.cfg.lm_layers} layers; choose 1 .. "
                             f"{self.cfg.lm_layers}")

    def selection_scores(self, frames: torch.Tensor, rec: torch.Tensor | None, visual: torch.Tensor,
                         text_ids: list[list[int]], ids: list[int], *, source: str, layer: int,
                         noise: float, seed: int) -> torch.Tensor:
        """The score-based methods' scores (B, N) from ``source`` (`evtp.models.reference.scores`):
        the ViT's attention record ``rec`` (B, T, G*G) at the LM frames ``ids``, the LM's layer-
        ``layer`` attention (remembered within `reuse_encodings`), or the ViT's with noise."""
        if source == "lm":
            key = ("lm_scores", layer, tuple(map(tuple, text_ids)))
            return self._memoized(frames, key, lambda: lm_attention_scores(self, visual, text_ids, layer))
        scores = rec[:, ids].flatten(1)
        return noisy_scores(scores, noise, seed) if source == "noisy" else scores

    def decode_point(self, h_seg: torch.Tensor, cache, full: LMInputs) -> torch.Tensor:
        """Greedy decoding of the location tokens after ``[SEG]``: ``<xI>`` from ``[SEG]``'s state,
        then ``<yJ>`` from ``<xI>``'s (each constrained to its axis's tokens, as grammar-constrained
        decoding does). h_seg (B, Dl) -> (B, 2) float (x, y) pixels, the centre of cell (I, J)."""
        xs, ys = self.location_ids("x"), self.location_ids("y")
        x = self.lm_head(h_seg)[:, xs].argmax(-1)
        B = h_seg.shape[0]
        emb = self.lm.get_input_embeddings()(x[:, None] + xs.start)
        pos = full.position_ids[..., -1:] + 1
        attn = torch.cat([full.attention_mask, full.attention_mask.new_ones((B, 1))], 1)
        h_x = self.lm(inputs_embeds=emb, position_ids=pos, attention_mask=attn, past_key_values=cache,
                      use_cache=True).last_hidden_state[:, -1]
        y = self.lm_head(h_x)[:, ys].argmax(-1)
        cell = self.cfg.image_size / self.cfg.point_bins
        return (torch.stack([x, y], -1).float() + 0.5) * cell

    def segment_points(self, frames: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The frozen exact segmenter at the LM's points: the object under each point in frame 0
        (searched within half a location cell of it), propagated through the clip by `track`.
        frames (B, T, 3, S, S) in [0, 1], points (B, 2) -> masks (B, T, S, S) bool."""
        from evtp.models.reference.segmenter import segment_at, track

        pix = (frames.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
        radius = self.cfg.image_size / self.cfg.point_bins / 2
        out = [track(p, segment_at(p[0], float(x), float(y), radius)) for p, (x, y) in zip(pix, points.tolist())]
        return torch.from_numpy(np.stack(out)).to(frames.device)

    def decode_masks(self, vit: torch.Tensor, frames: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
        """The mask decoder at inference, frame by frame: frame 0 is prompted by the heat map,
        frame t > 0 by frame t-1's predicted mask (dilated, `memory_map`).

        vit (B, T, G*G, Dv), frames (B, T, 3, S, S), heat logits (B, G*G) -> masks (B, T, S, S) bool.
        """
        B, T = frames.shape[:2]
        # keyed on the ViT output it reads (the memo holds that tensor, so its storage stays its own)
        feats = self._memoized(frames, ("decoder_features", vit.data_ptr()),
                               lambda: self.decoder.image_features(vit.flatten(0, 1), frames.flatten(0, 1)))
        hw = feats.shape[-1]
        feats = feats.view(B, T, *feats.shape[1:])
        loc = self.decoder.heat_map(heat, hw)
        logits = []
        for t in range(T):
            lg = self.decoder.decode(feats[:, t], loc)
            logits.append(lg)
            loc = memory_map(torch.sigmoid(lg.float()))
        S = frames.shape[-1]
        logits = torch.stack(logits, 1).float()
        return F.interpolate(logits, size=(S, S), mode="bilinear", align_corners=False) > 0

    def decode_seg_masks(self, vit: torch.Tensor, frames: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """The "seg" readout's promptable decoder at inference: vit (B, T, G*G, Dv), frames
        (B, T, 3, S, S), prompt (B, d) the projected ``[SEG]`` state -> masks (B, T, S, S) bool
        (frame t > 0 also prompted by frame t-1's predicted mask)."""
        B, T = frames.shape[:2]
        feats = self._memoized(frames, ("seg_features", vit.data_ptr()),
                               lambda: self.seg_decoder.image_features(vit.flatten(0, 1), frames.flatten(0, 1)))
        logits = self.seg_decoder.segment_clip(feats.view(B, T, *feats.shape[1:]), prompt).float()
        S = frames.shape[-1]
        return F.interpolate(logits, size=(S, S), mode="bilinear", align_corners=False) > 0

    def predict(self, sample: Sample, *, method: str = "evtp", keep=0.2, readout: str | None = None,
                position_mode: str = "original", score_source: str = SCORE_DEFAULTS["score_source"],
                score_layer: int = SCORE_DEFAULTS["score_layer"], score_noise: float = SCORE_DEFAULTS["score_noise"],
                generator=None, **options: Any) -> Prediction:
        """Segment one `Sample` (an `IVSModel`). The "noisy" score source's noise is seeded by
        ``generator``'s seed, or without one by the sample id (the same per sample either way)."""
        score_seed = generator.initial_seed() if generator is not None else zlib.crc32(sample.sample_id.encode())
        # any number of frames works: the LM reads the configured frames that exist
        memo = self._memo
        if memo is not None and memo.get("source") is sample.frames:
            frames = memo["frames"]
        else:
            frames = frames_to_tensor(sample.frames, self.cfg.image_size).to(self.pixel_mean.device)
            if memo is not None:
                memo.clear()
                memo.update(source=sample.frames, frames=frames)
        text = [self.tok.encode(sample.instruction)]
        tm: dict[str, float] = {}
        out = self.run(frames, text, method=method, keep=keep, readout=readout, position_mode=position_mode,
                       score_source=score_source, score_layer=score_layer, score_noise=score_noise,
                       score_seed=score_seed, generator=generator, timings=tm, **options)
        masks = out["masks"].squeeze(0).cpu().numpy()
        H, W = sample.frames.shape[1:3]
        if (H, W) != masks.shape[1:]:
            import cv2
            masks = np.stack([cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
                              for m in masks]).astype(bool)
        kept = out["kept"].squeeze(0)
        extra = {"readout": out["readout"], "score_source": score_source,
                 "emitted_seg": bool(out["seg"].all()), "visual": out["visual"].squeeze(0),
                 "positions": out["positions"].cpu().numpy()}
        if "token_logits" in out:
            extra["token_logits"] = out["token_logits"].squeeze(0)[kept >= 0].float().cpu().numpy()
        if "point" in out:  # in the sample's pixels
            extra["point"] = (out["point"].squeeze(0).cpu().numpy() * np.array([W, H]) / self.cfg.image_size)
        kept = kept[kept >= 0]
        extra["kept"] = kept.cpu().numpy()
        N = out["visual"].shape[1]
        return Prediction(masks=masks, tokens_kept=int(kept.numel()), tokens_total=int(N), timings_ms=tm,
                          extra=extra)


def frames_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, T, 3, size, size) float in [0, 1] (resized if needed)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 array, got "
                         f"{getattr(frames, 'shape', type(frames).__name__)}")
    if frames.shape[1:3] != (size, size):
        import cv2
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def _shuffle_valid(idx: torch.Tensor, valid: torch.Tensor, generator) -> torch.Tensor:
    """idx (B, K) long with valid (B, K) bool -> each row's valid entries randomly permuted among
    themselves (the padding stays where it is)."""
    out = idx.clone()
    for b in range(idx.shape[0]):
        where = valid[b].nonzero().squeeze(1)
        perm = torch.randperm(len(where), generator=generator).to(idx.device)
        out[b, where] = idx[b, where[perm]]
    return out


# ----------------------------------------------------------------------------------------------
